"""Deterministic grouped splits for sources that ship none.

Lines from the same page (or form, or book page) are visually and textually correlated, so a
random line-level split leaks: whole groups go to one split. The assignment depends only on the
sorted group keys and the seed, so re-running an import gives the same split.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from vlm_retain.errors import InputError


def check_fractions(val_frac: float, test_frac: float) -> None:
    """Reject fractions that cannot make a split (``--val-frac``/``--test-frac``)."""
    for name, value in (("--val-frac", val_frac), ("--test-frac", test_frac)):
        if not 0.0 <= value < 1.0:
            raise InputError(f"{name} must be in [0, 1), got {value}")
    if val_frac + test_frac >= 1.0:
        raise InputError("--val-frac plus --test-frac must leave something for train")


def grouped_split(
    groups: Iterable[str], *, seed: int, val_frac: float, test_frac: float
) -> dict[str, str]:
    """Map each distinct group key to ``train``, ``val`` or ``test``.

    Groups are sorted, shuffled with ``seed`` and cut by the fractions (rounded to whole groups;
    a non-zero fraction gets at least one group once there are three or more groups).
    """
    check_fractions(val_frac, test_frac)
    keys = sorted(set(groups))
    random.Random(seed).shuffle(keys)
    n = len(keys)

    def take(frac: float) -> int:
        count = round(frac * n)
        if frac > 0 and count == 0 and n >= 3:
            count = 1
        return count

    n_test, n_val = take(test_frac), take(val_frac)
    assignment: dict[str, str] = {}
    for index, key in enumerate(keys):
        if index < n_test:
            assignment[key] = "test"
        elif index < n_test + n_val:
            assignment[key] = "val"
        else:
            assignment[key] = "train"
    return assignment
