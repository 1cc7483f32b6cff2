"""PEFT LoRA adapters as data: their tensors, their effective deltas, and writing new ones.

Why not go through PEFT's model classes: scaling or merging adapters is arithmetic on a few
small tensors, and doing it on the files needs neither the base model in memory nor PEFT's
module injection. The files we write are ordinary PEFT adapters (``adapter_config.json`` +
``adapter_model.safetensors``), so PEFT, transformers and vLLM load them as they are.

Names: an adapter stores ``base_model.model.<module>.lora_A.weight`` (in-memory module names
of transformers 5); deltas here are keyed ``<module>.weight``, the in-memory parameter name.
Tensors without a ``lora_`` part are ``modules_to_save`` copies of whole modules.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlm_retain.errors import InputError

PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_(A|B)\.weight$")


@dataclass
class Adapter:
    """One PEFT LoRA adapter folder, read into memory (adapters are small)."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    lora: dict[str, tuple[str, str]] = field(default_factory=dict)  # module -> (A key, B key)
    saved: dict[str, str] = field(default_factory=dict)  # in-memory param name -> key
    other: list[str] = field(default_factory=list)  # DoRA magnitudes, embedding LoRA, ...

    @property
    def is_dora(self) -> bool:
        return bool(self.config.get("use_dora")) or any("lora_magnitude" in k for k in self.other)

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 8))

    def scaling(self, module: str) -> float:
        """PEFT's scale of ``B @ A`` for ``module``: ``alpha / r`` (``alpha / sqrt(r)`` with
        rsLoRA), with ``rank_pattern``/``alpha_pattern`` overrides matched as PEFT does."""
        rank = _pattern_value(self.config.get("rank_pattern") or {}, module, self.rank)
        alpha = _pattern_value(
            self.config.get("alpha_pattern") or {}, module, self.config.get("lora_alpha", 8)
        )
        root = math.sqrt(rank) if self.config.get("use_rslora") else rank
        return float(alpha) / root

    def delta(self, module: str) -> torch.Tensor:
        """The effective weight change ``scaling * B @ A`` (out x in, float32)."""
        a_key, b_key = self.lora[module]
        a = self.tensors[a_key].to(torch.float32)
        b = self.tensors[b_key].to(torch.float32)
        return self.scaling(module) * (b @ a)


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``get_pattern_key``: a key matches a module name it ends (as a regex)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_adapter(folder: Path) -> Adapter:
    """Read an adapter folder; refuse folders that are not a safetensors LoRA adapter."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise InputError("not a PEFT adapter folder (no adapter_config.json)", path=folder)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable adapter config ({exc})", path=config_file) from None
    if config.get("peft_type", "LORA") != "LORA":
        raise InputError(
            f"only LoRA adapters can be merged, this one is {config.get('peft_type')}",
            path=config_file,
        )
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise InputError("no adapter weights (adapter_model.safetensors)", path=folder)
    tensors = load_file(str(weights))
    adapter = Adapter(folder, config, tensors)
    halves: dict[str, dict[str, str]] = {}
    for key in tensors:
        match = _LORA_KEY.match(key)
        if match:
            halves.setdefault(match.group(1), {})[match.group(2)] = key
        elif "lora_" in key:
            adapter.other.append(key)
        else:
            adapter.saved[key.removeprefix(PREFIX)] = key
    for module, pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise InputError(f"module {module!r} has only lora_{next(iter(pair))}", path=weights)
        adapter.lora[module] = (pair["A"], pair["B"])
    return adapter


def scaled_tensors(adapter: Adapter, alpha: float) -> dict[str, torch.Tensor]:
    """The adapter's tensors with every ``lora_B`` multiplied by ``alpha``.

    Why B and not ``lora_alpha`` in the config: the delta ``scaling * B @ A`` is linear in B, so
    this scales the delta exactly, and every loader (PEFT, vLLM, LLaMA-Factory's export)
    reads B the same way, whereas a non-integer ``lora_alpha`` or per-module ``alpha_pattern``
    is handled differently (or not at all) by some of them.
    """
    out = dict(adapter.tensors)
    for _, b_key in adapter.lora.values():
        tensor = adapter.tensors[b_key]
        out[b_key] = (tensor.to(torch.float32) * alpha).to(tensor.dtype)
    return out


def write_adapter(
    out: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], source: Path | None
) -> None:
    """Write an adapter folder; copy the source's other files (README, tokenizer) along."""
    from vlm_retain.fsutil import atomic_write_json
    from vlm_retain.merge.checkpoint import copy_side_files, save_shard

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "adapter_config.json", config)
    save_shard(out / "adapter_model.safetensors", tensors)
    if source is not None:
        copy_side_files(source, out)


def merged_config(adapters: list[Adapter], rank: int, modules: list[str]) -> dict[str, Any]:
    """The config of an adapter re-factorized from effective deltas.

    ``lora_alpha = r`` (scaling 1) because the factors already hold the full delta; rsLoRA,
    DoRA and the per-module patterns are switched off for the same reason. ``target_modules``
    stays the inputs' own when they agree, else lists the merged modules by full name.
    """
    config = dict(adapters[0].config)
    targets = [a.config.get("target_modules") for a in adapters]
    same = all(
        json.dumps(t, sort_keys=True) == json.dumps(targets[0], sort_keys=True) for t in targets
    )
    saved = sorted({m for a in adapters for m in (a.config.get("modules_to_save") or [])})
    config.update(
        r=rank,
        lora_alpha=rank,
        use_rslora=False,
        use_dora=False,
        rank_pattern={},
        alpha_pattern={},
        target_modules=targets[0] if same else sorted(modules),
        modules_to_save=saved or None,
        inference_mode=True,
    )
    return config
