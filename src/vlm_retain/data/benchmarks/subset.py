"""Deterministic subsets for ``--limit`` and retrieval galleries.

Items are sorted by id first, so the subset does not depend on file order or on the layout the
benchmark came in; then a seeded shuffle picks the first ``limit``. Subsets are nested: with the
same seed, the 64 items of ``--limit 64`` are among the 128 of ``--limit 128``, so a quick run
and a longer one agree on what they share. The result is sorted by id again, and
:func:`selection_record` is what a runner writes beside its results so the subset can be
reproduced or audited.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from vlm_retain.data.benchmarks.items import EvalItem


def select(items: Sequence[EvalItem], limit: int | None, seed: int = 0) -> list[EvalItem]:
    """At most ``limit`` items (all when ``limit`` is None or not smaller), sorted by id."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    ordered = sorted(items, key=lambda item: item.id)
    if limit is None or limit >= len(ordered):
        return ordered
    order = list(range(len(ordered)))
    random.Random(seed).shuffle(order)
    return [ordered[i] for i in sorted(order[:limit])]


def selection_record(
    chosen: Sequence[EvalItem], *, n_total: int, limit: int | None, seed: int
) -> dict[str, Any]:
    """``{"n_total", "n", "limit", "seed", "ids"}``: what to record so the subset is known."""
    return {
        "n_total": n_total,
        "n": len(chosen),
        "limit": limit,
        "seed": seed,
        "ids": [item.id for item in chosen],
    }
