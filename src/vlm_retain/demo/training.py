"""Run one ``train`` config of the demo (a pretraining phase or a fine-tuning recipe).

The demo builds its configs as dicts (``demo/recipe.py``) and runs them through the same
trainer and hooks as ``vlm-retain train``, so what it measures is what the command does.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console


def run_train_config(config: dict[str, Any], console: Console) -> Any:
    """Validate ``config``, train with the CLI's probe and generation hooks, and return the
    :class:`~vlm_retain.train.trainer.TrainOutcome` (its ``final`` folder always set)."""
    from vlm_retain.cli.train import generator, probe_suite
    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import TrainHooks, train

    run = config_from_dict(config, source=f"demo: {config['name']}")
    hooks = TrainHooks(probe_suite=probe_suite, generator=generator, console=console)
    outcome = train(run, hooks=hooks)
    if outcome.final is None:
        raise RuntimeError(f"{config['name']} ended without a final model")
    return outcome
