"""Merge several adapters or full fine-tunes into one: linear (task arithmetic), TIES, DARE.

Why on effective deltas: a LoRA adapter's change to a weight is ``scaling * B @ A``. PEFT's
``add_weighted_adapter`` with ``linear``/``ties``/``dare_*`` combines the A's and the B's
separately, which is not the merge of the changes (the product of sums has cross terms, and
trimming or dropping entries of A and B separately is not trimming the change). So we merge
the deltas themselves, exactly as PEFT's ``svd``/``ties_svd``/``dare_linear_svd``/
``dare_ties_svd`` variants do, and either re-factorize each merged delta to a rank-r LoRA by
truncated SVD (the output is an adapter; ``merge.json`` records the relative reconstruction
error) or add it to the base (``merge_into_base``: a full model, no approximation).

Full fine-tunes are merged as task vectors (``theta_i - theta_base``), streamed shard by shard.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
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
    is_adapter,
    require_folder,
    resolve_base,
    same_recorded_base,
)
from vlm_retain.merge.lora import PREFIX, Adapter, merged_config, read_adapter, write_adapter
from vlm_retain.merge.output import load_base, save_full, staged_merge

METHODS = ("linear", "ties", "dare")
DEFAULT_DENSITY = {"ties": 0.2, "dare": 0.5}
#: Above this ``svd_relative_error`` (max over modules) an adapter merge warns on stderr.
SVD_WARN_ERROR = 0.05


def default_rank(method: str, ranks: Sequence[int]) -> int:
    """The merged adapter's rank when ``--rank`` is not given.

    ``linear``: the sum of the input ranks, where the weighted sum of the deltas is exact (a
    sum of rank-r_i matrices has rank at most sum r_i). ``ties``/``dare``: the largest input
    rank (the adapter stays the size of one input): trimming or dropping entries makes each
    merged delta full-rank, so no small rank is exact; the error is recorded and warned about.
    """
    return sum(ranks) if method == "linear" else max(ranks)


def merge_vectors(
    method: str,
    vectors: Sequence[dict[str, torch.Tensor]],
    *,
    weights: Sequence[float] | None,
    density: float | None,
    seed: int,
    combine: str,
    scale: float,
) -> dict[str, torch.Tensor]:
    """Dispatch to :mod:`vlm_retain.merge.methods` with each method's parameters."""
    if method == "linear":
        return methods.linear(vectors, weights, scale=scale)
    if method == "ties":
        return methods.ties(vectors, weights, density=_density(method, density), scale=scale)
    if method == "dare":
        return methods.dare(
            vectors,
            weights,
            density=_density(method, density),
            seed=seed,
            combine=combine,
            scale=scale,
        )
    raise InputError(f"unknown merge method {method!r}", hint=f"use {', '.join(METHODS)}")


def _density(method: str, density: float | None) -> float:
    return DEFAULT_DENSITY[method] if density is None else density


def check_options(
    method: str, n_inputs: int, weights: Sequence[float] | None, density: float | None
) -> None:
    """Usage errors found before any file is read."""
    if method not in METHODS:
        raise InputError(f"unknown merge method {method!r}", hint=f"use {', '.join(METHODS)}")
    if n_inputs < 2:
        raise InputError(f"{method} needs at least two inputs, got {n_inputs}")
    if weights is not None and len(weights) != n_inputs:
        raise InputError(
            f"{len(weights)} --weights for {n_inputs} inputs", hint="give one weight per input"
        )
    if density is not None:
        if method == "linear":
            raise InputError("--density applies to ties and dare, not linear")
        if not 0.0 < density <= 1.0:
            raise InputError(f"--density must be in (0, 1], got {density:g}")


