"""One micro-batch in chunks: several forward/backward passes that give the batch's own loss.

Why: ``train.batch_size`` says what one loss is averaged over (the batch a recipe is tuned
for); how many rows one forward can hold is a property of the GPU (``train.chunk_rows``,
chosen from free memory by :mod:`~vlm_retain.train.memory_plan`). Splitting must not change
the step, so each chunk's terms are weighted to sum to the unsplit batch's:

- a *mean* objective (cross-entropy over answer tokens, KL over compared positions) has a
  ``normaliser(batch)``, the count its mean divides by; chunk ``c`` is weighted by
  ``n_c / N``, so ``sum_c (n_c / N) * mean_c = mean`` of the whole batch;
- a *per-step* objective (L2-SP, EWC: a function of the weights, not of the data) counts once,
  on the first chunk, and is not computed on the others.

Gradients are then equal to the unsplit batch's up to float rounding (tests compare them), and
accelerate's accumulation counter still advances once per micro-batch (the trainer runs the
chunks inside one ``accelerator.accumulate`` and syncs DDP gradients on the last chunk only).
:class:`ChunkParts` merges what each chunk logs into what the whole batch would have logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def split_rows(items: Sequence[T], rows: int | None) -> list[list[T]]:
    """``items`` in consecutive chunks of at most ``rows`` (``None``: one chunk)."""
    if rows is None or rows >= len(items):
        return [list(items)]
    if rows < 1:
        raise ValueError("rows must be at least 1")
    return [list(items[i : i + rows]) for i in range(0, len(items), rows)]


def chunk_scales(
    objectives: Sequence[Any], chunks: Sequence[Mapping[str, Any]]
) -> list[dict[str, float] | None]:
    """Per chunk, the factor each objective's value gets (see the module docstring).

    A single chunk is the batch itself: ``[None]`` (no factors, nothing counted). An objective
    whose whole batch has nothing to average (``N = 0``) is computed on the first chunk only,
    as the unsplit batch computes it once (and gets 0).
    """
    if len(chunks) == 1:
        return [None]
    first_only = [1.0] + [0.0] * (len(chunks) - 1)
    factors: dict[str, list[float]] = {}
    for objective in objectives:
        if objective.weight == 0:
            continue
        normaliser = getattr(objective, "normaliser", None)
        counts = [normaliser(c) for c in chunks] if normaliser is not None else None
        total = sum(counts) if counts is not None else 0
        factors[objective.name] = [n / total for n in counts] if total else first_only
    return [{name: f[i] for name, f in factors.items()} for i in range(len(chunks))]


class ChunkParts:
    """The logged parts of one micro-batch, merged from its chunks as the unsplit batch
    would have logged them: an objective's value is ``sum_c scale_c * value_c``; an ``extra``
    mean with counts (per-source CE) is the count-weighted mean; any other ``extra`` (a count,
    such as KL's ``positions``) is summed; ``total`` is the sum of the chunks' totals."""

    def __init__(self, objectives: Sequence[Any]) -> None:
        self.objectives = [o for o in objectives if o.weight != 0]
        self._values: dict[str, float] = {}
        self._weighted: dict[str, list[float]] = {}  # key -> [sum of count * mean, count]
        self._summed: dict[str, float] = {}
        self._chunks: list[dict[str, float]] = []

    def add(self, parts: Mapping[str, float], scale: Mapping[str, float] | None) -> None:
        """One chunk's ``parts`` from :func:`~vlm_retain.train.objectives.combine`, right
        after that call (the objectives' ``extra_counts`` are read from them)."""
        self._chunks.append(dict(parts))
        for objective in self.objectives:
            name = objective.name
            if name not in parts:
                continue  # scaled by 0: not computed in this chunk
            factor = 1.0 if scale is None else scale[name]
            self._values[name] = self._values.get(name, 0.0) + factor * parts[name]
            counts = getattr(objective, "extra_counts", None) or {}
            for key in getattr(objective, "extra", None) or {}:
                full = f"{name}/{key}"
                if key in counts:
                    acc = self._weighted.setdefault(full, [0.0, 0.0])
                    acc[0] += counts[key] * parts[full]
                    acc[1] += counts[key]
                else:
                    self._summed[full] = self._summed.get(full, 0.0) + parts[full]
        self._summed["total"] = self._summed.get("total", 0.0) + parts["total"]

    def merged(self) -> dict[str, float]:
        if len(self._chunks) == 1:
            return self._chunks[0]  # the batch's own parts, bit for bit
        out = dict(self._values)
        out.update({k: s / n for k, (s, n) in self._weighted.items() if n})
        out.update(self._summed)
        return out
