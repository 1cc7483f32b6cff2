"""Digital Peter: ``images/*.jpg`` + ``words/*.txt`` paired by name, splits from ``mapper.csv``.

Gotchas handled (see docs/datasets/peter.md): text files read as strict UTF-8 and cleaned
(leading space runs are common); empty transcriptions skipped and counted; split membership from
the ``train``/``public``/``private`` flags of ``mapper.csv`` (public -> val, private -> test, the
leaderboard's final set), rows with no flag go to train and are counted as unflagged; without a
mapper, a deterministic split grouped by (series, page); portrait images counted (and optionally
rotated); the organisers' legacy-archive fixes (``і``->``i``, Latin ``c``->``с``, ``ҍ``->``ѣ``)
on request. Two images sharing a name (``x.jpg`` and ``x.png``) are skipped and counted rather
than one picked at random; files in ``images/`` or ``words/`` that are not images or ``.txt``
are counted as a note.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlm_retain.data.images import IMAGE_SUFFIXES, BadImage, open_image
from vlm_retain.data.importers.base import ImportContext, require_dir
from vlm_retain.data.manifest import Record
from vlm_retain.data.splits import check_fractions, grouped_split
from vlm_retain.errors import InputError
from vlm_retain.fsutil import read_utf8
from vlm_retain.text import clean_text

_NAME = re.compile(r"^(?P<series>\d+)_(?P<page>\d+)_(?P<line>\d+)$")
_FLAG_TO_SPLIT = {"train": "train", "public": "val", "private": "test"}
#: Global normalizations of the organisers' March 2021 fix script, for the old unfixed archive.
LEGACY_FIXES = str.maketrans({"\u0456": "i", "c": "\u0441", "\u048d": "\u0463"})
ROTATIONS = {"none": None, "cw": Image.Transpose.ROTATE_270, "ccw": Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class PeterOptions:
    """``seed``/``val_frac``/``test_frac`` apply only when there is no ``mapper.csv``."""

    seed: int = 0
    val_frac: float = 0.1
    test_frac: float = 0.1
    legacy_fixes: bool = False
    rotate_portrait: str = "none"


def build(ctx: ImportContext, opts: PeterOptions) -> list[Record]:
    """Pair ``images/`` and ``words/`` by name and assign splits from ``mapper.csv`` (or by page).

    Pairing is by file stem (the only link between the two folders), so anything that breaks
    the one-to-one pairing (a missing side, two images for one name) is counted, never guessed.
    """
    root = ctx.src
    hint = "a Digital Peter folder holds images/ and words/ (and optionally mapper.csv)"
    images_dir = require_dir(root / "images", "images/ folder", hint)
    words_dir = require_dir(root / "words", "words/ folder", hint)
    if opts.rotate_portrait not in ROTATIONS:
        raise InputError(f"--rotate-portrait must be one of {', '.join(ROTATIONS)}")
    images, clashing = _images_by_stem(ctx, images_dir)
    texts: dict[str, Path] = {}
    for path in sorted(words_dir.iterdir()):
        if path.suffix == ".txt" and path.is_file():
            texts[path.stem] = path
        else:
            ctx.note("files in words/ that are not .txt (ignored)")
    for stem in clashing:
        texts.pop(stem, None)
    for stem in sorted(images.keys() - texts.keys()):
        ctx.skip("image without transcription", stem)
    for stem in sorted(texts.keys() - images.keys()):
        ctx.skip("transcription without image", stem)

    mapper_file = root / "mapper.csv"
    flags = _read_mapper(mapper_file) if mapper_file.is_file() else None
    if flags is None:
        check_fractions(opts.val_frac, opts.test_frac)
        groups = {stem: _page_group(stem) for stem in images.keys() & texts.keys()}
        by_group = grouped_split(
            groups.values(), seed=opts.seed, val_frac=opts.val_frac, test_frac=opts.test_frac
        )
    else:
        unmatched = len(flags.keys() - (images.keys() & texts.keys()))
        if unmatched:
            ctx.note("mapper.csv rows without an image/text pair", unmatched)

    records: list[Record] = []
    for stem in sorted(images.keys() & texts.keys()):
        meta: dict[str, object] = {"name": stem}
        match = _NAME.match(stem)
        if match:
            meta.update({k: int(v) for k, v in match.groupdict().items()})
        else:
            ctx.note("names not in series_page_line form")
        if flags is None:
            split = by_group[groups[stem]]
            meta["split_rule"] = f"grouped by series_page, seed {opts.seed}"
        elif stem not in flags:
            ctx.skip("not listed in mapper.csv", stem)
            continue
        else:
            flag, old_name = flags[stem]
            if flag == "unflagged":
                ctx.note("unflagged in mapper.csv (assigned to train)")
            split = "train" if flag == "unflagged" else _FLAG_TO_SPLIT[flag]
            meta["original_split"] = flag
            if old_name:
                meta["old_name"] = old_name
        raw = read_utf8(texts[stem])
        text = clean_text(raw)
        if opts.legacy_fixes:
            fixed = text.translate(LEGACY_FIXES)
            if fixed != text:
                ctx.note("lines changed by legacy fixes")
            text = fixed
        if not text:
            ctx.skip("empty transcription", stem)
            continue
        image_ref = _image_ref(ctx, images[stem], stem, opts, meta)
        if image_ref is None:
            continue
        records.append(
            Record.create(
                id=stem,
                image=image_ref,
                text=text,
                lang="ru",
                source="peter",
                split=split,
                meta=meta,
            )
        )
    return records


def _image_ref(
    ctx: ImportContext, path: Path, stem: str, opts: PeterOptions, meta: dict[str, object]
) -> str | None:
    """Reference the image in place, or write a rotated copy of a portrait one.

    An image that cannot be opened or decoded here (broken, truncated, over the pixel limit)
    is still referenced: base.py's verification then reports it the one shared way, naming the
    file, or skips and counts it with ``--skip-bad-images``.
    """
    try:
        with open_image(path) as image:
            width, height = image.size
            if height <= width:
                return ctx.reference(path)
            ctx.note("portrait images (height > width)")
            meta["portrait"] = True
            rotation = ROTATIONS[opts.rotate_portrait]
            if rotation is None:
                return ctx.reference(path)
            rotated = image.convert("RGB").transpose(rotation)
    except (BadImage, OSError, SyntaxError, ValueError):
        return ctx.reference(path)
    meta["rotated"] = opts.rotate_portrait
    ctx.note("portrait images rotated")
    return ctx.save_image(rotated, stem)


def _images_by_stem(ctx: ImportContext, images_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Image files by stem, and the stems shared by several images (``x.jpg`` and ``x.png``).

    Which of two images a transcription belongs to is unknown, so such a name is skipped and
    counted (whether or not it has a transcription) instead of one image being picked by
    directory order. Files that are not images are counted as a note.
    """
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            by_stem.setdefault(path.stem, []).append(path)
        else:
            ctx.note("files in images/ that are not images (ignored)")
    clashing = sorted(stem for stem, paths in by_stem.items() if len(paths) > 1)
    for stem in clashing:
        ctx.skip("several images with the same name", stem)
    images = {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}
    return images, clashing


