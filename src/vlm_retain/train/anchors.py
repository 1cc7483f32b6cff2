"""Weight-anchor regularizers: L2-SP and EWC (distance from the starting weights).

Why: the cheapest retention signal needs no extra data or forward pass: keep the weights near
where the general-purpose model had them. L2-SP (Li et al. 2018) weighs every coordinate
equally; EWC (Kirkpatrick et al. 2017) weighs each by how much the general data's likelihood
depends on it (the diagonal Fisher, :mod:`vlm_retain.train.fisher`). No common VLM framework
ships either (methods.md §3.5).

Both follow the :class:`~vlm_retain.train.objectives.Objective` protocol; ``batch`` and
``outputs`` are ignored. Both must be constructed before the first optimizer step (they
snapshot the weights then). The returned value is the *unweighted* penalty; ``combine`` adds
``weight * value`` (so ``weight`` is the papers' ``alpha/2`` or ``lambda/2``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.train.deltas import WeightAnchor, lora_sq_distance


class L2SP:
    """``sum ||theta - theta0||^2`` over what trains; for LoRA/DoRA over effective deltas.

    Plain LoRA uses an exact r x r identity (no delta is materialized); DoRA materializes one
    layer's delta at a time. Memory: one copy of the trainable parameters (full/selective), or
    of the adapter (LoRA).
    """

    def __init__(self, model: Any, weight: float = 1.0, name: str = "l2sp") -> None:
        self.anchor = WeightAnchor(model)
        self.weight = weight
        self.name = name

    def __call__(self, batch: Mapping[str, Any] | None = None, outputs: Any = None) -> Any:
        terms = []
        for slot in self.anchor.slots:
            if slot.m0 is None:
                terms.append(lora_sq_distance(slot))
            else:
                terms.append(_dora_sq(slot))
        terms.extend((param - start).pow(2).sum() for _, param, start in self.anchor.plain)
        return _total(terms, self.anchor)


class EWC:
    """``sum F * (theta - theta0)^2`` with ``F`` the diagonal Fisher of the base model.

    ``fisher`` maps base parameter names (:func:`~vlm_retain.train.deltas.base_name`) to
    tensors shaped like the weights (from :func:`~vlm_retain.train.fisher.fisher_for`). For
    LoRA/DoRA the delta is the effective weight change of each targeted weight, weighted by the
    Fisher of that base weight. Memory: the Fisher (one tensor per anchored weight) plus the
    anchor of :class:`L2SP`; every targeted LoRA weight's Fisher is needed, i.e. about one copy
    of the targeted base weights.
    """

    def __init__(
        self,
        model: Any,
        fisher: Mapping[str, Any],
        weight: float = 1.0,
        name: str = "ewc",
    ) -> None:
        self.anchor = WeightAnchor(model)
        missing = [n for n in self.anchor.names() if n not in fisher]
        if missing:
            raise InputError(
                f"the Fisher has no entry for {missing[0]} ({len(missing)} missing)",
                hint="estimate it for the same model and tuning spec (fisher_for)",
            )
        self.fisher = dict(fisher)
        self.weight = weight
        self.name = name

    def __call__(self, batch: Mapping[str, Any] | None = None, outputs: Any = None) -> Any:
        terms = []
        for name, delta in self.anchor.deltas():
            f = self.fisher[name]
            if f.shape != delta.shape:
                raise InputError(f"Fisher for {name} has shape {tuple(f.shape)}, not the weight's")
            terms.append((f.to(delta.device, delta.dtype) * delta.pow(2)).sum())
        return _total(terms, self.anchor)


def _dora_sq(slot: Any) -> Any:
    from vlm_retain.train.deltas import lora_delta

    delta = lora_delta(slot)
    if not slot.zero_start:
        delta = delta - lora_delta(slot, start=True).detach()
    return delta.pow(2).sum()


def _total(terms: list[Any], anchor: WeightAnchor) -> Any:
    import torch

    if not terms:
        param = next(iter(anchor.model.parameters()))
        return torch.zeros((), device=param.device)
    return torch.stack([t.float() for t in terms]).sum()
