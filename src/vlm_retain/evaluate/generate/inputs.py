"""What to transcribe: a manifest, a folder of line images, or image files.

Why ids matter: they key resuming (an interrupted run skips ids already written) and scoring
(predictions join references by id). A manifest brings its own ids and references; a folder's
images are named by their path relative to the folder (so the same folder always gives the same
ids); image files given one by one are named by the path as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_retain.data.images import IMAGE_SUFFIXES
from vlm_retain.data.manifest import MANIFEST_NAME, read_manifest
from vlm_retain.errors import InputError


@dataclass(frozen=True)
class Item:
    """One image to transcribe, with what the output line carries besides the prediction."""

    id: str
    image: Path
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    lang: str | None = None


def is_manifest(path: Path) -> bool:
    """A manifest folder (holds ``manifest.jsonl``) or a ``.jsonl`` file."""
    return (path.is_dir() and (path / MANIFEST_NAME).is_file()) or (
        path.is_file() and path.suffix == ".jsonl"
    )


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def resolve_inputs(paths: Sequence[Path], *, split: str | None = None) -> list[Item]:
    """The items named by ``paths`` (see the module docstring), in a stable order."""
    if not paths:
        raise InputError("nothing to transcribe", hint="pass a manifest, a folder or image files")
    for path in paths:
        if not path.exists():
            raise InputError("not found", path=path)
    manifests = [p for p in paths if is_manifest(p)]
    if manifests:
        if len(paths) > 1:
            raise InputError(
                "a manifest must be the only input", path=manifests[0], hint="run it on its own"
            )
        return from_manifest(manifests[0], split=split)
    if split is not None:
        raise InputError("--split applies to a manifest only", hint="drop --split for image files")
    items: list[Item] = []
    single_folder = len(paths) == 1 and paths[0].is_dir()
    for path in paths:
        if path.is_dir():
            images = folder_images(path)
            if not images:
                raise InputError(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder", path=path
                )
            for image in images:
                rel = image.relative_to(path).as_posix()
                items.append(Item(rel if single_folder else (path / rel).as_posix(), image))
        elif is_image_file(path):
            items.append(Item(path.as_posix(), path))
        else:
            raise InputError(
                "not an image, a folder or a manifest",
                path=path,
                hint=f"images end in {', '.join(IMAGE_SUFFIXES)}; manifests in .jsonl",
            )
    return _unique(items)


def folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive; hidden files and folders skipped), sorted by
    their relative path so the order never depends on the file system."""
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and is_image_file(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def from_manifest(path: Path, *, split: str | None = None) -> list[Item]:
    """Items of a manifest (optionally one split); the text is the reference when present."""
    records = read_manifest(path)
    folder = path if path.is_dir() else path.parent
    if split is not None:
        records = [r for r in records if r.split == split]
        if not records:
            raise InputError(f"no records in split {split!r}", path=path)
    if not records:
        raise InputError("the manifest is empty", path=path)
    return [
        Item(
            id=r.id,
            image=r.image_path(folder),
            reference=r.text or None,
            meta={"lang": r.lang, "source": r.source, "split": r.split, **r.meta},
            lang=r.lang,
        )
        for r in records
    ]


def filter_lang(items: list[Item], lang: str, *, path: Path | None = None) -> list[Item]:
    """The manifest items in language ``lang`` (our code, a Tesseract name, or ``+``-joined
    codes such as ``rus+eng``); an :class:`InputError` when none is."""
    from vlm_retain.evaluate.generate.tesseract import LANGS as TESSERACT_LANGS

    iso = {name: code for code, name in TESSERACT_LANGS.items()}
    wanted = {iso.get(part, part) for part in lang.split("+") if part}
    kept = [item for item in items if item.lang in wanted]
    if not kept:
        found = sorted({item.lang for item in items if item.lang})
        raise InputError(
            f"no records in language {lang!r}"
            + (f" (the manifest has {', '.join(found)})" if found else " (no record has a lang)"),
            path=path,
            hint="pass one of the manifest's languages to --lang, or leave --lang out",
        )
    return kept


def _unique(items: list[Item]) -> list[Item]:
    """Drop exact repeats (the same file named twice); refuse two files with one id."""
    seen: dict[str, Path] = {}
    out: list[Item] = []
    for item in items:
        if item.id in seen:
            if seen[item.id].resolve() == item.image.resolve():
                continue
            raise InputError(f"two images have the id {item.id!r}", path=item.image)
        seen[item.id] = item.image
        out.append(item)
    return out
