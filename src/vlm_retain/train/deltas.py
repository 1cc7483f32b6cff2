"""How far the trained weights are from where they started, for plain and PEFT models alike.

Why a module of its own: L2-SP and EWC both penalize the *effective* change of each weight
matrix, and "effective" differs per tuning mode. Full or selective tuning changes parameters
directly (delta = theta - theta0). LoRA changes ``W`` by ``scaling * B @ A``; DoRA additionally
rescales each output row by ``m / ||W + scaling * B @ A||``. Penalizing ``A`` and ``B``
themselves would be wrong (the product is what the model computes with, and ``A`` starts
random), so :class:`WeightAnchor` yields the effective delta of each weight, one layer at a
time, so no more than one layer's ``out x in`` delta exists at once.

Names: every delta is reported under the *base* parameter name (``base_name``), i.e. the name
the parameter has in the bare transformers model. Fisher information is stored under the same
names, so a Fisher estimated once serves full, selective and LoRA runs alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_LORA_PARAM = re.compile(r"\.(lora_A|lora_B|lora_magnitude_vector|lora_embedding_[AB])\.")


def base_name(name: str) -> str:
    """The bare-model name of a (possibly PEFT-wrapped) parameter name.

    ``base_model.model.X.q_proj.base_layer.weight`` -> ``X.q_proj.weight``;
    ``base_model.model.X.merger.modules_to_save.default.w`` -> ``X.merger.w``.
    """
    name = name.removeprefix("base_model.model.")
    name = name.replace(".base_layer.", ".")
    name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)
    return name.replace(".original_module.", ".")


def is_lora_param(name: str) -> bool:
    """True for adapter tensors (A, B, DoRA magnitude), which never count as plain weights."""
    return bool(_LORA_PARAM.search(name))


@dataclass
class LoraSlot:
    """One LoRA/DoRA-adapted linear layer and its adapter tensors at the start."""

    module_name: str
    module: Any
    adapter: str
    a0: Any
    b0: Any
    m0: Any | None
    zero_start: bool

    @property
    def weight_name(self) -> str:
        return base_name(self.module_name) + ".weight"


def lora_delta(slot: LoraSlot, *, start: bool = False) -> Any:
    """The effective change of ``slot``'s weight: ``W_eff - W`` (current, or at the start)."""
    module, ad = slot.module, slot.adapter
    a = slot.a0 if start else module.lora_A[ad].weight
    b = slot.b0 if start else module.lora_B[ad].weight
    delta = module.scaling[ad] * (b @ a)
    if slot.m0 is None:
        return delta
    magnitude = slot.m0 if start else module.lora_magnitude_vector[ad].weight
    weight = module.get_base_layer().weight
    combined = weight + delta.to(weight.dtype)
    norm = combined.norm(dim=1, keepdim=True)
    return (magnitude.view(-1, 1) / norm) * combined - weight


def lora_sq_distance(slot: LoraSlot) -> Any:
    """``||scaling * (B A - B0 A0)||_F^2`` for plain LoRA, from r x r products only.

    Uses ``||BA||^2 = sum((B^T B) * (A A^T))`` and ``<BA, B0A0> = sum((B^T B0) * (A A0^T))``,
    so not even one layer's delta is materialized (cheap enough to run every step).
    """
    module, ad = slot.module, slot.adapter
    a, b = module.lora_A[ad].weight, module.lora_B[ad].weight
    scale = module.scaling[ad] ** 2
    value = ((b.T @ b) * (a @ a.T)).sum()
    if not slot.zero_start:
        a0, b0 = slot.a0, slot.b0
        value = value - 2 * ((b.T @ b0) * (a @ a0.T)).sum() + ((b0.T @ b0) * (a0 @ a0.T)).sum()
    return scale * value


def anchored_names(model: Any) -> list[str]:
    """Base names of the weights a :class:`WeightAnchor` of ``model`` would anchor, without
    copying anything: LoRA-targeted weights, then the plain trainable parameters."""
    lora = [
        base_name(name) + ".weight"
        for name, module in model.named_modules()
        if getattr(module, "lora_A", None) is not None
        and hasattr(module, "get_base_layer")
        and any(a in module.lora_A for a in (getattr(module, "active_adapters", None) or []))
    ]
    plain = [
        base_name(n)
        for n, p in model.named_parameters()
        if p.requires_grad and not is_lora_param(n)
    ]
    return lora + plain


class WeightAnchor:
    """A snapshot of the trainable weights at construction, and the deltas from it.

    Construct it before the first optimizer step. Memory: one copy of the plain trainable
    parameters (full/selective tuning: as large as what trains), or of the adapter tensors
    (LoRA/DoRA: small). Frozen base weights are never copied.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.slots: list[LoraSlot] = []
        self.plain: list[tuple[str, Any, Any]] = []
        for module_name, module in model.named_modules():
            slot = _lora_slot(module_name, module)
            if slot is not None:
                self.slots.append(slot)
        for name, param in model.named_parameters():
            if param.requires_grad and not is_lora_param(name):
                self.plain.append((base_name(name), param, param.detach().clone()))

    def names(self) -> list[str]:
        """Base names of every anchored weight (LoRA-targeted weights and plain trainables)."""
        return [s.weight_name for s in self.slots] + [n for n, _, _ in self.plain]

    def deltas(self) -> Iterator[tuple[str, Any]]:
        """``(base_name, delta)`` for each anchored weight, one at a time, with gradients."""
        for slot in self.slots:
            delta = lora_delta(slot)
            if not slot.zero_start:
                delta = delta - lora_delta(slot, start=True).detach()
            yield slot.weight_name, delta
        for name, param, start in self.plain:
            yield name, param - start


def _lora_slot(module_name: str, module: Any) -> LoraSlot | None:
    lora_a = getattr(module, "lora_A", None)
    if lora_a is None or not hasattr(module, "get_base_layer"):
        return None
    active = getattr(module, "active_adapters", None) or list(lora_a.keys())
    adapters = [a for a in active if a in lora_a]
    if not adapters:
        return None
    if len(adapters) > 1:
        raise ValueError(f"{module_name}: more than one active adapter is not supported")
    ad = adapters[0]
    a0 = module.lora_A[ad].weight.detach().clone()
    b0 = module.lora_B[ad].weight.detach().clone()
    use_dora = bool(getattr(module, "use_dora", {}).get(ad, False))
    m0 = module.lora_magnitude_vector[ad].weight.detach().clone() if use_dora else None
    zero_start = bool((b0 == 0).all())
    slot = LoraSlot(module_name, module, ad, a0, b0, m0, zero_start)
    if use_dora and zero_start:
        # DoRA starts at W exactly only if m0 is the row norm of W; otherwise keep the offset.
        slot.zero_start = bool(lora_delta(slot, start=True).abs().max() <= 1e-6)
    return slot
