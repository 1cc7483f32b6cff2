"""OCR metrics on hand-worked cases: every expected number is computed in the comment above it."""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import jiwer
import pytest

from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.ocr import CSV_COLUMNS, METRICS, score_ocr, write_per_line_csv
from vlm_retain.evaluate.metrics.report import MetricReport
from vlm_retain.text.profiles import PROFILES

# Few resamples keep the tests fast; CI behaviour is tested separately with the default count.
FAST = {"resamples": 50}


def test_cyrillic_with_pre_reform_letters_raw_and_peter() -> None:
    # line 1: "мѵро і ѳиміамъ" has 4 + 1 + 1 + 1 + 7 = 14 characters. Against "миро i фимиамъ"
    #   (Latin i): ѵ->и, і->i, ѳ->ф, і->и = 4 edits; all 3 words differ.
    # line 2: "вѣра" -> "вера": ѣ->е, 1 edit of 4 characters, 1 word of 1.
    # line 3: "какъ" -> "как": the final ъ deleted, 1 edit of 4, 1 word of 1.
    references = ["мѵро і ѳиміамъ", "вѣра", "какъ"]
    predictions = ["миро i фимиамъ", "вера", "как"]
    raw = score_ocr(references, predictions, **FAST)
    # micro CER = (4 + 1 + 1) / (14 + 4 + 4) = 6/22 = 3/11
    assert raw.metrics["cer"] == pytest.approx(3 / 11)
    # macro CER = (4/14 + 1/4 + 1/4) / 3 = (8/28 + 7/28 + 7/28) / 3 = 22/84 = 11/42
    assert raw.metrics["cer_macro"] == pytest.approx(11 / 42)
    # WER: (3 + 1 + 1) / (3 + 1 + 1) = 1; macro (1 + 1 + 1)/3 = 1
    assert raw.metrics["wer"] == pytest.approx(1.0)
    assert raw.metrics["wer_macro"] == pytest.approx(1.0)
    assert raw.metrics["line_accuracy"] == 0.0
    assert raw.n == 3 and raw.task == "ocr"
    # peter maps Cyrillic і to Latin i on both sides: line 1 keeps ѵ->и, ѳ->ф, i->и = 3 edits and
    # 2 wrong words (the lone "i" now matches). micro CER = (3+1+1)/22 = 5/22, WER = (2+1+1)/5.
    peter = score_ocr(references, predictions, profile="peter", **FAST)
    assert peter.metrics["cer"] == pytest.approx(5 / 22)
    assert peter.metrics["wer"] == pytest.approx(4 / 5)
    assert peter.per_item[0]["reference"] == "мѵро i ѳимiамъ"
    assert peter.conventions["profile"] == "peter"


def test_arabic_insertion_and_exact_line() -> None:
    # "كتب الولد" = 3 letters + space + 5 letters = 9 characters; "كتاب" inserts one alef: 1 edit,
    # 1 of 2 words wrong. "قال نعم" (7 characters, 2 words) is predicted exactly.
    report = score_ocr(["كتب الولد", "قال نعم"], ["كتاب الولد", "قال نعم"], **FAST)
    assert report.metrics["cer"] == pytest.approx(1 / 16)  # 1 / (9 + 7)
    assert report.metrics["cer_macro"] == pytest.approx(1 / 18)  # (1/9 + 0) / 2
    assert report.metrics["wer"] == pytest.approx(1 / 4)  # 1 / (2 + 2)
    assert report.metrics["line_accuracy"] == pytest.approx(1 / 2)
    assert report.analysis["insertions"] == [{"char": "ا", "count": 1}]
    assert report.analysis["substitutions"] == [] and report.analysis["deletions"] == []


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_decomposed_accents_score_zero_with_every_profile(profile: str) -> None:
    # Same text, composed vs decomposed: é, è, ё, й, Arabic alef with hamza above (U+0623), ї.
    composed = ["Café crème", "ёлка и йод", "أحمد", "ї"]
    decomposed = [unicodedata.normalize("NFD", text) for text in composed]
    assert decomposed != composed
    report = score_ocr(composed, decomposed, profile=profile, **FAST)
    assert report.metrics == {name: (1.0 if name == "line_accuracy" else 0.0) for name in METRICS}
    assert report.analysis["totals"]["char_edits"] == 0


