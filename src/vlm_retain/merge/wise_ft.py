"""WiSE-FT: a point between the base and the fine-tuned model, as a folder that loads as is.

Two inputs, three ways to write the point:

- **full fine-tune** (``finetuned`` is a model folder): interpolate every floating tensor of the
  two checkpoints shard by shard (:func:`wise_ft_models`); exact, and needs neither model class
  nor memory beyond one shard of each.
- **LoRA adapter** (``adapter``): the delta ``scaling * B @ A`` is linear in B, so
  ``theta_base + alpha * delta`` is the same adapter with B multiplied by alpha
  (:func:`wise_ft_adapter`). ``modules_to_save`` copies are interpolated with the base's
  weights. DoRA cannot be written as an adapter (its magnitude renormalizes the direction,
  so scaling B is not scaling the change); it needs ``merge_into_base``.
- ``merge_into_base``: load the base, apply the adapter with PEFT, and interpolate the touched
  weights between the base and the merged model; exact for LoRA, DoRA and modules_to_save.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from vlm_retain.errors import InputError
from vlm_retain.merge import methods
from vlm_retain.merge.checkpoint import (
    INDEX_NAME,
    check_compatible,
    copy_side_files,
    iter_shards,
    read_tensors,
    save_shard,
    tensor_names,
)
from vlm_retain.merge.inputs import (
    check_adapter_base,
    input_record,
    require_folder,
    resolve_base,
)
from vlm_retain.merge.lora import read_adapter, scaled_tensors, write_adapter
from vlm_retain.merge.output import load_base, save_full, staged_merge


def wise_ft_models(
    base: str | Path, finetuned: Path, alpha: float, out: Path, *, overwrite: bool = False
) -> Path:
    """Write ``(1 - alpha) * base + alpha * finetuned`` as a full model folder at ``out``.

    Tensor names and shapes must match (else one line naming the first difference); the
    output keeps the base's shard layout and each tensor's dtype. Config, processor and
    tokenizer files come from the fine-tuned folder (which may have updated its generation
    config), falling back to the base's.
    """
    methods.check_alpha(alpha)
    base_folder = resolve_base(base)
    ft_folder = require_folder(finetuned, "fine-tuned model")
    if (ft_folder / "adapter_config.json").is_file():
        raise InputError(
            "this is an adapter folder, not a full model", path=ft_folder, hint="use --adapter"
        )
    check_compatible([base_folder, ft_folder])
    record = {
        "method": "wise-ft",
        "output": "model",
        "alpha": alpha,
        "inputs": [input_record("base", base_folder), input_record("finetuned", ft_folder)],
    }
    where = tensor_names(ft_folder)
    with staged_merge(out, record, overwrite=overwrite) as stage:
        for shard, base_tensors in iter_shards(base_folder):
            ft_tensors = read_tensors(ft_folder, list(base_tensors), where)
            mixed = methods.wise_ft(base_tensors, ft_tensors, alpha)
            save_shard(
                stage / shard.name,
                {name: mixed[name].to(base_tensors[name].dtype) for name in base_tensors},
            )
        if (base_folder / INDEX_NAME).is_file():
            shutil.copy2(base_folder / INDEX_NAME, stage / INDEX_NAME)  # same shards, same map
        copy_side_files(ft_folder, stage)
        copy_side_files(base_folder, stage)
    return Path(out)


def wise_ft_adapter(
    base: str | Path,
    adapter: Path,
    alpha: float,
    out: Path,
    *,
    merge_into_base: bool = False,
    strict_base: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the WiSE-FT point of a LoRA adapter: a scaled adapter, or a full merged model."""
    methods.check_alpha(alpha)
    adapter = require_folder(adapter, "adapter")
    loaded_adapter = read_adapter(adapter)
    check_adapter_base(adapter, base, strict=strict_base)
    if loaded_adapter.other and not loaded_adapter.is_dora:
        raise InputError(
            f"adapter tensor {loaded_adapter.other[0]} is not a plain LoRA factor",
            path=adapter,
            hint="embedding LoRA is not supported; pass --merge-into-base",
        )
    if loaded_adapter.is_dora and not merge_into_base:
        raise InputError(
            "a DoRA adapter cannot be scaled as an adapter (its magnitude vector renormalizes "
            "the change)",
            path=adapter,
            hint="pass --merge-into-base to write the exact interpolated model",
        )
    record: dict[str, Any] = {
        "method": "wise-ft",
        "output": "model" if merge_into_base else "adapter",
        "alpha": alpha,
        "inputs": [input_record("base", resolve_base(base)), input_record("adapter", adapter)],
        "how": (
            "base and base+adapter (merged with PEFT) interpolated per weight"
            if merge_into_base
            else "lora_B scaled by alpha"
            + (", modules_to_save interpolated with the base" if loaded_adapter.saved else "")
        ),
    }
    with staged_merge(out, record, overwrite=overwrite) as stage:
        if merge_into_base:
            _merged_model(base, adapter, loaded_adapter, alpha, stage)
        else:
            tensors = scaled_tensors(loaded_adapter, alpha)
            if loaded_adapter.saved:
                base_params = _base_params(base, list(loaded_adapter.saved))
                for name, key in loaded_adapter.saved.items():
                    saved = loaded_adapter.tensors[key]
                    mixed = methods.interpolate(base_params[name], saved, alpha)
                    tensors[key] = mixed.to(saved.dtype)
            write_adapter(stage, loaded_adapter.config, tensors, adapter)
    return Path(out)


def _base_params(base: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Selected in-memory parameters of the base (for modules_to_save copies)."""
    state = load_base(base).model.state_dict()
    missing = [n for n in names if n not in state]
    if missing:
        raise InputError(f"the base model has no parameter {missing[0]!r} (modules_to_save)")
    return {n: state[n].detach().clone() for n in names}


def _merged_model(
    base: str | Path, adapter_dir: Path, adapter: Any, alpha: float, stage: Path
) -> None:
    """Exact WiSE-FT of base and base+adapter for any adapter PEFT can merge."""
    from peft import PeftModel

    loaded = load_base(base)
    model = loaded.model
    touched = [f"{m}.weight" for m in adapter.lora] + list(adapter.saved)
    state = model.state_dict()
    before = {n: state[n].detach().clone() for n in touched if n in state}
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    with torch.no_grad():
        after = merged.state_dict()
        for name, original in before.items():
            target = after[name]
            target.copy_(methods.interpolate(original, target, alpha).to(target.dtype))
    save_full(merged, loaded.path, stage)
