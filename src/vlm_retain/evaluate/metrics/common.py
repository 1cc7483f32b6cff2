"""What every metric family shares: item ids, group labels and per-group breakdowns.

One implementation for all of them, so OCR, VQA, ANLS, captions and retrieval agree on the
small conventions a reader compares across results files:

* ids default to the 1-based positions "1".."n" when the caller gives none;
* every group field has exactly one value per item; a None value is grouped as
  :data:`MISSING`, never dropped and never the string "None";
* a breakdown lists each field's values in sorted order, each with its ``n`` and its metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: The group value of an item whose field is missing (None), in every breakdown.
MISSING = "(missing)"


def item_ids(
    ids: Sequence[Any] | None, n: int, *, what: str = "items", name: str = "ids"
) -> list[str]:
    """The caller's ids as strings, or "1".."n" (positions counted from 1) when none are given.

    ``what`` names the items in the error ("lines", "images"), ``name`` the ids ("image ids").
    """
    if ids is None:
        return [str(k) for k in range(1, n + 1)]
    if isinstance(ids, str):
        raise ValueError(f"{name} must be a sequence with one id per item, not one string")
    if len(ids) != n:
        raise ValueError(f"{len(ids)} {name} for {n} {what}")
    return [str(item) for item in ids]


def group_labels(
    groups: Mapping[str, Sequence[Any]] | None, n: int, *, what: str = "items"
) -> dict[str, list[str]]:
    """Each group field's per-item labels as strings; None becomes :data:`MISSING`.

    Raises ValueError when a field does not have exactly one value per item (or is one string).
    """
    checked: dict[str, list[str]] = {}
    for field, values in (groups or {}).items():
        if isinstance(values, str) or len(values) != n:
            size = "a string" if isinstance(values, str) else f"{len(values)} values"
            raise ValueError(
                f"groups[{field!r}] has {size} for {n} {what}; give one value per item"
            )
        checked[field] = [MISSING if value is None else str(value) for value in values]
    return checked


def label_indices(labels: Sequence[str]) -> dict[str, np.ndarray]:
    """{label: the indices of its items, ascending}, labels in sorted order; O(n log n)."""
    if len(labels) == 0:
        return {}
    values, inverse = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    inverse = np.ravel(inverse)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(values)))[:-1]
    return {str(value): index for value, index in zip(values, np.split(order, bounds), strict=True)}


def breakdown(
    groups: Mapping[str, Sequence[str]],
    metrics_of: Callable[[np.ndarray], dict[str, Any]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """breakdown[field][value] = {"n": item count, "metrics": metrics_of(item indices)}.

    ``groups`` holds labels already checked by :func:`group_labels`.
    """
    return {
        field: {
            value: {"n": len(index), "metrics": metrics_of(index)}
            for value, index in label_indices(labels).items()
        }
        for field, labels in groups.items()
    }


def mean_breakdown(
    values: np.ndarray, groups: Mapping[str, Sequence[str]], metric: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """A breakdown whose one metric is the mean of the per-item ``values`` in each group."""
    values = np.asarray(values, dtype=np.float64)
    return breakdown(groups, lambda index: {metric: float(values[index].mean())})
