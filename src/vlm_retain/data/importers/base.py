"""What every importer shares: staging, image verification, the skip log, the card.

An importer is a function ``build(ctx, options) -> list[Record]`` that reads its source and
returns records; it reports skipped items with ``ctx.skip(reason, example)``. :func:`run_import`
does the rest the same way for every source: it stages the output folder, verifies every
referenced image (decoding it, so truncated files are caught at import, not mid-training),
writes the manifest, the card and the marker, and renames the folder into place only when all
of that succeeded.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from rich.progress import Progress

from vlm_retain.data.card import SkipLog, build_card, write_card
from vlm_retain.data.images import BadImage, ImageInfo, probe_many
from vlm_retain.data.manifest import LANG_CODE, MANIFEST_NAME, Record, write_manifest
from vlm_retain.errors import InputError
from vlm_retain.fsutil import (
    atomic_write_bytes,
    relative_to_folder,
    staged_output_dir,
    write_marker,
)
from vlm_retain.progress import progress_bar

OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class CommonOptions:
    """Options every ``data import`` command takes."""

    out: Path
    overwrite: bool = False
    skip_bad_images: bool = False
    workers: int = max(1, min(4, os.cpu_count() or 1))
    progress: bool = True


@dataclass
class ImportContext:
    """Handed to an importer's ``build``: where to write, how to reference, what to count."""

    source: str
    src: Path
    out: Path
    staging: Path
    skipped: SkipLog
    notes: Counter[str]
    #: Images the importer wrote itself (crops, decoded bytes): known good, not re-verified.
    written: set[str]
    #: ``--skip-bad-images``, for importers that read images themselves (pages, parquet bytes).
    skip_bad_images: bool = False

    def skip(self, reason: str, example: str) -> None:
        """Count one item that will not be in the manifest, under a human-readable reason."""
        self.skipped.add(reason, example)

    def note(self, key: str, count: int = 1) -> None:
        """Count something worth knowing that did not drop an item (e.g. unflagged lines)."""
        self.notes[key] += count

    def reference(self, image: Path) -> str:
        """Manifest path of an image that stays where it lies (relative to the final folder)."""
        return relative_to_folder(image, self.out)

    def save_image(self, image: Image.Image, name: str) -> str:
        """Write a derived image (a crop) as lossless PNG under ``images/``; return its path."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False)
        return self.save_bytes(buffer.getvalue(), name if name.endswith(".png") else name + ".png")

    def save_bytes(self, data: bytes, name: str) -> str:
        """Write encoded image bytes as they are under ``images/``; return the manifest path."""
        relative = f"images/{name}"
        atomic_write_bytes(self.staging / relative, data)
        self.written.add(relative)
        return relative


def require_lang_and_source(lang: str, source: str) -> None:
    """Check ``--lang``/``--source`` of importers whose source cannot tell them (hf, sharegpt)."""
    if not LANG_CODE.match(lang):
        raise InputError(f"--lang {lang!r} is not an ISO 639-1 code", hint="use en, ru, it, ar...")
    if not source.strip():
        raise InputError("--source must not be empty")


def require_dir(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` when it is a folder, else a one-line error saying what was expected."""
    if not path.is_dir():
        raise InputError(f"{what} not found", path=path, hint=hint)
    return path


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` when it is a file, else a one-line error saying what was expected."""
    if not path.is_file():
        raise InputError(f"{what} not found", path=path, hint=hint)
    return path


def run_import(
    source: str,
    src: Path,
    options: OptionsT,
    build: Callable[[ImportContext, OptionsT], list[Record]],
    common: CommonOptions,
) -> dict[str, Any]:
    """Run one importer end to end and return the card it wrote."""
    src = Path(src)
    if not src.exists():
        raise InputError(
            "source not found", path=src, hint="pass the folder (or file) you downloaded"
        )
    out = Path(common.out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise InputError(
            "--out must not be inside the source", path=out, hint="write derived data elsewhere"
        )
    if out.resolve() in src.resolve().parents:
        raise InputError(
            "the source is inside --out",
            path=out,
            hint="--overwrite would delete it; choose another --out",
        )
    with staged_output_dir(out, overwrite=common.overwrite) as staging:
        ctx = ImportContext(
            source=source,
            src=src,
            out=out,
            staging=staging,
            skipped=SkipLog(),
            notes=Counter(),
            written=set(),
            skip_bad_images=common.skip_bad_images,
        )
        records = build(ctx, options)
        records = _verify_images(ctx, records, common)
        if not records:
            reasons = (
                ", ".join(f"{r}: {n}" for r, n in ctx.skipped.counts.most_common()) or "none found"
            )
            raise InputError(f"no usable items (skipped: {reasons})", path=src)
        records.sort(key=lambda r: (("train", "val", "test").index(r.split), r.id))
        manifest_file = staging / MANIFEST_NAME
        write_manifest(manifest_file, records)
        card = build_card(
            records,
            manifest_file=manifest_file,
            importer=source,
            options={
                **_options_dict(options),
                "skip_bad_images": common.skip_bad_images,
                "overwrite": common.overwrite,
            },
            source_path=src,
            skipped=ctx.skipped,
            notes=dict(sorted(ctx.notes.items())),
        )
        write_card(staging, card)
        write_marker(staging, "manifest", source=source)
    return card


def _verify_images(
    ctx: ImportContext, records: list[Record], common: CommonOptions
) -> list[Record]:
    """Decode every referenced image; record its size in ``meta``; act on bad ones."""
    todo = [r for r in records if r.image not in ctx.written]
    # The final folder does not exist yet, so resolve ``../`` lexically against its absolute path.
    paths = [Path(os.path.normpath(ctx.out.resolve() / r.image)) for r in todo]
    results: dict[str, ImageInfo | BadImage] = {}
    with _progress(common.progress) as progress:
        task = progress.add_task(f"verifying {len(paths)} images", total=len(paths))
        for record, (path, result) in zip(
            todo,
            probe_many(paths, workers=common.workers, on_done=lambda: progress.advance(task)),
            strict=True,
        ):
            if (
                isinstance(result, BadImage)
                and str(result) != "image missing"
                and not common.skip_bad_images
            ):
                raise InputError(
                    str(result),
                    path=path.resolve(),
                    hint="re-extract the archive, or pass --skip-bad-images to count and skip it",
                )
            results[record.id] = result
    kept: list[Record] = []
    for record in records:
        result = results.get(record.id)
        if isinstance(result, BadImage):
            ctx.skip(str(result).split(" (")[0], record.id)
            continue
        if isinstance(result, ImageInfo) and "width" not in record.meta:
            record = replace(
                record, meta={**record.meta, "width": result.width, "height": result.height}
            )
        kept.append(record)
    return kept


def _progress(enabled: bool) -> Progress:
    return progress_bar(enabled)


def _options_dict(options: Any) -> dict[str, Any]:
    """Options as given, with paths made absolute so the card still means something later."""
    if is_dataclass(options) and not isinstance(options, type):
        values = asdict(options)
    else:
        values = dict(options) if isinstance(options, dict) else {"value": repr(options)}
    return {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in values.items()}
