"""Diagonal Fisher information of the base model on general data, cached on disk.

Why cached: the Fisher needs a forward and backward pass per general sample (minutes to an
hour for a 7B model and N in the hundreds), yet it depends only on the base weights, the data,
N and the settings, so every run of a sweep can share it. Files are safetensors under
``cache_dir`` named by a hash of :func:`fisher_key`, with the key in the metadata.

Which Fisher. ``mode="empirical"`` (default): gradients of the log-likelihood of the data's own
answers, ``F_i = mean_n (d/d theta_i log p(y_n | x_n))^2`` (the empirical Fisher, what the EWC
continual-pretraining study on Gemma2 used with MMLU as proxy data, methods.md §2.2): cheap, and
with replay data whose answers the base model gets right it is close to the true Fisher.
``mode="sampled"``: the labels are replaced by tokens sampled from the model's own next-token
distribution at each supervised position (teacher-forced context), an unbiased one-sample
estimate of the true Fisher at the same cost; prefer it when the general answers are not the
model's own (e.g. human captions the base would phrase differently). ``log p(y | x)`` is the
*sum* over answer tokens (a sequence log-likelihood, as in EWC); each batch must hold **one**
sample, since squaring a batch gradient is not a mean of per-sample squares.

Which parameters: those that will train (the anchored weights of
:class:`~vlm_retain.train.deltas.WeightAnchor`): the trainable tensors for full/selective tuning,
and the *base weights* of the LoRA-targeted layers for LoRA/DoRA (the adapter starts as the
identity, so the wrapped model at step 0 is the base model). Estimate after ``apply_tuning``
and before the first step; names are bare-model names, shared across tuning modes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.train.deltas import anchored_names, base_name, is_lora_param

FISHER_MODES = ("empirical", "sampled")
CACHE_VERSION = 1


@dataclass
class FisherResult:
    """A Fisher (base name -> tensor), where it is cached, and whether it came from disk."""

    fisher: dict[str, Any]
    path: Path
    loaded: bool
    key: dict[str, Any]


def estimate_fisher(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    n: int,
    mode: str = "empirical",
    seed: int = 0,
    names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The diagonal Fisher over the first ``n`` one-sample ``batches`` (see module docstring).

    ``names`` defaults to the anchored weights of ``model``. ``requires_grad`` flags and train /
    eval modes are restored afterwards; gradients are zeroed. Values are float32 on the
    parameters' device, each ``>= 0``.
    """
    import torch

    from vlm_retain.train.objectives import model_inputs

    if mode not in FISHER_MODES:
        raise InputError(f"unknown Fisher mode {mode!r}", hint=f"use {', '.join(FISHER_MODES)}")
    wanted = set(anchored_names(model) if names is None else names)
    params = _params_by_base_name(model, wanted)
    acc = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    generator: Any = None
    count = 0
    with _grad_only(model, params.values()):
        for batch in islice(batches, n):
            rows = int(batch["input_ids"].shape[0])
            if rows != 1:
                raise InputError(
                    f"Fisher batches must hold one sample, got {rows}", hint="use batch size 1"
                )
            logits = model(**model_inputs(batch)).logits
            labels = batch["labels"].to(logits.device)
            mask = labels[:, 1:] != -100
            logp = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)
            if mode == "sampled":
                if generator is None:
                    generator = torch.Generator(device=logp.device).manual_seed(seed)
                target = torch.multinomial(logp.detach().exp(), 1, generator=generator)[:, 0]
            else:
                target = labels[:, 1:][mask]
            loss = -logp.gather(-1, target[:, None]).sum()
            model.zero_grad(set_to_none=True)
            loss.backward()
            for name, param in params.items():
                if param.grad is not None:
                    acc[name] += param.grad.detach().float().pow(2)
            model.zero_grad(set_to_none=True)
            count += 1
    if count == 0:
        raise InputError("no samples to estimate the Fisher on", hint="check the general data")
    return {name: value / count for name, value in acc.items()}


