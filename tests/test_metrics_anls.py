"""ANLS: hand-worked similarities, the 0.5 threshold, best over answers, the report."""

from __future__ import annotations

import pytest

from vlm_retain.evaluate.metrics.anls import anls_item, normalized_distance, score_anls


def test_exact_match_after_case_and_whitespace_normalization() -> None:
    assert anls_item("  Hello   WORLD ", ["hello world"]) == 1.0


def test_one_typo() -> None:
    # "hallo" vs "hello": 1 substitution over max length 5 -> 1 - 1/5 = 0.8.
    assert anls_item("hallo", ["hello"]) == pytest.approx(0.8)


def test_length_is_the_longer_string() -> None:
    # "abc" vs "abcd": 1 insertion over max(3, 4) = 4 -> 0.75, either way round.
    assert anls_item("abc", ["abcd"]) == pytest.approx(0.75)
    assert anls_item("abcd", ["abc"]) == pytest.approx(0.75)


def test_length_is_that_of_the_raw_strings_as_in_the_reference_scripts() -> None:
    # VLMEvalKit anls_compute / the DocVQA script / lmms-eval: the distance is between the
    # normalized strings, the length max(len(gt.upper()), len(pred.upper())) of the RAW ones.
    # "  abc  " vs "abd": normalized "abc" vs "abd" is 1 edit; raw lengths 7 and 3 -> 1 - 1/7.
    assert anls_item("  abc  ", ["abd"]) == pytest.approx(1 - 1 / 7)
    assert anls_item("abd", ["  abc  "]) == pytest.approx(1 - 1 / 7)
    # "ab" vs "ac ": 1 edit; raw lengths 2 and 3 -> 1 - 1/3 (normalized lengths would give 0.5).
    assert anls_item("ab", ["ac "]) == pytest.approx(1 - 1 / 3)
    assert anls_item("ac ", ["ab"]) == pytest.approx(1 - 1 / 3)
    # The length is len(text.upper()): "ßa" upper-cases to "SSA" (3), so 1 edit / 3.
    assert anls_item("ßa", ["sa"]) == pytest.approx(1 - 1 / 3)
    assert normalized_distance("  abc  ", "abd") == pytest.approx(1 / 7)


def test_below_threshold_scores_zero() -> None:
    # "abcde" vs "abxyz": 3 edits / 5 = 0.6 > 0.5 -> 0.
    assert anls_item("abcde", ["abxyz"]) == 0.0
    assert anls_item("cat", ["dog"]) == 0.0  # 3/3 = 1.0 -> 0


def test_exact_threshold_is_kept_as_in_the_docvqa_script() -> None:
    # "abcd" vs "abxy": 2 / 4 = 0.5 exactly; the scripts zero only a similarity below 0.5.
    assert anls_item("abcd", ["abxy"]) == 0.5


def test_threshold_parameter_bounds_the_distance() -> None:
    # NL("hallo", "hello") = 0.2: kept at threshold 0.2, zeroed at 0.1.
    assert anls_item("hallo", ["hello"], threshold=0.2) == pytest.approx(0.8)
    assert anls_item("hallo", ["hello"], threshold=0.1) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        anls_item("a", ["a"], threshold=0.0)


def test_best_over_several_answers() -> None:
    # "2000": 4 substitutions / 4 -> 1.0 -> 0; "1990": 1/4 -> 0.75;
    # "1999 ad": 3 insertions / 7 -> 4/7 = 0.571. Best: 0.75.
    assert anls_item("1999", ["2000", "1990", "1999 ad"]) == pytest.approx(0.75)


def test_empty_prediction() -> None:
    # Empty vs "yes": 3 edits / 3 = 1.0 -> 0. Empty vs empty: identical -> 1.
    assert anls_item("", ["yes"]) == 0.0
    assert anls_item("   ", [""]) == 1.0


def test_no_answers_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reference answers"):
        anls_item("x", [])


def test_score_anls_report() -> None:
    report = score_anls(
        ["hallo", "1999", "cat"],
        [["hello"], ["2000", "1990"], ["xxxxxx", "cow"]],
        ids=["d1", "d2", "d3"],
        groups={"source": ["a", "a", "b"]},
    )
    # Items: 0.8, 0.75 and 0 ("cat" vs "xxxxxx": 6/6, vs "cow": 2/3 > 0.5) -> mean 1.55 / 3.
    assert report.task == "anls"
    assert report.n == 3
    assert report.metrics["anls"] == pytest.approx(1.55 / 3)
    # Group a: (0.8 + 0.75) / 2 = 0.775; group b: 0.
    assert report.breakdown["source"]["a"] == {"n": 2, "metrics": {"anls": pytest.approx(0.775)}}
    assert report.breakdown["source"]["b"] == {"n": 1, "metrics": {"anls": 0.0}}
    # The nearest answer ("cow", NL 2/3 < 6/6) is named even when the item scores 0.
    assert report.per_item[2]["best_answer"] == "cow"
    assert report.per_item[1] == {
        "id": "d2",
        "prediction": "1999",
        "best_answer": "1990",
        "anls": pytest.approx(0.75),
    }
    assert "NL > 0.5" in report.conventions["threshold"]


def test_score_anls_item_without_answers_names_the_id() -> None:
    with pytest.raises(ValueError, match="'d2' has no reference answers"):
        score_anls(["a", "b"], [["a"], []], ids=["d1", "d2"])


def test_score_anls_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 answer lists"):
        score_anls(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"groups\['lang'\] has 1 values for 2 items"):
        score_anls(["a", "b"], [["a"], ["b"]], groups={"lang": ["en"]})


def test_score_anls_ci_is_deterministic_and_contains_the_estimate() -> None:
    # 12 items: four each of 1.0, 0.8 ("hallo"/"hello") and 0 -> mean 7.2 / 12 = 0.6.
    predictions = ["hello", "hallo", "cat"] * 4
    answers = [["hello"], ["hello"], ["dog"]] * 4
    first = score_anls(predictions, answers, resamples=500, seed=1)
    again = score_anls(predictions, answers, resamples=500, seed=1)
    assert first.metrics["anls"] == pytest.approx(0.6)
    low, high = first.ci95["anls"]
    assert first.ci95 == again.ci95
    assert 0.0 <= low < 0.6 < high <= 1.0


def test_score_anls_default_ids_and_missing_group_values() -> None:
    # Without ids, items are numbered from 1 as in every metric family; a None group value is
    # grouped as "(missing)", not as "None".
    report = score_anls(["a", "b", "c"], [["a"], ["x"], ["c"]], groups={"lang": ["en", None, "en"]})
    assert [row["id"] for row in report.per_item] == ["1", "2", "3"]
    assert report.breakdown["lang"] == {
        "(missing)": {"n": 1, "metrics": {"anls": 0.0}},
        "en": {"n": 2, "metrics": {"anls": 1.0}},
    }
    assert "(missing)" in report.conventions["breakdown"]
    assert "1 - 1/7" in report.conventions["normalization"]
