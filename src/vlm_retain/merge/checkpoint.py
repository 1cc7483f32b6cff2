"""Read and write model folders at the file level: safetensors shards, side files, hashes.

Why at the file level: interpolating two full checkpoints needs no model class at all, only
the same tensor names in both folders. Working shard by shard keeps memory at one shard of each
input (a 7B model never has to fit twice in RAM), keeps the checkpoint's own tensor names and
dtypes (transformers 5 writes hub names on disk, not its in-memory names) and writes a folder
that transformers and vLLM load exactly as they load the inputs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.fsutil import MARKER_NAME, sha256_file

INDEX_NAME = "model.safetensors.index.json"
#: Files of ours that describe a folder's history; never copied into a new output.
OWN_FILES = (MARKER_NAME, "merge.json")


def shard_files(folder: Path) -> list[Path]:
    """The safetensors files of a full model folder, in the order the index lists them."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"unreadable safetensors index ({exc})", path=index) from None
        return [folder / name for name in dict.fromkeys(weight_map.values())]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputError("no model weights (*.safetensors)", path=folder)
    return files


def tensor_names(folder: Path) -> dict[str, Path]:
    """Every tensor name of a checkpoint and the shard that holds it."""
    from safetensors import safe_open

    found: dict[str, Path] = {}
    for file in shard_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                found[name] = file
    return found


def tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape, read from the headers only (cheap even for large checkpoints)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in shard_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def check_compatible(folders: list[Path]) -> None:
    """Refuse checkpoints whose tensor names or shapes differ, naming the first difference."""
    first = tensor_shapes(folders[0])
    for other_folder in folders[1:]:
        other = tensor_shapes(other_folder)
        for name in sorted(set(first) | set(other)):
            if name not in other or name not in first:
                lacking = other_folder if name not in other else folders[0]
                raise InputError(
                    f"tensor {name!r} is missing",
                    path=lacking,
                    hint="the models have different architectures",
                )
            if first[name] != other[name]:
                raise InputError(
                    f"tensor {name!r} has shape {list(other[name])} here but "
                    f"{list(first[name])} in {folders[0]}",
                    path=other_folder,
                    hint="the models have different sizes",
                )


def iter_shards(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Yield ``(shard file, {name: tensor})`` one shard at a time."""
    from safetensors.torch import load_file

    for file in shard_files(folder):
        yield file, load_file(str(file))


def read_tensors(folder: Path, names: list[str], where: dict[str, Path]) -> dict[str, Any]:
    """The named tensors of a checkpoint (``where`` from :func:`tensor_names`)."""
    from safetensors import safe_open

    out: dict[str, Any] = {}
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(where[name], []).append(name)
    for file, group in by_file.items():
        with safe_open(str(file), framework="pt") as handle:
            for name in group:
                out[name] = handle.get_tensor(name)
    return out


def save_shard(path: Path, tensors: dict[str, Any]) -> None:
    """Write one safetensors file with the ``format: pt`` metadata transformers expects."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def copy_side_files(source: Path, dest: Path, *, skip_weights: bool = True) -> list[str]:
    """Copy config, processor, tokenizer and other top-level files of ``source`` that ``dest``
    does not have yet (weights, our marker and merge.json excepted); return their names."""
    copied = []
    for file in sorted(Path(source).iterdir()):
        if not file.is_file() or file.name in OWN_FILES or (dest / file.name).exists():
            continue
        if skip_weights and (
            file.suffix in (".safetensors", ".bin", ".pt", ".pth") or file.name == INDEX_NAME
        ):
            continue
        shutil.copy2(file, dest / file.name)
        copied.append(file.name)
    return copied


def weight_hashes(folder: Path) -> dict[str, str]:
    """``sha256:`` of each weight file of a model or adapter folder, for merge.json."""
    folder = Path(folder)
    if (folder / "adapter_model.safetensors").is_file():
        files = [folder / "adapter_model.safetensors"]
    else:
        files = shard_files(folder)
    return {file.name: "sha256:" + sha256_file(file) for file in files}


def checkpoint_dtype(folder: Path) -> str:
    """The dtype a folder's config declares (``dtype`` in transformers 5, ``torch_dtype``
    before), so a merged model is saved in the precision it came in; float32 if unsaid."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    for holder in (config, config.get("text_config") or {}):
        value = holder.get("dtype") or holder.get("torch_dtype")
        if isinstance(value, str) and value in ("float32", "bfloat16", "float16"):
            return value
    return "float32"