def test_empty_hypotheses_are_all_deletions() -> None:
    # "abc" (3 chars, 1 word) and "de f" (4 chars, 2 words) predicted as nothing: 7 deletions.
    report = score_ocr(["abc", "de f"], ["", ""], **FAST)
    assert report.metrics["cer"] == pytest.approx(1.0)  # 7 / 7
    assert report.metrics["cer_macro"] == pytest.approx(1.0)  # (3/3 + 4/4) / 2
    assert report.metrics["wer"] == pytest.approx(1.0)  # 3 / 3
    assert [row["cer"] for row in report.per_item] == [1.0, 1.0]
    # every character deleted once; ties ordered by character, so the space comes first
    assert report.analysis["deletions"] == [{"char": c, "count": 1} for c in " abcdef"]
    assert report.analysis["totals"]["char_deletions"] == 7
    assert report.analysis["totals"]["empty_predictions"] == 2
    assert report.warnings == []


def test_empty_references_follow_the_documented_rule() -> None:
    # per-line CER: "" vs "" -> 0; "" vs "xyz" -> 1.0 (not 3); "ab" vs "ab" -> 0
    report = score_ocr(["", "", "ab"], ["", "xyz", "ab"], **FAST)
    assert [row["cer"] for row in report.per_item] == [0.0, 1.0, 0.0]
    # micro: the 3 inserted characters still count: (0 + 3 + 0) / (0 + 0 + 2) = 1.5
    assert report.metrics["cer"] == pytest.approx(1.5)
    assert report.metrics["cer_macro"] == pytest.approx(1 / 3)  # (0 + 1 + 0) / 3
    # words: "xyz" is 1 inserted word; micro 1 / 1 reference word, macro (0 + 1 + 0) / 3
    assert report.metrics["wer"] == pytest.approx(1.0)
    assert report.metrics["wer_macro"] == pytest.approx(1 / 3)
    assert report.metrics["line_accuracy"] == pytest.approx(2 / 3)
    assert report.warnings and "2 of 3 references are empty" in report.warnings[0]
    # a corpus without any reference character follows the same rule at corpus level
    blank = score_ocr(["", ""], ["", "x"], **FAST)
    assert blank.metrics["cer"] == 1.0  # 1 edit, 0 reference characters
    assert blank.metrics["cer_macro"] == pytest.approx(0.5)  # (0 + 1) / 2
    assert score_ocr([" "], ["\t"], **FAST).metrics["cer"] == 0.0  # both empty after strip


def test_micro_and_macro_differ_when_line_lengths_differ() -> None:
    # 1 error on a 1-character line, none on a 10-character line:
    # micro = 1 / (1 + 10) = 1/11 ~ 0.091; macro = (1/1 + 0/10) / 2 = 0.5
    report = score_ocr(["a", "abcdefghij"], ["b", "abcdefghij"], **FAST)
    assert report.metrics["cer"] == pytest.approx(1 / 11)
    assert report.metrics["cer_macro"] == pytest.approx(0.5)
    assert report.conventions["primary"].startswith("cer")


@pytest.mark.parametrize(
    ("profile", "cer", "accuracy"),
    [
        # raw: H->h, deleted ",", c->d: 3 edits / (5 + 4 + 3) characters, no exact line
        ("raw", 3 / 12, 0.0),
        # casefold: "hello" now matches: 2 / 12, 1 of 3 lines exact
        ("casefold", 2 / 12, 1 / 3),
        # nopunct: reference "a b" (3 chars) now matches: H->h, c->d = 2 / (5 + 3 + 3)
        ("nopunct", 2 / 11, 1 / 3),
        # peter: Latin c -> Cyrillic с on both sides changes nothing here: as raw
        ("peter", 3 / 12, 0.0),
    ],
)
def test_line_accuracy_and_cer_per_profile(profile: str, cer: float, accuracy: float) -> None:
    report = score_ocr(["Hello", "a, b", "abc"], ["hello", "a b", "abd"], profile=profile, **FAST)
    assert report.metrics["cer"] == pytest.approx(cer)
    assert report.metrics["line_accuracy"] == pytest.approx(accuracy)
    assert report.conventions["normalization"].startswith(PROFILES[profile])


