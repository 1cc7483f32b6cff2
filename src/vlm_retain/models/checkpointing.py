"""Activation (gradient) checkpointing on or off, one way for the trainer and the GPU bench.

Why one helper: transformers 5.24 renamed the switch (``activation_checkpointing_enable``; the
old ``gradient_checkpointing_enable`` warns, releases before it have only the old one), and
enabling registers hooks that make the embeddings' outputs require grad which disabling leaves
in place outside transformers' own PEFT integration. Left behind, every later step would
backpropagate into a frozen vision tower; enabled twice, they pile up. Both callers switch it
repeatedly (the memory plan's trials, the bench's cases), so both need the same care.
"""

from __future__ import annotations

from typing import Any

from vlm_retain.models.unwrap import unwrap


def set_checkpointing(model: Any, on: bool) -> None:
    """Non-reentrant checkpointing (works with frozen inputs and PEFT) on or off for ``model``
    under any wrappers; the input-require-grad hooks are removed first, every time."""
    target = unwrap(model)
    if hasattr(target, "disable_input_require_grads"):
        target.disable_input_require_grads()
    if on:
        kwargs = {"use_reentrant": False}
        if hasattr(target, "activation_checkpointing_enable"):
            target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if hasattr(target.config, "use_cache"):
            target.config.use_cache = False
    elif hasattr(target, "activation_checkpointing_disable"):
        if target.is_activation_checkpointing:
            target.activation_checkpointing_disable()
    elif target.is_gradient_checkpointing:
        target.gradient_checkpointing_disable()
