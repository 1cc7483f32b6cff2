"""Training objectives: a tiny protocol, cross-entropy, and ``combine``.

Why a protocol and not one big loss function: each retention term (KL to the base, L2-SP, EWC)
has its own weight, its own cost and its own curve worth watching, so each is an object with a
``name`` and a ``weight`` that returns one unweighted scalar, and :func:`combine` sums
``weight * value`` and reports every part by name. The trainer stays a readable loop::

    outputs = model(**model_inputs(batch))
    loss, parts = combine(objectives, batch, outputs)   # parts: {"ce": .., "kl": .., "total": ..}
    loss.backward()

Batch contract (what the collator provides): the model inputs from
:func:`~vlm_retain.models.encoding.encode` (``input_ids``, ``attention_mask``, ``pixel_values``,
``image_grid_thw``, ``mm_token_type_ids``...), ``labels`` (-100 except answer tokens), and
optionally ``source_ids`` (LongTensor [B]: index into the run's source names, for per-source
loss) and ``replay`` (BoolTensor [B]: the row is replay/general data, for ``KLToBase(on=
"replay")``). A packed batch (:mod:`~vlm_retain.train.packing`) adds ``token_rows`` (each
cell's sample index); ``source_ids`` and ``replay`` stay per sample. :func:`model_inputs`
strips the extras (and ``labels``, so the model does not compute a second full-vocabulary
loss) before the forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from vlm_retain.errors import InputError
from vlm_retain.train.anchors import EWC, L2SP
from vlm_retain.train.kl import KLToBase

#: Batch keys that are ours, not the model's.
EXTRA_KEYS = ("labels", "source_ids", "replay", "ids", "num_items_in_batch", "token_rows")

__all__ = [
    "EWC",
    "EXTRA_KEYS",
    "L2SP",
    "CrossEntropy",
    "KLToBase",
    "Objective",
    "combine",
    "model_inputs",
]


@runtime_checkable
class Objective(Protocol):
    """One term of the loss. ``__call__`` returns an unweighted scalar tensor; ``combine``
    multiplies by ``weight``. An optional ``extra`` dict (name -> float) set by the last call
    is logged as ``"<name>/<key>"`` (e.g. per-source losses)."""

    name: str
    weight: float

    def __call__(self, batch: Mapping[str, Any], outputs: Any) -> Any: ...


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``batch`` the model's forward takes (everything but :data:`EXTRA_KEYS`)."""
    return {k: v for k, v in batch.items() if k not in EXTRA_KEYS}


@dataclass
class CrossEntropy:
    """Mean cross-entropy over supervised next tokens (``labels != -100``), computed from
    ``outputs.logits`` on the supervised positions only (float32 there, not on all ``B x T``).

    With ``batch["source_ids"]``, ``extra`` gets the mean loss per source (named by
    ``source_names[id]``, else ``"source<id>"``) for logging; the returned value is unchanged.
    """

    weight: float = 1.0
    name: str = "ce"
    source_names: Sequence[str] | None = None
    extra: dict[str, float] = field(default_factory=dict)
    #: how many tokens each ``extra`` mean is over (chunks of a batch are merged by them)
    extra_counts: dict[str, float] = field(default_factory=dict)

    def __call__(self, batch: Mapping[str, Any], outputs: Any) -> Any:
        import torch.nn.functional as F

        from vlm_retain.train.packing import sample_of_cells
        from vlm_retain.train.positions import logits_at

        logits = outputs.logits
        mask = self.logit_positions(batch).to(logits.device)
        self.extra, self.extra_counts = {}, {}
        if not mask.any():
            return logits.sum().float() * 0.0
        targets = batch["labels"].to(logits.device)[:, 1:][mask[:, :-1]]
        token_loss = F.cross_entropy(logits_at(outputs, mask).float(), targets, reduction="none")
        if "source_ids" in batch:
            rows = sample_of_cells(batch, mask)
            sources = batch["source_ids"].to(logits.device)[rows.to(logits.device)]
            for sid in sources.unique().tolist():
                of_source = sources == sid
                name = self._source_name(int(sid))
                self.extra[name] = float(token_loss[of_source].detach().mean())
                self.extra_counts[name] = float(of_source.sum())
        return token_loss.mean()

    def normaliser(self, batch: Mapping[str, Any]) -> int:
        """What the mean divides by: the supervised next tokens (a chunk's share of the
        batch's loss is its share of them, :mod:`~vlm_retain.train.chunks`)."""
        return int(self.logit_positions(batch).sum())

    def logit_positions(self, batch: Mapping[str, Any]) -> Any:
        """The logits this objective reads: the supervised next tokens."""
        from vlm_retain.train.positions import next_token_positions

        return next_token_positions(batch, "supervised")

    def _source_name(self, sid: int) -> str:
        if self.source_names is not None and 0 <= sid < len(self.source_names):
            return str(self.source_names[sid])
        return f"source{sid}"


def combine(
    objectives: Iterable[Objective],
    batch: Mapping[str, Any],
    outputs: Any,
    scale: Mapping[str, float] | None = None,
) -> tuple[Any, dict[str, float]]:
    """``(total, parts)``: ``total = sum(weight * value)`` over objectives with a non-zero
    weight; ``parts`` maps each name to its unweighted value, ``"<name>/<key>"`` to its
    ``extra`` entries, and ``"total"`` to the total (floats, for logging).

    ``scale`` (a chunk of a micro-batch, :mod:`~vlm_retain.train.chunks`): each term is also
    multiplied by ``scale[name]``, and an objective scaled by 0 is not computed at all (nor
    in ``parts``); the total then stays attached to the graph even when every term is skipped.
    """
    total = None
    parts: dict[str, float] = {}
    seen: set[str] = set()
    for objective in objectives:
        if objective.weight == 0:
            continue
        if objective.name in seen:
            raise InputError(f"two objectives are called {objective.name!r}")
        seen.add(objective.name)
        factor = 1.0 if scale is None else scale[objective.name]
        if factor == 0:
            continue
        value = objective(batch, outputs)
        term = objective.weight * factor * value
        total = term if total is None else total + term
        parts[objective.name] = float(value.detach())
        for key, extra in (getattr(objective, "extra", None) or {}).items():
            parts[f"{objective.name}/{key}"] = float(extra)
    if not seen:
        raise InputError("no objective with a non-zero weight", hint="set ce weight > 0")
    if total is None:  # a chunk nothing reads (e.g. no answer tokens): zero, on the graph
        total = outputs.logits.sum().float() * 0.0
    parts["total"] = float(total.detach())
    return total, parts