def test_peter_profile_forgives_the_organisers_letter_variants() -> None:
    # raw: c->с and і->i in "cамъ і" (6 chars), ҍ->ѣ in "мҍсто" (5 chars): 3 / 11
    references, predictions = ["cамъ \u0456", "мҍсто"], ["самъ i", "мѣсто"]
    assert score_ocr(references, predictions, **FAST).metrics["cer"] == pytest.approx(3 / 11)
    peter = score_ocr(references, predictions, profile="peter", **FAST)
    assert peter.metrics["cer"] == 0.0
    assert peter.metrics["line_accuracy"] == 1.0


def test_breakdown_by_group() -> None:
    # "ab"->"ab" (0/2), "abcd"->"abcf" (1/4), "xy"->"" (2/2)
    report = score_ocr(
        ["ab", "abcd", "xy"],
        ["ab", "abcf", ""],
        groups={"lang": ["en", "en", "ru"], "meta.decade_id": ["1700", None, "1700"]},
        **FAST,
    )
    en = report.breakdown["lang"]["en"]
    assert en["n"] == 2
    assert en["metrics"]["cer"] == pytest.approx(1 / 6)  # (0 + 1) / (2 + 4)
    assert en["metrics"]["cer_macro"] == pytest.approx(1 / 8)  # (0 + 1/4) / 2
    assert en["metrics"]["wer"] == pytest.approx(1 / 2)  # (0 + 1) / (1 + 1)
    assert en["metrics"]["line_accuracy"] == pytest.approx(1 / 2)
    assert report.breakdown["lang"]["ru"] == {
        "n": 1,
        "metrics": {name: (0.0 if name == "line_accuracy" else 1.0) for name in METRICS},
    }
    decades = report.breakdown["meta.decade_id"]
    assert list(decades) == ["(missing)", "1700"]
    assert decades["1700"]["metrics"]["cer"] == pytest.approx(1 / 2)  # (0 + 2) / (2 + 2)
    assert decades["(missing)"]["metrics"]["cer"] == pytest.approx(1 / 4)


def test_error_analysis_counts_on_a_worked_case() -> None:
    # кот->кит, рот->рит: о->и twice; дом->дома: а inserted; сон->со: н deleted
    report = score_ocr(["кот", "рот", "дом", "сон"], ["кит", "рит", "дома", "со"], **FAST)
    analysis = report.analysis
    assert analysis["substitutions"] == [{"edit": "о->и", "ref": "о", "hyp": "и", "count": 2}]
    assert analysis["insertions"] == [{"char": "а", "count": 1}]
    assert analysis["deletions"] == [{"char": "н", "count": 1}]
    assert analysis["totals"] == {
        "lines": 4,
        "reference_chars": 12,
        "reference_words": 4,
        "char_edits": 4,
        "word_edits": 4,
        "char_substitutions": 2,
        "char_insertions": 1,
        "char_deletions": 1,
        "exact_lines": 0,
        "empty_references": 0,
        "empty_predictions": 0,
    }


def test_error_analysis_top_n_breaks_ties_by_character_and_uses_normalized_text() -> None:
    # a->x and d->y once each: with top 1 the tie goes to the smaller pair ("a", "x")
    report = score_ocr(["ab", "cd"], ["xb", "cy"], top_errors=1, **FAST)
    assert [row["edit"] for row in report.analysis["substitutions"]] == ["a->x"]
    # "Hello" vs "hello": H->h under raw, nothing under casefold
    raw = score_ocr(["Hello"], ["hello"], **FAST).analysis["substitutions"]
    assert raw == [{"edit": "H->h", "ref": "H", "hyp": "h", "count": 1}]
    assert (
        score_ocr(["Hello"], ["hello"], profile="casefold", **FAST).analysis["substitutions"] == []
    )


def _synthetic(n: int) -> tuple[list[str], list[str]]:
    """Deterministic lines of varying length; every third prediction has one or two errors."""
    references = [f"строка номер {k} " + "ѣ" * (k % 7) for k in range(n)]
    predictions = [
        ref.replace("о", "а", 1 + k % 2) if k % 3 == 0 else ref for k, ref in enumerate(references)
    ]
    return references, predictions


