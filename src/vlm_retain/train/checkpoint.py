"""Checkpoints in safetensors, exact resume, and the final adapter or model.

Why our own format and not ``torch.save``/``Trainer`` checkpoints: a pickle can run code when it
is loaded (the project loads safetensors only), and exact resume needs *everything* that
decides the next step, which is small and easy to name:

``RUN/checkpoints/step-000100/``

- ``trainable.safetensors``: every parameter with ``requires_grad`` (LoRA A/B and DoRA
  magnitudes, ``modules_to_save`` copies, or the full-rank tensors that train), by name;
- ``optimizer.safetensors``: AdamW's per-parameter state (``<index>.exp_avg``...), index =
  the parameter's position in the optimizer's groups;
- ``rng-<rank>.safetensors``: the torch CPU and CUDA generator states of each process;
- ``state.json``: step, data position (epoch, batch within it), the optimizer's group settings,
  the scheduler's state, Python and NumPy RNG states, the probe history, the resume hash.

A checkpoint is written into a hidden sibling folder and renamed into place, so a run killed
while saving leaves the previous checkpoint intact. Under DeepSpeed or FSDP the optimizer and
weights are sharded across processes; there ``accelerate``'s ``save_state`` writes them (its own
layout, weights as safetensors) beside our ``state.json``. That path is written from accelerate's
documentation and is not exercised by the CPU tests.

Which configs may resume each other: :func:`resume_hash` is the config hash without the keys
that only say how long to run or how to report (:data:`RESUME_FREE_KEYS`). Lengthening
``train.max_steps`` is allowed; note that cosine and linear schedules then stretch from the
resumed step on (the steps already taken followed the shorter horizon).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json
from vlm_retain.train.config import RunConfig, resolve

CHECKPOINTS = "checkpoints"
STATE = "state.json"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
FORMAT = "vlm-retain/checkpoint/1"

#: Keys that may differ between a checkpoint and the config resuming it: how long to run, how
#: often to save, where to report, where the run lives, and how the same step is computed (the
#: speed settings, whose tests show the same losses). Everything else changes the weights.
RESUME_FREE_KEYS = (
    "name",
    "train.max_steps",
    "train.epochs",
    "train.save_every_steps",
    "train.keep_checkpoints",
    "train.report_to",
    "train.output_dir",
    "train.gradient_checkpointing",
    "train.vision_cache",
    "train.answer_only_logits",
    "train.packing",
    "train.packing_row_tokens",
    "train.compile",
    "train.sample_cache_mib",
    "train.prefetch",
    "train.chunk_rows",
)


def resume_hash(config: RunConfig) -> str:
    """SHA-256 of the resolved config without :data:`RESUME_FREE_KEYS`."""
    data = resolve(config)
    for key in RESUME_FREE_KEYS:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(last, None)
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (for the refusal message)."""
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for key in keys:
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, path + ".")
        elif a != b and path not in RESUME_FREE_KEYS:
            out.append(path)
    return out


