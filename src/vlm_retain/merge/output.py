"""Writing merge outputs: staged folders, ``merge.json``, and full models saved from memory.

Why one place: every merge command must leave either a complete, loadable folder or nothing,
and must say exactly how it was made (method, inputs with hashes, weights, density, seed), so
a merged model found months later can be traced and remade.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vlm_retain.fsutil import atomic_write_json, staged_output_dir, write_marker
from vlm_retain.merge.checkpoint import checkpoint_dtype, copy_side_files

MERGE_SCHEMA = "vlm-retain/merge/1"


@contextmanager
def staged_merge(out: Path, record: dict[str, Any], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success add ``merge.json`` and the marker and move it to
    ``out`` (on failure nothing is left behind)."""
    with staged_output_dir(Path(out), overwrite=overwrite) as stage:
        yield stage
        full = {"schema": MERGE_SCHEMA, **record, "versions": _versions()}
        full["time"] = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write_json(stage / "merge.json", full)
        write_marker(stage, "merge", method=record.get("method"), output=record.get("output"))


def _versions() -> dict[str, str]:
    from vlm_retain.evaluate.results import package_versions

    return package_versions()


def load_base(base: str | Path) -> Any:
    """The base model in memory, on the CPU, in its checkpoint's own dtype (a bf16 model stays
    bf16 on disk after merging, instead of doubling in size as fp32)."""
    from vlm_retain.merge.inputs import resolve_base
    from vlm_retain.models.loading import load_model

    folder = resolve_base(base)
    return load_model(base, dtype=checkpoint_dtype(folder), device="cpu", attn="sdpa")


def save_full(model: Any, base_folder: Path, stage: Path) -> None:
    """Save an in-memory model as a hub-style folder: safetensors, config, and the base's
    processor/tokenizer files (copied, so they are byte-identical to the base's)."""
    model.save_pretrained(str(stage), safe_serialization=True)
    copy_side_files(base_folder, stage)
