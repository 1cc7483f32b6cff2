"""What a merge reads: classify input folders, check adapters against their base, hash inputs.

Why checks of our own before any tensor math: a merge of an adapter made for another base, or
of two models of different sizes, "works" numerically in the worst case and produces garbage
without an error. Every such case is one line here (exit code 2), naming the folder.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.merge.checkpoint import weight_hashes


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def require_folder(folder: Path | str, what: str) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(f"{what} folder not found", path=path)
    return path


def resolve_base(base: str | Path) -> Path:
    """A base model folder (local or in the hub cache), with weights in safetensors."""
    from vlm_retain.models.loading import check_weights, resolve_model_path

    folder = resolve_model_path(base)
    check_weights(folder)
    return folder


def meta_model(folder: Path) -> Any:
    """The model's modules with no weights allocated (device ``meta``): enough to check
    that an adapter's tensors fit, at no memory cost even for a 72B base."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from vlm_retain.models.registry import detect_family

    detect_family(folder)  # refuses unsupported architectures in one line
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def check_adapter_base(adapter: Path, base: str | Path, *, strict: bool = True) -> None:
    """Refuse an adapter trained on another model: by its recorded base name (unless
    ``strict`` is off, for renamed folders) and by the shapes of its tensors."""
    from vlm_retain.models.loading import _check_adapter_base, _check_adapter_shapes

    folder = resolve_base(base)
    _check_adapter_base(Path(adapter), str(base), folder, strict=strict)
    _check_adapter_shapes(Path(adapter), meta_model(folder))


def same_recorded_base(adapters: list[Path]) -> str | None:
    """The base all adapters name (refusing adapters that name different ones)."""
    from vlm_retain.models.loading import _identity

    names = []
    for adapter in adapters:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
        names.append(config.get("base_model_name_or_path"))
    known = [n for n in names if n]
    if len({_identity(n) for n in known}) > 1:
        raise InputError(
            f"the adapters were trained on different bases ({', '.join(sorted(set(known)))})",
            hint="merge only adapters of one base model (pass --base to check them against it)",
        )
    return known[0] if known else None


@lru_cache(maxsize=64)
def _hashes(path: str, stamp: tuple[tuple[str, int, int], ...]) -> dict[str, str]:
    return weight_hashes(Path(path))


def input_record(role: str, folder: Path | str) -> dict[str, Any]:
    """``{"role", "path", "weights": {file: sha256}}`` for merge.json.

    Hashes are cached per (file, size, mtime) within a process, so a sweep that builds eleven
    points from one base reads the base's weights once, not eleven times.
    """
    folder = Path(folder)
    stamp = tuple(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns)
        for f in sorted(folder.glob("*.safetensors"))
    )
    return {"role": role, "path": str(folder), "weights": _hashes(str(folder.resolve()), stamp)}