@dataclass
class Position:
    """Where training stands: optimizer ``step`` and the next micro-batch (``epoch``, ``batch``
    index within that epoch's list of this process's batches)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a ``state.json``), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith("step-") and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


# --- state pieces ----------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, json)``: torch CPU/CUDA generator states and Python/NumPy states."""
    import torch

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    py = random.getstate()
    np_state = np.random.get_state()
    return tensors, {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(tensors: dict[str, Any], states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = states["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))


def trainable_state(model: Any) -> dict[str, Any]:
    """Every parameter that trains, detached, contiguous, on the CPU."""
    return {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable(model: Any, tensors: dict[str, Any], where: Path) -> None:
    """Copy saved trainable tensors into ``model``; names and shapes must match exactly."""
    import torch

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        name = (missing or extra)[0]
        raise InputError(
            f"checkpoint does not fit the model ({'missing' if missing else 'unexpected'} "
            f"tensor {name})",
            path=where,
            hint="was it written with another tuning mode?",
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))


def optimizer_state(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, json)`` of a torch optimizer's ``state_dict``."""
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: Any, tensors: dict[str, Any], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in info.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _jsonable(value: Any) -> Any:
    """Scheduler state as JSON (torch keeps plain numbers and lists there)."""
    return json.loads(
        json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else None)
    )


# --- save / load -----------------------------------------------------------------------------


def save_checkpoint(
    run_dir: Path,
    *,
    accelerator: Any,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    position: Position,
    extra: dict[str, Any],
    config: RunConfig,
) -> Path:
    """Write ``RUN/checkpoints/step-N`` atomically (see the module docstring); return it.

    Every process must call this (each saves its RNG state); only the main one writes weights.
    """
    from safetensors.torch import save_file

    target = checkpoint_dir(run_dir, position.step)
    parent = target.parent
    main = accelerator.is_main_process
    stage = parent / f".{target.name}.partial"
    if main:
        parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    accelerator.wait_for_everyone()
    sharded = _sharded(accelerator)
    rng_tensors, rng_json = rng_state()
    save_file(rng_tensors, str(stage / f"rng-{accelerator.process_index}.safetensors"))
    if sharded:
        accelerator.save_state(str(stage / "accelerate"), safe_serialization=True)
    accelerator.wait_for_everyone()
    if main:
        if not sharded:
            save_file(trainable_state(accelerator.unwrap_model(model)), str(stage / TRAINABLE))
            opt_tensors, opt_json = optimizer_state(optimizer)
            save_file(opt_tensors, str(stage / OPTIMIZER))
        else:
            opt_json = {}
        atomic_write_json(
            stage / STATE,
            {
                "format": FORMAT,
                "step": position.step,
                "epoch": position.epoch,
                "batch": position.batch,
                "num_processes": accelerator.num_processes,
                "resume_hash": resume_hash(config),
                "config": resolve(config),
                "optimizer": opt_json,
                "scheduler": _jsonable(scheduler.state_dict()),
                "rng": rng_json,
                "sharded": sharded,
                **extra,
            },
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(stage, target)
    accelerator.wait_for_everyone()
    return target


def read_state(folder: Path) -> dict[str, Any]:
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable checkpoint ({exc})", path=folder) from None
    if state.get("format") != FORMAT:
        raise InputError("not a vlm-retain checkpoint (unknown format)", path=folder)
    return state


def check_compatible(
    state: dict[str, Any], config: RunConfig, folder: Path, processes: int
) -> None:
    """Refuse a checkpoint written with a config that changes the weights (names the keys).

    A hash that differs only through :data:`RESUME_FREE_KEYS` (a checkpoint from a version that
    hashed a key now free, or had no such key yet) is accepted: its recorded config is compared
    key by key.
    """
    recorded = state.get("config")
    keys: list[str] = []
    if state.get("resume_hash") != resume_hash(config):
        keys = config_differences(recorded, resolve(config)) if recorded else ["(not recorded)"]
    if keys:
        raise InputError(
            f"checkpoint was written with another config (differs in {', '.join(keys[:6])})",
            path=folder,
            hint="resume with the run's own config.yaml (only "
            + ", ".join(RESUME_FREE_KEYS)
            + " may change), or start a new run",
        )
    if state.get("num_processes", 1) != processes:
        raise InputError(
            f"checkpoint was written by {state.get('num_processes')} processes, now {processes}",
            path=folder,
            hint="resume with the same number of processes (the data split depends on it)",
        )


def load_checkpoint(
    folder: Path, *, accelerator: Any, model: Any, optimizer: Any, scheduler: Any
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states; return ``state.json``."""
    from safetensors.torch import load_file

    state = read_state(folder)
    if state.get("sharded"):
        accelerator.load_state(str(folder / "accelerate"))
    else:
        load_trainable(accelerator.unwrap_model(model), load_file(str(folder / TRAINABLE)), folder)
        load_optimizer(optimizer, load_file(str(folder / OPTIMIZER)), state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = folder / f"rng-{accelerator.process_index}.safetensors"
    set_rng_state(load_file(str(rng_file)), state["rng"])
    return state


def load_weights_only(folder: Path, *, accelerator: Any, model: Any) -> None:
    """Put a checkpoint's trainable weights back into ``model`` (the retention floor's restore)."""
    from safetensors.torch import load_file

    if read_state(folder).get("sharded"):
        accelerator.load_state(str(folder / "accelerate"))
        return
    load_trainable(accelerator.unwrap_model(model), load_file(str(folder / TRAINABLE)), folder)


def rotate(run_dir: Path, keep: int, protect: Iterable[int] = ()) -> list[Path]:
    """Remove all but the ``keep`` newest checkpoints and the ``protect`` steps; return removed."""
    found = list_checkpoints(run_dir)
    keep_steps = {int(p.name.removeprefix("step-")) for p in found[-keep:]} | set(protect)
    removed = []
    for path in found:
        if int(path.name.removeprefix("step-")) not in keep_steps:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _sharded(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


# --- the final weights -----------------------------------------------------------------------


def save_final(folder: Path, *, accelerator: Any, model: Any, loaded: Any, peft: bool) -> Path:
    """The trained result, written atomically: a PEFT adapter (``adapter_model.safetensors``)
    or the whole model (safetensors) with its processor, loadable by ``models.load_model``."""
    from vlm_retain.models.processor import save_processor

    folder = Path(folder)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model) if _sharded(accelerator) else None
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        kwargs = {"state_dict": state_dict} if state_dict is not None else {}
        unwrapped.save_pretrained(str(stage), safe_serialization=True, **kwargs)
        if not peft:
            save_processor(loaded.processor, stage, loaded.family)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(stage, folder)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return folder