def test_ci_contains_the_point_estimate_and_is_seeded() -> None:
    references, predictions = _synthetic(300)
    report = score_ocr(references, predictions)
    assert set(report.ci95) == set(METRICS)
    for name in METRICS:
        low, high = report.ci95[name]
        assert low <= report.metrics[name] <= high, name
        assert low < high, name  # errors on a third of the lines: a real spread
    again = score_ocr(references, predictions)
    assert again.ci95 == report.ci95
    other = score_ocr(references, predictions, seed=1)
    assert other.ci95 != report.ci95
    assert other.metrics == report.metrics  # the seed only moves the CI
    assert "1000 resamples, seed 0" in report.conventions["ci95"]


def test_per_item_rows() -> None:
    report = score_ocr(["  a  b ", "c"], ["a b", "d"], **FAST)
    assert report.per_item[0] == {
        "id": "1",
        "reference": "a b",
        "prediction": "a b",
        "char_edits": 0,
        "reference_chars": 3,
        "cer": 0.0,
        "word_edits": 0,
        "reference_words": 2,
        "wer": 0.0,
        "exact": True,
    }
    assert [row["id"] for row in report.per_item] == ["1", "2"]
    assert score_ocr(["a"], ["a"], ids=["x7"], **FAST).per_item[0]["id"] == "x7"


def test_per_line_csv(tmp_path: Path) -> None:
    # 'a, "b"' is 6 characters; 'a "b"' deletes the comma: 1/6; words ["a,", '"b"'] vs
    # ["a", '"b"']: 1/2. "ѣ" vs "": 1/1 and 1/1.
    report = score_ocr(['a, "b"', "ѣ"], ['a "b"', ""], ids=["x1", "x2"], **FAST)
    path = tmp_path / "out" / "lines.csv"
    write_per_line_csv(report, path)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    text = path.read_text(encoding="utf-8")
    assert '"a, ""b"""' in text  # csv quoting of a field with a comma and quotes
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        list(CSV_COLUMNS),
        ["x1", 'a, "b"', 'a "b"', "1", "6", "0.166667", "1", "2", "0.500000", "0"],
        ["x2", "ѣ", "", "1", "1", "1.000000", "1", "1", "1.000000", "0"],
    ]
    with pytest.raises(ValueError, match="OCR"):
        write_per_line_csv(MetricReport(task="vqa", n=0, metrics={}), tmp_path / "x.csv")


def test_agrees_with_jiwer_on_the_raw_profile() -> None:
    # Lines without whitespace runs or outer spaces (jiwer's CER does not collapse inner runs).
    references = ["the quick brown fox", "петръ первый", "كتب الولد", "a b c d", "ѣѣ"]
    predictions = ["the quack brown fx", "петр первой", "كتاب الولد", "a c d e", ""]
    report = score_ocr(references, predictions, **FAST)
    assert report.metrics["cer"] == pytest.approx(jiwer.cer(references, predictions))
    assert report.metrics["wer"] == pytest.approx(jiwer.wer(references, predictions))
    for row, ref, hyp in zip(report.per_item, references, predictions, strict=True):
        assert row["cer"] == pytest.approx(jiwer.cer(ref, hyp))
        assert row["wer"] == pytest.approx(jiwer.wer(ref, hyp))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        score_ocr(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="1 ids for 2 lines"):
        score_ocr(["a", "b"], ["a", "b"], ids=["x"])
    with pytest.raises(ValueError, match=r"groups\['lang'\] has 1 values"):
        score_ocr(["a", "b"], ["a", "b"], groups={"lang": ["en"]})
    with pytest.raises(ValueError, match="no lines"):
        score_ocr([], [])
    with pytest.raises(InputError, match="raw, casefold, nopunct, peter"):
        score_ocr(["a"], ["a"], profile="lowercase")
    with pytest.raises(TypeError, match=r"predictions\[1\] is NoneType"):
        score_ocr(["a", "b"], ["a", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one string"):
        score_ocr("ab", "ab")
