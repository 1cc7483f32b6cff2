"""Warnings we know to be harmless, silenced once per process (the CLI and demo workers)."""

from __future__ import annotations

import warnings


def silence_known_warnings() -> None:
    """PEFT calls a deprecated transformers property on every adapter load and training step
    (research/env.md §4); the message would repeat hundreds of times and means nothing to a user.
    """
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
    )