def merge_inputs(
    method: str,
    inputs: Sequence[Path],
    out: Path,
    *,
    base: str | Path | None = None,
    weights: Sequence[float] | None = None,
    density: float | None = None,
    seed: int = 0,
    combine: str = "linear",
    scale: float = 1.0,
    rank: int | None = None,
    merge_into_base: bool = False,
    strict_base: bool = True,
    overwrite: bool = False,
) -> Path:
    """Merge LoRA adapters (all of them) or full fine-tunes (all of them, with ``base``)."""
    check_options(method, len(inputs), weights, density)
    folders = [require_folder(p, "input") for p in inputs]
    kinds = {is_adapter(f) for f in folders}
    if len(kinds) > 1:
        raise InputError(
            "the inputs mix adapters and full models",
            hint="merge adapters with adapters and full fine-tunes with full fine-tunes",
        )
    record: dict[str, Any] = {
        "method": method,
        "weights": list(weights) if weights is not None else [1.0] * len(folders),
        "density": None if method == "linear" else _density(method, density),
        "seed": seed if method == "dare" else None,
        "combine": combine if method == "dare" else None,
        "scale": scale,
    }
    options = dict(
        weights=weights,
        density=density,
        seed=seed,
        combine=combine,
        scale=scale,
    )
    if kinds == {True}:
        return _merge_adapters(
            method,
            folders,
            out,
            base=base,
            rank=rank,
            merge_into_base=merge_into_base,
            strict_base=strict_base,
            overwrite=overwrite,
            record=record,
            options=options,
        )
    if base is None:
        raise InputError(
            "full fine-tunes are merged as task vectors, which need the model they started from",
            hint="pass --base",
        )
    return _merge_models(method, folders, out, base, overwrite, record, options)


def _merge_models(
    method: str,
    folders: list[Path],
    out: Path,
    base: str | Path,
    overwrite: bool,
    record: dict[str, Any],
    options: dict[str, Any],
) -> Path:
    """Task-vector merge of full checkpoints, one base shard at a time."""
    base_folder = resolve_base(base)
    check_compatible([base_folder, *folders])
    record.update(
        output="model",
        inputs=[input_record("base", base_folder)]
        + [input_record("finetuned", f) for f in folders],
    )
    wheres = [tensor_names(f) for f in folders]
    with staged_merge(out, record, overwrite=overwrite) as stage:
        for shard, base_tensors in iter_shards(base_folder):
            names = list(base_tensors)
            vectors = [
                methods.task_vector(read_tensors(f, names, w), base_tensors)
                for f, w in zip(folders, wheres, strict=True)
            ]
            merged = merge_vectors(method, vectors, **options)
            result = methods.add_delta(base_tensors, merged)
            save_shard(
                stage / shard.name,
                {name: result[name].to(base_tensors[name].dtype) for name in names},
            )
        if (base_folder / INDEX_NAME).is_file():
            shutil.copy2(base_folder / INDEX_NAME, stage / INDEX_NAME)
        copy_side_files(base_folder, stage)
    return Path(out)


