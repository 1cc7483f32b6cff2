"""Load a model for evaluation or training: the one entry point, with the project's rules.

Rules (docs/models.md has the user-facing version):

- A local folder, or a hub id resolved **from the local cache only**; nothing downloads
  (``HF_HUB_OFFLINE`` or not). A missing model is an error that says to download it beforehand.
- **safetensors only**: pickle checkpoints (``pytorch_model.bin``) can run arbitrary code when
  loaded, so they are refused unless ``allow_pickle=True``.
- ``trust_remote_code`` stays off unless asked: every supported family is native to transformers.
- dtype and attention implementation follow the device: bf16 on a CUDA GPU that supports it,
  fp32 on CPU (bf16 matmuls are slow there and change greedy outputs); SDPA by default,
  FlashAttention-2 only when installed, on CUDA and in half precision.
- An optional PEFT adapter on top, checked against the base (name and tensor shapes) before
  PEFT loads it, so a mismatch is one clear line instead of a size-mismatch traceback.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.models.processor import image_backend_of, load_processor
from vlm_retain.models.registry import Family, detect_family
from vlm_retain.models.vision_attention import use_segment_attention

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class LoadedModel:
    """A model ready to use, with everything that describes how it was loaded.

    ``model`` is in eval mode (a ``PeftModel`` when ``adapter`` is set); ``path`` is the resolved
    local folder; ``source`` is what the user passed (folder or hub id); ``image_backend`` is
    ``"pil"`` or ``"torchvision"`` (train and evaluate with the same one).
    """

    model: Any
    processor: Any
    tokenizer: Any
    family: Family
    path: Path
    source: str
    adapter: Path | None
    dtype: Any
    device: Any
    attn_implementation: str
    image_backend: str
    vision_attention: str | None = None

    def describe(self) -> dict[str, Any]:
        """The ``model`` block of results.json: path, adapter, family, dtype (all strings)."""
        return {
            "path": self.source,
            "adapter": str(self.adapter) if self.adapter else None,
            "family": self.family.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "attn_implementation": self.attn_implementation,
            "vision_attention": self.vision_attention or self.attn_implementation,
            "image_backend": self.image_backend,
        }


def resolve_model_path(path_or_id: str | Path) -> Path:
    """A local folder for ``path_or_id``: the folder itself, or the cached snapshot of a hub id.

    Never downloads. A hub id missing from the cache is an :class:`InputError` that says to
    download it beforehand on a machine with network access.
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError("not a folder", path=path, hint="pass a model folder or a hub id")
    text = str(path_or_id)
    if not _HUB_ID.match(text):
        raise InputError("model folder not found", path=path)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: not in the cache
        raise InputError(
            f"model {text!r} is not a local folder and not in the Hugging Face cache",
            hint=(
                f"download it beforehand where there is network (hf download {text}) "
                "or pass a local folder; nothing is downloaded here"
            ),
        ) from None


def check_weights(folder: Path, *, allow_pickle: bool = False) -> str:
    """``"safetensors"`` or ``"pickle"``: the weight format of ``folder``; refuse the rest."""
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file():
        return "safetensors"
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(
        p.name for p in folder.glob("*.pt")
    )
    if pickles:
        if allow_pickle:
            return "pickle"
        raise InputError(
            f"only pickle weights ({pickles[0]}); pickle files can run code when loaded",
            path=folder,
            hint="convert them to safetensors, or pass --allow-pickle if you trust the source",
        )
    raise InputError(
        "no model weights (*.safetensors)", path=folder, hint="is this the right folder?"
    )