def fisher_key(
    model: Any,
    *,
    n: int,
    mode: str,
    seed: int,
    data_hash: str,
    names: Iterable[str],
    model_id: str = "",
) -> dict[str, Any]:
    """Everything the Fisher depends on: base weights (fingerprint), data, N, settings."""
    return {
        "version": CACHE_VERSION,
        "model": model_fingerprint(model),
        "model_id": model_id,
        "data": data_hash,
        "n": n,
        "mode": mode,
        "seed": seed,
        "params": hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest(),
    }


def fisher_for(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    cache_dir: str | Path,
    n: int,
    mode: str = "empirical",
    seed: int = 0,
    data_hash: str | None = None,
    model_id: str = "",
) -> FisherResult:
    """Load the Fisher from ``cache_dir`` when its key matches, else estimate and save it.

    ``data_hash`` identifies the general data (e.g. the manifest's content hash and the
    sampling seed); when None, the first ``n`` batches are materialized and hashed, which
    costs their encoding but can never be stale.
    """
    names = anchored_names(model)
    if data_hash is None:
        batches = list(islice(batches, n))
        data_hash = hash_batches(batches)
    key = fisher_key(
        model, n=n, mode=mode, seed=seed, data_hash=data_hash, names=names, model_id=model_id
    )
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"fisher-{digest}.safetensors"
    if path.is_file():
        fisher = _load(path, key, model)
        if fisher is not None:
            return FisherResult(fisher, path, True, key)
    fisher = estimate_fisher(model, batches, n=n, mode=mode, seed=seed, names=names)
    _save(path, fisher, key)
    return FisherResult(fisher, path, False, key)


def model_fingerprint(model: Any) -> str:
    """A hash of the base weights' names, shapes, dtypes and two exact sums per tensor.

    Adapter tensors and PEFT's trained copies are skipped, so a bare model and its fresh PEFT
    wrap hash alike. Sums are reduced in float64 (deterministic on a given device; a different
    device may give a different hash, which only costs a re-estimate).
    """
    import torch

    h = hashlib.sha256()
    seen: set[str] = set()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if is_lora_param(name) or ".modules_to_save." in name:
                continue
            key = base_name(name)
            if key in seen:
                continue
            seen.add(key)
            d = param.detach().double()
            h.update(f"{key}|{tuple(param.shape)}|{param.dtype}|".encode())
            h.update(f"{d.sum().item():.15e}|{d.pow(2).sum().item():.15e}\n".encode())
    return h.hexdigest()


def hash_batches(batches: Iterable[Mapping[str, Any]]) -> str:
    """A content hash of encoded batches (tensor bytes, dtypes and shapes; other values' repr)."""
    import torch

    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            h.update(f"{key}|".encode())
            if isinstance(value, torch.Tensor):
                t = value.detach().cpu().contiguous()
                h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
                h.update(t.flatten().view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(value).encode())
        h.update(b"\n")
    return h.hexdigest()


def _params_by_base_name(model: Any, wanted: set[str]) -> dict[str, Any]:
    """The tensor that holds each wanted base weight now (LoRA base layers included)."""
    out: dict[str, Any] = {}
    for name, param in model.named_parameters():
        if is_lora_param(name) or ".original_module." in name:
            continue
        key = base_name(name)
        if key in wanted and key not in out:
            out[key] = param
    missing = wanted - set(out)
    if missing:
        raise InputError(f"no parameter {sorted(missing)[0]} in the model for the Fisher")
    return out


@contextmanager
def _grad_only(model: Any, params: Iterable[Any]) -> Iterator[None]:
    """Gradients for ``params`` only, eval mode (no dropout); restore everything afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


def _save(path: Path, fisher: Mapping[str, Any], key: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in fisher.items()}
    save_file(tensors, str(tmp), metadata={"fisher_key": json.dumps(key, sort_keys=True)})
    os.replace(tmp, path)


def _load(path: Path, key: Mapping[str, Any], model: Any) -> dict[str, Any] | None:
    """The cached Fisher on the parameters' devices, or None when the file's key differs."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("fisher_key") != json.dumps(dict(key), sort_keys=True):
            return None
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    devices = {n: p.device for n, p in _params_by_base_name(model, set(tensors)).items()}
    return {name: t.to(devices[name]) for name, t in tensors.items()}
