"""Shared metric helpers: default ids, group labels and breakdowns, the same in every family."""

from __future__ import annotations

import numpy as np
import pytest

from vlm_retain.evaluate.metrics.anls import score_anls
from vlm_retain.evaluate.metrics.common import (
    MISSING,
    breakdown,
    group_labels,
    item_ids,
    label_indices,
    mean_breakdown,
)
from vlm_retain.evaluate.metrics.ocr import score_ocr
from vlm_retain.evaluate.metrics.retrieval import score_retrieval
from vlm_retain.evaluate.metrics.vqa import score_vqa


def test_item_ids_default_to_one_based_positions() -> None:
    assert item_ids(None, 3) == ["1", "2", "3"]
    assert item_ids([7, "b", 9], 3) == ["7", "b", "9"]
    with pytest.raises(ValueError, match="2 ids for 3 lines"):
        item_ids(["a", "b"], 3, what="lines")
    with pytest.raises(ValueError, match="2 image ids for 3 images"):
        item_ids(["a", "b"], 3, what="images", name="image ids")
    with pytest.raises(ValueError, match="not one string"):
        item_ids("abc", 3)


def test_group_labels_turn_none_into_missing() -> None:
    assert MISSING == "(missing)"
    labels = group_labels({"lang": ["en", None, 3]}, 3)
    assert labels == {"lang": ["en", "(missing)", "3"]}
    assert group_labels(None, 3) == {}
    with pytest.raises(ValueError, match=r"groups\['lang'\] has 2 values for 3 items"):
        group_labels({"lang": ["en", "ru"]}, 3)
    with pytest.raises(ValueError, match=r"groups\['lang'\] has a string"):
        group_labels({"lang": "abc"}, 3)


def test_label_indices_and_breakdowns_are_sorted() -> None:
    index = label_indices(["b", "a", "b", "(missing)"])
    assert list(index) == ["(missing)", "a", "b"]
    assert [i.tolist() for i in index.values()] == [[3], [1], [0, 2]]
    assert label_indices([]) == {}
    values = np.array([1.0, 0.0, 0.5, 0.25])
    by_mean = mean_breakdown(values, {"f": ["b", "a", "b", "(missing)"]}, "m")
    assert by_mean == {
        "f": {
            "(missing)": {"n": 1, "metrics": {"m": 0.25}},
            "a": {"n": 1, "metrics": {"m": 0.0}},
            "b": {"n": 2, "metrics": {"m": 0.75}},
        }
    }
    counted = breakdown({"f": ["x", "x"]}, lambda i: {"sum": int(i.sum())})
    assert counted == {"f": {"x": {"n": 2, "metrics": {"sum": 1}}}}


def _default_ids_of(family: str) -> list[str]:
    if family == "ocr":
        report = score_ocr(["a", "b", "c"], ["a", "b", "c"], resamples=10)
    elif family == "vqa":
        report = score_vqa(["a", "b", "c"], [["a"], ["b"], ["c"]], resamples=10)
    elif family == "anls":
        report = score_anls(["a", "b", "c"], [["a"], ["b"], ["c"]], resamples=10)
    else:
        report = score_retrieval(np.eye(3), [0, 1, 2], ks=(1,), resamples=10)
        return [row["id"] for row in report.per_item if row["direction"] == "t2i"]
    return [row["id"] for row in report.per_item]


@pytest.mark.parametrize("family", ["ocr", "vqa", "anls", "retrieval"])
def test_every_family_numbers_items_from_one(family: str) -> None:
    # Captions too (checked in test_metrics_caption.py, which needs Java).
    assert _default_ids_of(family) == ["1", "2", "3"]


@pytest.mark.parametrize("family", ["ocr", "vqa", "anls"])
def test_every_family_groups_none_as_missing(family: str) -> None:
    groups = {"lang": ["en", None, None]}
    if family == "ocr":
        report = score_ocr(["a", "b", "c"], ["a", "b", "c"], groups=groups, resamples=10)
    elif family == "vqa":
        report = score_vqa(["a", "b", "c"], [["a"]] * 3, groups=groups, resamples=10)
    else:
        report = score_anls(["a", "b", "c"], [["a"]] * 3, groups=groups, resamples=10)
    assert list(report.breakdown["lang"]) == ["(missing)", "en"]
    assert report.breakdown["lang"]["(missing)"]["n"] == 2
