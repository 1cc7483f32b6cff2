"""Optimizer parameter groups with per-component learning rates, and a trainable-count summary.

Why per component: OCR of a new script often needs the vision tower to move (Qwen #702,
GOT-OCR #184), but a ViT that moves at the LLM's learning rate forgets fastest; the official
Qwen recipe and ms-swift both give vision and projector their own rates. Components come from
the family registry (:data:`~vlm_retain.models.registry.COMPONENTS`), so PEFT names
(``base_model.model.``..., ``lora_A``, ``modules_to_save``) land in the component they modify.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.models.registry import COMPONENTS, Family, module_groups

#: Keys accepted in ``lrs`` besides the components themselves.
LR_KEYS = (*COMPONENTS, "default")


def component_lr(component: str, lrs: Mapping[str, float]) -> float:
    """The learning rate of ``component``: its own key, else ``default``, else ``llm``.

    Embeddings, lm_head (and the rare ``other``) fall back to ``default`` then ``llm``
    because they belong to the language model; vision and projector fall back the same way,
    so ``{"llm": 1e-4}`` alone means one rate for everything.
    """
    for key in (component, "default", "llm"):
        if key in lrs:
            return float(lrs[key])
    raise InputError("no learning rate given", field="lrs", hint="set default or llm")


def param_groups(
    model: Any,
    family: Family,
    lrs: Mapping[str, float],
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer groups for the trainable parameters of ``model``: one per component, split into
    decayed (matrices) and not decayed (biases, norms, DoRA magnitudes: every 1-D tensor).

    Each group is ``{"params", "lr", "weight_decay", "name", "component"}`` (torch optimizers
    keep the extra keys, which is handy for logging per-group rates). Empty groups are left out.
    """
    unknown = sorted(set(lrs) - set(LR_KEYS))
    if unknown:
        raise InputError(
            f"unknown learning-rate key {unknown[0]!r}", field="lrs", hint=f"use {LR_KEYS}"
        )
    params = dict(model.named_parameters())
    groups: list[dict[str, Any]] = []
    for component, names in module_groups(model, family).items():
        trainable = [params[n] for n in names if params[n].requires_grad]
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        lr = component_lr(component, lrs)
        for suffix, group, wd in (("", decay, weight_decay), ("/no_decay", no_decay, 0.0)):
            if group:
                groups.append(
                    {
                        "params": group,
                        "lr": lr,
                        "weight_decay": wd,
                        "name": component + suffix,
                        "component": component,
                    }
                )
    return groups


def trainable_summary(model: Any, family: Family) -> dict[str, tuple[int, int]]:
    """``{component: (trainable, total)}`` parameter counts; ``other`` only when non-empty.

    Under PEFT the totals include the adapter tensors and the trained copies of
    ``modules_to_save`` (their frozen originals are counted too).
    """
    params = dict(model.named_parameters())
    out: dict[str, tuple[int, int]] = {}
    for component, names in module_groups(model, family).items():
        if component == "other" and not names:
            continue
        total = sum(params[n].numel() for n in names)
        trainable = sum(params[n].numel() for n in names if params[n].requires_grad)
        out[component] = (trainable, total)
    return out
