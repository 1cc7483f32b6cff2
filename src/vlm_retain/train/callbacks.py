"""What the training loop reports: ``train_log.jsonl``, console lines, trackers, weight drift.

Why a file first: the data is often confidential, so nothing leaves the machine by default
(``train.report_to: none``); ``RUN/train_log.jsonl`` holds one JSON object per optimizer step
(``step``, ``epoch``, ``lr`` per parameter group, every objective part, per-source CE as
``ce/<source>``, ``tokens``, and at probe steps the probe metrics and the parameter distance per
component). TensorBoard, Weights & Biases and MLflow get the same numbers through accelerate's
trackers when asked for and installed; a tracker that is asked for but missing is an input
error before anything loads.

Why the parameter distance per component: the L2 distance of each component (vision,
projector, llm...) from its starting weights shows *where* a run moved, which is the first
thing to look at when a probe drops. For LoRA/DoRA it is the distance of the effective weight
(``B @ A * scaling``, DoRA's rescaling included), the same quantity L2-SP penalizes.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.errors import InputError

#: ``report_to`` names and the module each needs.
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
LOG_NAME = "train_log.jsonl"


def check_trackers(report_to: list[str]) -> list[str]:
    """The trackers to start (none for ``["none"]``); a missing package names the key."""
    wanted = [name for name in report_to if name != "none"]
    for name in wanted:
        module = TRACKER_MODULES[name]
        if importlib.util.find_spec(module) is None and not (
            name == "tensorboard" and importlib.util.find_spec("tensorboardX")
        ):
            raise InputError(
                f"train.report_to asks for {name} but the {module} package is not installed",
                hint=f"pip install {module}, or remove it from train.report_to",
            )
    return wanted


class TrainLog:
    """Appends one JSON line per step to ``RUN/train_log.jsonl`` and prints one-line summaries.

    On resume, :meth:`truncate_after` drops lines written after the checkpoint (by the run that
    was killed), so the log of a resumed run reads like an uninterrupted one.
    """

    def __init__(
        self, run_dir: Path, *, console: Console | None, accelerator: Any, trackers: bool
    ) -> None:
        self.path = Path(run_dir) / LOG_NAME
        self.console = console
        self.accelerator = accelerator
        self.trackers = trackers
        self.main = accelerator.is_main_process

    def truncate_after(self, step: int) -> None:
        if not self.main or not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        clean = {k: _finite(v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean, ensure_ascii=False) + "\n")
        if self.trackers:
            numbers = {k: v for k, v in clean.items() if isinstance(v, int | float) and k != "step"}
            self.accelerator.log(numbers, step=int(record["step"]))

    def say(self, text: str) -> None:
        if self.main and self.console is not None:
            self.console.print(text, soft_wrap=True)


def step_line(record: dict[str, Any], total: int) -> str:
    """``step 40/300 (epoch 0.53): loss 1.234 (ce 1.2, kl 0.03), lr 9.9e-04``."""
    parts = [
        f"{k} {record[k]:.4g}"
        for k in sorted(record)
        if "/" not in k
        and k not in ("step", "epoch", "total", "tokens", "seconds")
        and not k.startswith("lr")
        and isinstance(record[k], int | float)
    ]
    lr = record.get("lr/default", next((v for k, v in record.items() if k.startswith("lr/")), 0))
    return (
        f"step {record['step']}/{total} (epoch {record['epoch']:.2f}): loss "
        f"{record.get('total', float('nan')):.4f} ({', '.join(parts)}), lr {lr:.2e}"
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ParamDistance:
    """L2 distance of each component's trained weights from their start.

    The starting values of full-rank parameters are kept on the CPU (not on the accelerator,
    where memory is scarce), in their own dtype; LoRA/DoRA slots keep their small start
    adapters. :meth:`measure` costs one pass over the trainable weights, so the trainer calls it
    at probe steps, checkpoints and the end, not every step.
    """

    def __init__(self, model: Any, family: Any) -> None:
        from vlm_retain.models.registry import module_groups
        from vlm_retain.train.deltas import _lora_slot, is_lora_param

        component_of = {
            name: comp for comp, names in module_groups(model, family).items() for name in names
        }
        self.slots: list[tuple[str, Any]] = []
        for module_name, module in model.named_modules():
            slot = _lora_slot(module_name, module)
            if slot is not None:
                a_name = f"{module_name}.lora_A.{slot.adapter}.weight"
                self.slots.append((component_of.get(a_name, "other"), slot))
        self.plain: list[tuple[str, Any, Any]] = [
            (component_of.get(name, "other"), param, param.detach().to("cpu", copy=True))
            for name, param in model.named_parameters()
            if param.requires_grad and not is_lora_param(name)
        ]

    def measure(self) -> dict[str, float]:
        """``{"dist/<component>": L2 distance}`` for every component that trains."""
        import torch

        from vlm_retain.train.deltas import lora_delta

        sq: dict[str, float] = {}
        with torch.no_grad():
            for comp, slot in self.slots:
                delta = lora_delta(slot)
                if not slot.zero_start:
                    delta = delta - lora_delta(slot, start=True)
                sq[comp] = sq.get(comp, 0.0) + float(delta.float().pow(2).sum())
            for comp, param, start in self.plain:
                diff = param.detach().float() - start.to(param.device).float()
                sq[comp] = sq.get(comp, 0.0) + float(diff.pow(2).sum())
        return {f"dist/{comp}": math.sqrt(value) for comp, value in sorted(sq.items())}
