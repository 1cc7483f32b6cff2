"""VQAv2 accuracy: each official normalization rule, the leave-one-out score, the report."""

from __future__ import annotations

import pytest

from vlm_retain.evaluate.metrics.vqa import (
    CONTRACTIONS,
    normalize_answer,
    score_vqa,
    vqa_accuracy,
)

# --- normalization, one rule per case ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # \n and \t become spaces, ends stripped, runs of spaces collapsed by split/join.
        ("yes\nno", "yes no"),
        ("\tyes  ", "yes"),
        # A symbol not next to a space is replaced by a space...
        ("e-mail", "e mail"),
        ("yes/no", "yes no"),
        # ...but deleted everywhere when the answer has that symbol next to a space.
        ("e-mail - yes", "email yes"),
        # Digit-comma-digit anywhere deletes (not spaces) the comma between the digits...
        ("100,978", "100978"),
        # ...and switches every other symbol to deletion too ("x-ray" -> "xray", not "x ray").
        ("1,000 x-ray", "1000 xray"),
        ("1000 x-ray", "1000 x ray"),
        # Apostrophe and colon are not punctuation here.
        ("10:30", "10:30"),
        ("don't", "don't"),
        # Periods: removed unless followed by a digit, so decimals survive.
        ("Yes.", "yes"),
        ("3.5", "3.5"),
        ("3.5.", "3.5"),
        ("u.s.a.", "usa"),
        (".5", ".5"),
        # Lowercase; number words none/zero..ten to digits, and nothing beyond ten.
        ("Two", "2"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),
        # Articles a/an/the dropped (after lowercasing); an answer of only an article is empty.
        ("The Cat", "cat"),
        ("a dog and an apple", "dog and apple"),
        ("an", ""),
        # Contractions: apostrophe-less forms gain their apostrophe.
        ("dont", "don't"),
        ("Whats up?!", "what's up"),
        ("oclock", "o'clock"),
        # Quirk: "Im" is a capitalized key, and tokens are lowercased first, so it never matches.
        ("Im", "im"),
        # Quirk: this official entry maps the apostrophe form to the bare one.
        ("somebody'd", "somebodyd"),
    ],
)
def test_normalize_answer_rules(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_period_removal_stops_after_32_as_in_the_official_call() -> None:
    # The official sub() gets re.UNICODE (32) as its count: 33 trailing periods leave one.
    assert normalize_answer("no" + "." * 33) == "no."
    assert normalize_answer("no" + "." * 32) == "no"


def test_contractions_table_is_the_official_one() -> None:
    # 120 entries, capitalized keys included, as in vqaEval.py (ASCII-apostrophe version).
    assert len(CONTRACTIONS) == 120
    assert {"Id've", "I'dve", "Im", "Ive"} <= set(CONTRACTIONS)


# Key -> value pairs written out from the official vqaEval.py contractions dict (GT-Vision-Lab/VQA,
# PythonEvaluationTools/vqaEvaluation/vqaEval.py, the Python 3 version with ASCII apostrophes),
# chosen to cover plain entries, double contractions, the capitalized keys, keys that map to
# themselves, the "'ow's'at" family and the one entry that maps TO the apostrophe-less form.
OFFICIAL_CONTRACTIONS = [
    ("aint", "ain't"),
    ("dont", "don't"),
    ("oclock", "o'clock"),
    ("twas", "'twas"),
    ("couldnt've", "couldn't've"),
    ("hadn'tve", "hadn't've"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("let's", "let's"),
    ("she's", "she's"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("whats", "what's"),
    ("youve", "you've"),
]


@pytest.mark.parametrize(("key", "official"), OFFICIAL_CONTRACTIONS)
def test_contractions_map_each_key_to_the_official_value(key: str, official: str) -> None:
    assert CONTRACTIONS[key] == official


# --- the score ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # (k*min(1,(k-1)/3) + (10-k)*min(1,k/3)) / 10
        (0, 0.0),  # nothing matches
        (1, 0.3),  # (1*0 + 9*(1/3)) / 10
        (2, 0.6),  # (2*(1/3) + 8*(2/3)) / 10 = (2/3 + 16/3) / 10
        (3, 0.9),  # (3*(2/3) + 7*1) / 10
        (4, 1.0),  # (4*1 + 6*1) / 10
        (10, 1.0),
    ],
)
def test_closed_form_over_ten_answers(k: int, expected: float) -> None:
    answers = ["yes"] * k + ["no"] * (10 - k)
    assert vqa_accuracy("yes", answers) == pytest.approx(expected)


def test_raw_prediction_is_normalized_against_unanimous_answers() -> None:
    # The official script would not normalize here and score 0; we always normalize.
    assert vqa_accuracy("Yes.", ["yes"] * 10) == 1.0


def test_leave_one_out_is_by_index_and_keeps_duplicates() -> None:
    # Three "yes": leaving one "yes" out still leaves two -> 2/3; leaving a "no" out leaves three
    # -> 1. (3*(2/3) + 7*1) / 10 = 0.9. Dropping every equal answer instead would give
    # (3*0 + 7*1) / 10 = 0.7.
    answers = ["yes", "no", "yes", "no", "no", "yes", "no", "no", "no", "no"]
    assert vqa_accuracy("yes", answers) == pytest.approx(0.9)


def test_answers_are_normalized_before_matching() -> None:
    # "Two", "2." and "two" all become "2": k = 3 of 10 -> 0.9.
    answers = ["Two", "2.", "two"] + ["3"] * 7
    assert vqa_accuracy("2", answers) == pytest.approx(0.9)


def test_fewer_answers_use_the_same_formula() -> None:
    # One answer: the others are empty, so even a match scores min(1, 0/3) = 0.
    assert vqa_accuracy("yes", ["yes"]) == 0.0
    # Four matching answers: each left-out one sees three others -> 1.
    assert vqa_accuracy("yes", ["yes"] * 4) == 1.0


def test_no_answers_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reference answers"):
        vqa_accuracy("yes", [])


# --- the report --------------------------------------------------------------------------------


def _ten(answer: str, k: int, other: str = "zzz") -> list[str]:
    """Ten answers of which k are ``answer``."""
    return [answer] * k + [other] * (10 - k)


def test_score_vqa_per_answer_type_breakdown() -> None:
    predictions = ["yes", "no", "2", "red"]
    answers = [_ten("yes", 10), _ten("no", 1), _ten("2", 2), _ten("blue", 10)]
    types = ["yes/no", "yes/no", "number", None]
    report = score_vqa(predictions, answers, ids=["q1", "q2", "q3", "q4"], answer_types=types)
    # Items score 1.0, 0.3, 0.6, 0.0 -> mean 1.9 / 4 = 0.475.
    assert report.task == "vqa"
    assert report.n == 4
    assert report.metrics["accuracy"] == pytest.approx(0.475)
    by_type = report.breakdown["answer_type"]
    # yes/no: (1.0 + 0.3) / 2 = 0.65; number: 0.6; the item without a type is left out.
    assert by_type["yes/no"] == {"n": 2, "metrics": {"accuracy": pytest.approx(0.65)}}
    assert by_type["number"] == {"n": 1, "metrics": {"accuracy": pytest.approx(0.6)}}
    assert set(by_type) == {"yes/no", "number"}
    assert report.warnings == []


def test_score_vqa_groups_and_per_item_rows() -> None:
    report = score_vqa(
        ["Yes.", "two"],
        [_ten("yes", 10), _ten("3", 10)],
        ids=["a", "b"],
        groups={"source": ["coco", "textvqa"]},
    )
    assert report.breakdown["source"]["coco"] == {"n": 1, "metrics": {"accuracy": 1.0}}
    assert report.breakdown["source"]["textvqa"] == {"n": 1, "metrics": {"accuracy": 0.0}}
    assert report.per_item == [
        {"id": "a", "prediction": "Yes.", "normalized_prediction": "yes", "accuracy": 1.0},
        {"id": "b", "prediction": "two", "normalized_prediction": "2", "accuracy": 0.0},
    ]
    assert "answer_type" not in report.breakdown
    assert "reference" in report.conventions and "normalization" in report.conventions


def test_score_vqa_warns_about_items_without_ten_answers() -> None:
    report = score_vqa(
        ["yes", "yes", "yes"],
        [_ten("yes", 10), ["yes"] * 4, ["yes"]],
        ids=["ok", "four", "one"],
    )
    # Scored over what is there: 1.0, 1.0 (four matches) and 0.0 (a lone answer) -> 2/3.
    assert report.metrics["accuracy"] == pytest.approx(2 / 3)
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert "\n" not in warning
    assert warning.startswith("2 of 3 items do not have exactly 10 answers")
    assert "four (4)" in warning and "one (1)" in warning and "ok" not in warning.split("(id")[1]
    assert "items with another count here: 2" in report.conventions["answer_count"]


def test_score_vqa_warning_names_only_the_first_ids() -> None:
    report = score_vqa(["x"] * 7, [["x"]] * 7, ids=[f"q{i}" for i in range(7)])
    assert "q4 (1), and 2 more" in report.warnings[0]
    assert "q5" not in report.warnings[0]


def test_score_vqa_item_without_answers_names_the_id() -> None:
    with pytest.raises(ValueError, match="'q2' has no reference answers"):
        score_vqa(["yes", "no"], [_ten("yes", 10), []], ids=["q1", "q2"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predictions": [], "answers": []}, "no predictions"),
        ({"predictions": ["a"], "answers": []}, "1 predictions but 0 answer lists"),
        ({"predictions": ["a"], "answers": [["a"]], "ids": ["x", "y"]}, "2 ids for 1 items"),
        ({"predictions": ["a"], "answers": [["a"]], "answer_types": []}, "answer_types has 0"),
        (
            {"predictions": ["a"], "answers": [["a"]], "groups": {"lang": []}},
            r"groups\['lang'\] has 0 values for 1 items",
        ),
        (
            {
                "predictions": ["a"],
                "answers": [["a"]],
                "answer_types": ["other"],
                "groups": {"answer_type": ["other"]},
            },
            "both",
        ),
    ],
)
def test_score_vqa_rejects_inconsistent_inputs(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_vqa(**kwargs)


def test_score_vqa_ci_is_deterministic_and_contains_the_estimate() -> None:
    # 20 items scoring 0, 0.3, 0.6, 0.9, 1.0 four times each: mean 2.8 / 5 = 0.56.
    answers = [_ten("yes", k) for k in (0, 1, 2, 3, 4)] * 4
    predictions = ["yes"] * 20
    first = score_vqa(predictions, answers, resamples=500, seed=3)
    again = score_vqa(predictions, answers, resamples=500, seed=3)
    assert first.metrics["accuracy"] == pytest.approx(0.56)
    low, high = first.ci95["accuracy"]
    assert first.ci95 == again.ci95
    assert 0.0 <= low < first.metrics["accuracy"] < high <= 1.0


def test_score_vqa_default_ids_and_missing_group_values() -> None:
    # Without ids, items are numbered from 1 as in every metric family; a None group value is
    # grouped as "(missing)" (not "None"), while an item without an answer type is left out of
    # the answer-type breakdown only.
    report = score_vqa(
        ["yes", "no", "yes"],
        [_ten("yes", 10), _ten("yes", 10), _ten("yes", 10)],
        groups={"source": ["coco", None, None]},
        answer_types=["yes/no", None, "yes/no"],
    )
    assert [row["id"] for row in report.per_item] == ["1", "2", "3"]
    assert report.breakdown["source"] == {
        "(missing)": {"n": 2, "metrics": {"accuracy": 0.5}},
        "coco": {"n": 1, "metrics": {"accuracy": 1.0}},
    }
    assert report.breakdown["answer_type"] == {"yes/no": {"n": 2, "metrics": {"accuracy": 1.0}}}
