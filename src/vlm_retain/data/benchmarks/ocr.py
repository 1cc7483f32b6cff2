"""OCR lines from a manifest folder (any importer's or ``data synth htr``'s output).

The manifest is already the project's own validated contract (docs/formats.md), so this loader
only filters: ``task == "ocr"`` records of one split (default ``test``). Each item keeps the
record's ``lang`` and ``source`` and its ``meta`` so reports can break CER down by language,
era, writer or font.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from vlm_retain.data.benchmarks.common import choose_split
from vlm_retain.data.benchmarks.items import EvalItem, ImageRef
from vlm_retain.data.manifest import MANIFEST_NAME, manifest_path, read_manifest
from vlm_retain.errors import InputError

SPLIT_PREFERENCE = ("test", "val")


def has_ocr_records(path: Path) -> bool:
    """True when the manifest has at least one OCR record (read until the first one)."""
    import json

    try:
        with open(manifest_path(path), encoding="utf-8") as handle:
            for line in handle:
                if line.strip() and json.loads(line).get("task", "ocr") == "ocr":
                    return True
    except (InputError, OSError, ValueError, AttributeError):
        return False
    return False


def load_ocr_manifest(path: Path, *, split: str | None = None) -> list[EvalItem]:
    """The OCR lines of one split of a manifest (file or folder)."""
    file = manifest_path(Path(path))
    records = [r for r in read_manifest(file) if r.task == "ocr"]
    if not records:
        raise InputError(
            "no OCR records (task 'ocr') in this manifest",
            path=file,
            hint="point at a manifest written by 'data import' or 'data synth htr'",
        )
    chosen = choose_split({r.split for r in records}, split, SPLIT_PREFERENCE, file)
    return [
        EvalItem(
            id=record.id,
            image=ImageRef.from_path(record.image_path(file.parent)),
            reference=record.text,
            fields={
                "split": chosen,
                "lang": record.lang,
                "source": record.source,
                "meta": dict(record.meta),
            },
        )
        for record in records
        if record.split == chosen
    ]


def load_ocr(
    sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """Load from what discovery found: one manifest, or several combined.

    Several manifests (``--data`` repeated, or a folder holding more than one) give the items of
    all of them. When two manifests share a line id, every id is prefixed with its manifest
    folder's name (``peter/l1``) so predictions stay joinable; when those names are the same
    too, the manifests are refused. ``images`` is unused: manifests name their images relative
    to their own folder.
    """
    del images
    folders = list(dict.fromkeys(manifest_path(Path(s)).parent.resolve() for s in sources))
    if not folders:
        raise InputError(f"no {MANIFEST_NAME} given")
    loaded = [(folder, load_ocr_manifest(folder, split=split)) for folder in folders]
    if len(loaded) == 1:
        return loaded[0][1]
    owner: dict[str, Path] = {}
    collision = False
    for folder, items in loaded:
        for item in items:
            if item.id in owner:
                collision = True
            owner.setdefault(item.id, folder)
    if not collision:
        return [item for _, items in loaded for item in items]
    by_name: dict[str, Path] = {}
    for folder, _ in loaded:
        if folder.name in by_name:
            raise InputError(
                f"two manifests share line ids and their folders the same name {folder.name!r} "
                f"({by_name[folder.name]}, {folder})",
                path=folder,
                hint="evaluate them in separate runs (each with its own --out)",
            )
        by_name[folder.name] = folder
    return [
        replace(item, id=f"{folder.name}/{item.id}", fields={**item.fields, "line_id": item.id})
        for folder, items in loaded
        for item in items
    ]