def choose_device(device: str | Any = "auto") -> Any:
    """``"auto"`` -> the first CUDA device when there is one, else the CPU."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(
            f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N"
        ) from None


def choose_dtype(dtype: str | Any, device: Any) -> Any:
    """``"auto"`` -> bf16 on a CUDA device that supports it, else fp32; names like ``bf16`` too."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise InputError(f"unknown dtype {dtype!r}", hint="use auto, bf16, fp16 or fp32")
    return getattr(torch, name)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator running out of memory (CUDA's own error, or the
    RuntimeError other backends raise)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_accelerator_memory() -> None:
    """Hand the CUDA allocator's cached blocks back after an out-of-memory error (no-op
    without CUDA), so a smaller retry can use them."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def halve_after_oom(size: int, what: str, *, tried: int | None = None) -> int:
    """The batch size to go on with after a batch of ``tried`` (default ``size``) ``what``
    (e.g. "lines") ran out of memory: half of ``size``, at least one; frees the cached memory
    and warns, naming both sizes."""
    import warnings

    release_accelerator_memory()
    smaller = max(1, size // 2)
    tried = size if tried is None else tried
    warnings.warn(
        f"out of memory at {tried} {what} per batch; going on with {smaller}", stacklevel=3
    )
    return smaller


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def choose_attention(attn: str, device: Any, dtype: Any) -> str:
    """``"auto"`` -> flash_attention_2 when installed, on CUDA and in half precision; else sdpa."""
    import torch

    if attn not in ATTN_IMPLEMENTATIONS:
        raise InputError(
            f"unknown attention implementation {attn!r}",
            hint=f"use {', '.join(ATTN_IMPLEMENTATIONS)}",
        )
    half = dtype in (torch.bfloat16, torch.float16)
    usable = flash_attention_available() and device.type == "cuda" and half
    if attn == "auto":
        return "flash_attention_2" if usable else "sdpa"
    if attn == "flash_attention_2" and not usable:
        raise InputError(
            "flash_attention_2 needs the flash-attn package, a CUDA device and bf16/fp16",
            hint="use --attn sdpa",
        )
    return attn


def load_model(
    path_or_id: str | Path,
    *,
    adapter: str | Path | None = None,
    dtype: str | Any = "auto",
    device: str | Any = "auto",
    attn: str = "auto",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    image_backend: str = "pil",
    strict_adapter_base: bool = True,
) -> LoadedModel:
    """Load model, processor and optional adapter from ``path_or_id`` under the project's rules.

    Bad inputs (no such model, no weights, pickle-only weights, no processor files, an unsupported
    architecture, an adapter for another base) raise :class:`InputError` with one line naming the
    path. An adapter's recorded base may be a renamed folder or a copy of this model (the same
    config and weight files) or a path relative to the adapter folder; ``strict_adapter_base=False``
    (the commands' ``--ignore-adapter-base``) accepts any recorded base as long as the adapter's
    tensors fit the model.
    """
    folder = resolve_model_path(path_or_id)
    family = detect_family(folder)
    fmt = check_weights(folder, allow_pickle=allow_pickle)
    processor = load_processor(folder, family, backend=image_backend)
    adapter_dir = _check_adapter_files(Path(adapter), allow_pickle) if adapter else None

    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars and one-line summaries say enough
    dev = choose_device(device)
    torch_dtype = choose_dtype(dtype, dev)
    attn_impl = choose_attention(attn, dev, torch_dtype)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(folder),
            dtype=torch_dtype,
            attn_implementation=attn_impl,
            use_safetensors=fmt == "safetensors",
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the model ({first})", path=folder) from None
    model.to(dev)
    # exact, and on a GPU far faster than transformers' per-window loop (models/vision_attention)
    segments = use_segment_attention(model)
    if adapter_dir is not None:
        _check_adapter_base(adapter_dir, str(path_or_id), folder, strict=strict_adapter_base)
        _check_adapter_shapes(adapter_dir, model)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        model.to(dev)
    model.eval()
    return LoadedModel(
        model=model,
        processor=processor,
        tokenizer=processor.tokenizer,
        family=family,
        path=folder,
        source=str(path_or_id),
        adapter=adapter_dir,
        dtype=torch_dtype,
        device=dev,
        attn_implementation=attn_impl,
        image_backend=image_backend_of(processor),
        vision_attention="segments" if segments else None,
    )


def _check_adapter_files(adapter: Path, allow_pickle: bool) -> Path:
    if not (adapter / "adapter_config.json").is_file():
        raise InputError("not a PEFT adapter folder (no adapter_config.json)", path=adapter)
    if (adapter / "adapter_model.safetensors").is_file():
        return adapter
    if (adapter / "adapter_model.bin").is_file():
        if allow_pickle:
            return adapter
        raise InputError(
            "only pickle adapter weights (adapter_model.bin)",
            path=adapter,
            hint="convert them to safetensors, or pass --allow-pickle if you trust the source",
        )
    raise InputError("no adapter weights (adapter_model.safetensors)", path=adapter)


def _identity(name: str) -> str:
    """A comparable identity: ``org/name`` for hub ids and cache snapshots, else a real path."""
    cached = re.search(r"models--([^/\\]+)--([^/\\]+)", name)
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name.rstrip("/")


def _check_adapter_base(adapter: Path, source: str, folder: Path, *, strict: bool) -> None:
    """Refuse an adapter whose ``base_model_name_or_path`` names another model.

    Accepted: the same name (hub id, cache snapshot or path), a path relative to the adapter
    folder that resolves to ``folder``, or any local folder whose ``config.json`` equals ours and
    whose weight files have the same names, sizes, headers and sampled bytes (a copy or renamed
    folder of the base). ``strict=False`` (the ``--ignore-adapter-base`` flag) skips the check.
    """
    config_file = adapter / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable adapter config ({exc})", path=config_file) from None
    base = config.get("base_model_name_or_path")
    if not base or not strict:
        return
    base = str(base)
    expected = {_identity(source), _identity(str(folder))}
    if _identity(base) in expected:
        return
    recorded = _base_folder(base, adapter)
    if recorded is not None and _same_model(recorded, folder):
        return
    raise InputError(
        f"adapter was trained on {base!r}, not on {source!r}",
        path=config_file,
        field="base_model_name_or_path",
        hint="pass the adapter's base model, or --ignore-adapter-base if you know this model is "
        "that base (moved or re-saved)",
    )


def _base_folder(base: str, adapter: Path) -> Path | None:
    """The local folder ``base`` names: relative to the adapter folder first (how a saved run
    records it), else as given (a path, or a hub id in the local cache); ``None`` if none."""
    path = Path(base).expanduser()
    if not path.is_absolute() and (adapter / path).is_dir():
        return (adapter / path).resolve()
    if path.is_dir():
        return path.resolve()
    if _HUB_ID.match(base):
        try:
            return resolve_model_path(base)
        except InputError:
            return None
    return None


def _same_model(a: Path, b: Path) -> bool:
    """The same folder, or the same config and the same weight files (names, sizes, headers,
    sampled bytes)."""
    try:
        if a.resolve() == b.resolve() or a.samefile(b):
            return True
        config_a = json.loads((a / "config.json").read_text(encoding="utf-8"))
        config_b = json.loads((b / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if config_a != config_b:
        return False
    try:
        prints_a, prints_b = _weight_fingerprints(a), _weight_fingerprints(b)
    except OSError:
        return False
    return bool(prints_a) and prints_a == prints_b


_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt")
_SAMPLES, _SAMPLE_BYTES = 64, 4096


def _weight_fingerprints(folder: Path) -> list[tuple[str, int, bytes]]:
    """``(name, size, print)`` of every weight file, cheap to compute (no tensor is loaded).

    ``print`` is the safetensors header (tensor names, dtypes, shapes, offsets) followed by 64
    evenly spaced 4 KiB samples of the file, so two folders with the same layout but other
    values (another seed, a full fine-tune of the base) do not pass for copies.
    """
    files = sorted({file for pattern in _WEIGHT_PATTERNS for file in folder.glob(pattern)})
    prints = []
    for file in files:
        size = file.stat().st_size
        parts = []
        with file.open("rb") as handle:
            if file.suffix == ".safetensors":
                length = int.from_bytes(handle.read(8), "little")
                parts.append(handle.read(min(length, 100_000_000)))
            step = max(size // _SAMPLES, 1)
            for offset in range(0, size, step)[:_SAMPLES]:
                handle.seek(offset)
                parts.append(handle.read(_SAMPLE_BYTES))
        prints.append((file.name, size, b"".join(parts)))
    return prints


def _check_adapter_shapes(adapter: Path, model: Any) -> None:
    """Every LoRA tensor must sit on an existing module with matching in/out features."""
    file = adapter / "adapter_model.safetensors"
    if not file.is_file():
        return
    from safetensors import safe_open

    modules = dict(model.named_modules())
    with safe_open(str(file), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            match = re.match(r"^(?:base_model\.model\.)?(.+)\.lora_(A|B)(?:\.[^.]+)?\.weight$", key)
            if not match:
                continue
            name, which = match.groups()
            module = modules.get(name)
            if module is None:
                raise InputError(
                    f"adapter tensor {key} targets module {name!r}, which this model lacks",
                    path=file,
                    hint="the adapter was made for another architecture",
                )
            shape = tuple(handle.get_slice(key).get_shape())
            in_f = getattr(module, "in_features", None)
            out_f = getattr(module, "out_features", None)
            want = (shape[1], in_f) if which == "A" else (shape[0], out_f)
            if want[1] is not None and want[0] != want[1]:
                raise InputError(
                    f"adapter tensor {key} has shape {list(shape)}, which does not fit "
                    f"{name} ({in_f} -> {out_f})",
                    path=file,
                    hint="the adapter was made for a model of another size",
                )


def batch_to(batch: dict[str, Any], loaded: LoadedModel) -> dict[str, Any]:
    """Move an :func:`~vlm_retain.models.encoding.encode` batch to the model's device; cast
    floating tensors (pixel values) to the model's dtype, since not every vision tower does."""
    import torch

    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(loaded.device)
            if value.is_floating_point():
                value = value.to(loaded.dtype)
        out[key] = value
    return out