def _merge_adapters(
    method: str,
    folders: list[Path],
    out: Path,
    *,
    base: str | Path | None,
    rank: int | None,
    merge_into_base: bool,
    strict_base: bool,
    overwrite: bool,
    record: dict[str, Any],
    options: dict[str, Any],
) -> Path:
    """Merge the adapters' effective deltas; write an adapter (SVD) or a full model."""
    adapters = [read_adapter(f) for f in folders]
    for adapter in adapters:
        _check_plain_lora(adapter)
    recorded = same_recorded_base(folders)
    if base is not None:
        for folder in folders:
            check_adapter_base(folder, base, strict=strict_base)
    needs_base = merge_into_base or any(a.saved for a in adapters)
    if needs_base and base is None:
        raise InputError(
            "--base is needed to merge into the base model or to merge modules_to_save copies",
            hint=f"pass --base {recorded}" if recorded else "pass --base",
        )
    loaded = load_base(base) if needs_base else None
    base_state = loaded.model.state_dict() if loaded is not None else {}
    vectors = [_adapter_deltas(a, base_state) for a in adapters]
    merged = merge_vectors(method, vectors, **options)
    lora_names = {f"{m}.weight" for a in adapters for m in a.lora}
    rank = rank or default_rank(method, [a.rank for a in adapters])
    record.update(
        output="model" if merge_into_base else "adapter",
        inputs=([input_record("base", resolve_base(base))] if base is not None else [])
        + [input_record("adapter", f) for f in folders],
    )
    if not merge_into_base:
        record.update(rank=rank)
    with staged_merge(out, record, overwrite=overwrite) as stage:
        if merge_into_base:
            assert loaded is not None
            with torch.no_grad():
                for name, delta in merged.items():
                    target = base_state[name]
                    target.copy_((target.to(torch.float32) + delta).to(target.dtype))
            save_full(loaded.model, loaded.path, stage)
        else:
            tensors, errors = _refactor(merged, lora_names, rank, adapters, base_state)
            record["svd_relative_error"] = _summary(errors)
            config = merged_config(adapters, rank, sorted(n[: -len(".weight")] for n in lora_names))
            if base is not None:
                config["base_model_name_or_path"] = str(base)
            write_adapter(stage, config, tensors, None)  # merge.json follows, with the error
    error = (record.get("svd_relative_error") or {}).get("max")
    if error is not None and error > SVD_WARN_ERROR:
        sys.stderr.write(
            f"warning: the merged adapter at rank {rank} loses up to {error:.1%} of a merged "
            f"delta (svd_relative_error in merge.json); pass a larger --rank, or "
            f"--merge-into-base --base B for an exact full model\n"
        )
    return Path(out)


def _check_plain_lora(adapter: Adapter) -> None:
    if adapter.is_dora:
        raise InputError(
            "DoRA adapters cannot be merged as LoRA deltas (the magnitude vector renormalizes "
            "each weight)",
            path=adapter.path,
            hint=(
                "turn each into a full model first (vlm-retain merge wise-ft --alpha 1 "
                "--merge-into-base) and merge those with --base"
            ),
        )
    if adapter.other:
        raise InputError(
            f"adapter tensor {adapter.other[0]} is not a plain LoRA factor",
            path=adapter.path,
            hint="only LoRA on linear layers (lora_A/lora_B) can be merged here",
        )


def _adapter_deltas(
    adapter: Adapter, base_state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Effective deltas keyed by in-memory parameter name (modules_to_save: copy - base)."""
    deltas = {f"{module}.weight": adapter.delta(module) for module in adapter.lora}
    for name, key in adapter.saved.items():
        if name not in base_state:
            raise InputError(
                f"modules_to_save tensor {key} has no parameter {name!r} in the base model",
                path=adapter.path,
            )
        deltas[name] = adapter.tensors[key].to(torch.float32) - base_state[name].to(torch.float32)
    return deltas


def _refactor(
    merged: dict[str, torch.Tensor],
    lora_names: set[str],
    rank: int,
    adapters: list[Adapter],
    base_state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Adapter tensors for the merged deltas: rank-r factors, or full modules_to_save copies."""
    dtype = next(iter(adapters[0].tensors.values())).dtype
    tensors: dict[str, torch.Tensor] = {}
    errors = []
    for name, delta in merged.items():
        if name in lora_names:
            module = name[: -len(".weight")]
            a, b, error = methods.low_rank(delta, rank)
            if a.shape[0] < rank:  # a matrix smaller than the rank: pad with zero factors
                a = torch.cat([a, a.new_zeros(rank - a.shape[0], a.shape[1])])
                b = torch.cat([b, b.new_zeros(b.shape[0], rank - b.shape[1])], dim=1)
            tensors[f"{PREFIX}{module}.lora_A.weight"] = a.to(dtype)
            tensors[f"{PREFIX}{module}.lora_B.weight"] = b.to(dtype)
            errors.append(error)
        else:
            original = base_state[name]
            tensors[f"{PREFIX}{name}"] = (original.to(torch.float32) + delta).to(original.dtype)
    return tensors, errors


def _summary(errors: list[float]) -> dict[str, float] | None:
    if not errors:
        return None
    return {"max": max(errors), "mean": sum(errors) / len(errors)}
