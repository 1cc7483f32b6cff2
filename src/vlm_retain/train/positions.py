"""Which logits the training objectives read, and a forward that computes only those.

Why: the LM head turns every position's hidden state into ``V`` logits (152k for Qwen2.5-VL),
yet a line-level sample carries its loss only on the answer (about 48 of 131 tokens in
research/gpu-anchors.md; the image and prompt tokens are never scored). Asking the model for
logits only where an objective reads them (transformers' ``logits_to_keep`` with a boolean
``(B, T)`` mask, which flattens the output to ``(N, V)``) removes most of the head's matmul and
the memory of its output and of that output's gradient. The loss and the gradients are the
same as from full logits: the skipped positions never entered a loss.

Objectives say what they read with an optional ``logit_positions(batch) -> (B, T) bool`` method
(cross-entropy: the supervised next tokens; KL: its selected rows); objectives without it
(L2-SP, EWC) read no logits. They take their rows with :func:`logits_at`, which works on full
``(B, T, V)`` logits and on the kept ``(N, V)`` ones alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.models.unwrap import unwrap

POSITIONS = ("supervised", "all")


def next_token_positions(batch: Mapping[str, Any], positions: str = "supervised") -> Any:
    """``(B, T)`` bool: positions whose next-token distribution an objective reads.

    ``supervised``: logits at ``t`` predict label ``t + 1``, so ``labels[:, 1:] != -100`` shifted
    left; ``all``: every non-pad position (``attention_mask``, or the real cells of a packed
    batch, :mod:`~vlm_retain.train.packing`).
    """
    import torch

    from vlm_retain.train.packing import valid_cells

    if positions == "supervised":
        labels = batch["labels"]
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[:, :-1] = labels[:, 1:] != -100
        return mask
    if positions == "all":
        return valid_cells(batch)
    raise InputError(f"unknown KL positions {positions!r}", hint=f"use {', '.join(POSITIONS)}")


@dataclass
class KeptLogits:
    """A forward's logits computed only at ``positions`` (``(B, T)`` bool): ``logits`` is
    ``(positions.sum(), V)``, rows in row-major order of the True cells."""

    logits: Any
    positions: Any


def logits_at(outputs: Any, mask: Any) -> Any:
    """``(N, V)``: the logits at the True cells of ``mask`` (``(B, T)`` bool), from full logits
    or from :class:`KeptLogits` (``mask`` must lie within the kept positions)."""
    if not isinstance(outputs, KeptLogits):
        return outputs.logits[mask.to(outputs.logits.device)]
    kept = outputs.positions
    mask = mask.to(kept.device)
    if bool((mask & ~kept).any()):
        raise RuntimeError("an objective reads logits at positions the forward did not keep")
    return outputs.logits[mask[kept].to(outputs.logits.device)]


def read_positions(objectives: Iterable[Any], batch: Mapping[str, Any]) -> Any | None:
    """The union of the positions the objectives read; None when none says (keep all)."""
    union = None
    for objective in objectives:
        if getattr(objective, "weight", 1.0) == 0 or not hasattr(objective, "logit_positions"):
            continue
        mask = objective.logit_positions(batch)
        union = mask if union is None else union | mask.to(union.device)
    return union


def forward_kept(
    model: Any, inputs: Mapping[str, Any], objectives: Iterable[Any], batch: Mapping[str, Any]
) -> Any:
    """The model's forward with logits only where ``objectives`` read them (:class:`KeptLogits`),
    or the plain forward when no objective says what it reads."""
    positions = read_positions(list(objectives), batch)
    if positions is None:
        return model(**inputs)
    outputs = model(**inputs, logits_to_keep=positions)
    return KeptLogits(logits=outputs.logits, positions=positions)


def supports_kept_logits(model: Any) -> bool:
    """Whether the model's forward takes a boolean ``(B, T)`` ``logits_to_keep`` (transformers
    models whose head slices through ``slice_logits_to_keep``, v5 and later)."""
    module = sys.modules.get(type(unwrap(model)).__module__)
    return module is not None and hasattr(module, "slice_logits_to_keep")