def _page_group(stem: str) -> str:
    match = _NAME.match(stem)
    return f"{match['series']}_{match['page']}" if match else stem


def _read_mapper(path: Path) -> dict[str, tuple[str, str]]:
    """``new_name`` stem -> (flag, old_name) where flag is train/public/private/unflagged."""
    text = read_utf8(path)
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise InputError(
            "empty file",
            path=path,
            hint="expected columns new_name, old_name, train, public, private",
        )
    columns = {name.strip(): index for index, name in enumerate(header)}
    for needed in ("new_name", "train", "public", "private"):
        if needed not in columns:
            raise InputError(
                f"missing column {needed!r}",
                path=path,
                line=1,
                hint="expected columns new_name, old_name, train, public, private",
            )
    flags: dict[str, tuple[str, str]] = {}
    for number, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise InputError(
                f"expected {len(header)} fields, found {len(row)}", path=path, line=number
            )
        set_flags = []
        for flag in ("train", "public", "private"):
            cell = row[columns[flag]].strip()
            try:
                value = float(cell) if cell else 0.0
            except ValueError:
                raise InputError(
                    f"flag is not 0 or 1: {cell!r}", path=path, line=number, field=flag
                ) from None
            if value not in (0.0, 1.0):
                raise InputError(
                    f"flag is not 0 or 1: {cell!r}", path=path, line=number, field=flag
                )
            if value == 1.0:
                set_flags.append(flag)
        if len(set_flags) > 1:
            raise InputError(
                f"row is flagged for several splits ({', '.join(set_flags)})",
                path=path,
                line=number,
                hint="fix the row so at most one of train/public/private is 1",
            )
        name = Path(row[columns["new_name"]].strip()).stem
        old = Path(row[columns["old_name"]].strip()).stem if "old_name" in columns else ""
        if name in flags:
            raise InputError(
                f"name {name!r} listed twice", path=path, line=number, field="new_name"
            )
        flags[name] = (set_flags[0] if set_flags else "unflagged", old)
    return flags
