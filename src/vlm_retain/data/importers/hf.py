"""Hugging Face parquet: an ``image`` column of ``{bytes, path}`` structs and a ``text`` column.

This is the layout ``datasets`` writes for an ``Image`` feature (e.g. ``Teklia/IAM-line``:
``data/{train,validation,test}.parquet``, or shards ``train-00000-of-00002.parquet``). Files are
read in record batches, so memory stays flat however large a split is. Image bytes are written
as they are (no decoding, no re-encoding: Teklia's JPEGs stay byte-identical) under
``images/<split>/<id>.<ext>``, the extension taken from the bytes' magic number; because base.py
trusts images an importer wrote itself, each one is probed here before it is kept. An image
given only by ``path`` is referenced where it lies, relative to its parquet file's folder.

The split comes from the file name (``validation``/``valid``/``val``/``dev`` -> val), the name
kept in ``meta.original_split``, unless ``--split`` names one split for every file (a single
parquet whose name says no split). Ids come from ``--id-col``, else from an ``id`` column when
the file has one (what ``data export parquet`` writes, so a round trip keeps the natural ids),
else they are ``<split>-<row:06d>``, counting rows across a split's shards in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlm_retain.data.images import BadImage, probe_image
from vlm_retain.data.importers.base import ImportContext, require_lang_and_source
from vlm_retain.data.manifest import SPLITS, Record
from vlm_retain.data.naming import SPLIT_WORDS, safe_name, unique_name
from vlm_retain.errors import InputError
from vlm_retain.text import clean_text

#: ``train-00000-of-00002`` (``push_to_hub``), optionally with the older ``-<hash>`` suffix.
_SHARD = re.compile(r"^(?P<split>.+?)-\d+-of-\d+(?:-[0-9a-f]+)?$")
#: The id column used when ``--id-col`` is not given and the file has one.
DEFAULT_ID_COL = "id"
_BATCH_ROWS = 64
_RENAME_HINT = (
    "name each file after its split: train.parquet, validation.parquet, test.parquet "
    "(or shards such as train-00000-of-00002.parquet)"
)


@dataclass(frozen=True)
class HfOptions:
    """Column names default to what ``datasets`` writes for an ``Image`` + ``Value`` pair."""

    lang: str
    image_col: str = "image"
    text_col: str = "text"
    id_col: str | None = None
    source: str = "hf"
    #: train, val or test for every file, overriding what the file names say.
    split: str | None = None


def build(ctx: ImportContext, opts: HfOptions) -> list[Record]:
    """Read every parquet file under ``ctx.src`` batch by batch into records.

    Ids are checked for uniqueness across all files here, because a clash (two shards, or an
    id column with repeats) would otherwise surface only as a manifest that fails ``check``.
    """
    require_lang_and_source(opts.lang, opts.source)
    if opts.split is not None and opts.split not in SPLITS:
        raise InputError(
            f"--split must be one of {', '.join(SPLITS)}, got {opts.split!r}",
            hint="it applies to every file; leave it out to read the split from the file names",
        )
    files_by_split = _split_files(ctx.src, opts.split)
    records: list[Record] = []
    seen_ids: dict[str, str] = {}
    used_names: set[str] = set()
    for split_word, files in files_by_split.items():
        row_in_split = 0
        for parquet in files:
            id_col = _id_column(parquet, opts)
            named_split = _split_word(parquet)  # None only with --split and an unnamed file
            for row, image, text, source_id in _rows(parquet, opts, id_col):
                record_id = (
                    source_id if source_id is not None else f"{split_word}-{row_in_split:06d}"
                )
                row_in_split += 1
                where = f"{parquet.name} row {row}"
                if record_id in seen_ids:
                    raise InputError(
                        f"duplicate id {record_id!r} (also at {seen_ids[record_id]})",
                        path=parquet,
                        field=id_col,
                        hint="ids must be unique; pick another column with --id-col, or pass "
                        '--id-col "" for <split>-<row> ids',
                    )
                seen_ids[record_id] = where
                cleaned = clean_text(text) if isinstance(text, str) else ""
                if not cleaned:
                    ctx.skip("empty text", record_id)
                    continue
                meta: dict[str, Any] = {"file": _relative_name(parquet, ctx.src), "row": row}
                if named_split is not None:
                    meta["original_split"] = named_split
                split = opts.split or SPLIT_WORDS[split_word]
                image_ref = _image_ref(ctx, parquet, row, image, record_id, split, used_names, meta)
                if image_ref is None:
                    continue
                records.append(
                    Record.create(
                        id=record_id,
                        image=image_ref,
                        text=cleaned,
                        lang=opts.lang,
                        source=opts.source,
                        split=split,
                        meta=meta,
                    )
                )
    return records


def _split_files(src: Path, split: str | None) -> dict[str, list[Path]]:
    """Parquet files grouped by their split word, shards in name (= shard index) order.

    With ``split`` every file belongs to it: the word is the one from the file name when the
    name has one (kept in ``meta.original_split``), else ``split`` itself.
    """
    if src.is_file():
        files = [src]
    else:
        files = sorted(p for p in src.rglob("*.parquet") if p.is_file())
        if not files:
            raise InputError(
                "no .parquet files found",
                path=src,
                hint="pass a parquet file or a folder holding data/*.parquet",
            )
    grouped: dict[str, list[Path]] = {}
    for path in files:
        word = _split_word(path)
        if split is not None:
            word = split if word is None else word
        elif word is None:
            raise InputError(
                "cannot tell the split from the file name", path=path, hint=_RENAME_HINT
            )
        grouped.setdefault(word, []).append(path)
    order = list(SPLIT_WORDS)
    return {word: sorted(grouped[word]) for word in sorted(grouped, key=order.index)}


def _split_word(path: Path) -> str | None:
    """``train``/``validation``/... from ``train.parquet``, ``train-00000-of-00002.parquet``
    or, for numbered shards (``default/train/0000.parquet``), from the parent folder."""
    stem = path.name.removesuffix(".parquet").lower()
    match = _SHARD.match(stem)
    word = match["split"] if match else stem
    if word.isdigit():
        word = path.parent.name.lower()
    return word if word in SPLIT_WORDS else None


def _id_column(parquet: Path, opts: HfOptions) -> str | None:
    """``--id-col``, else ``id`` when this file has such a column, else None (row numbers);
    ``--id-col ""`` asks for row numbers even when there is an ``id`` column."""
    if opts.id_col is not None:
        return opts.id_col or None
    try:
        names = pq.read_schema(parquet).names
    except (pa.ArrowException, OSError):
        return None  # _rows reports the unreadable file with its own message
    return DEFAULT_ID_COL if DEFAULT_ID_COL in names else None


def _rows(
    parquet: Path, opts: HfOptions, id_col: str | None
) -> Iterator[tuple[int, Any, Any, str | None]]:
    """Yield ``(row, image struct, text, id or None)`` batch by batch."""
    try:
        handle = pq.ParquetFile(parquet)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"not a readable parquet file ({exc})",
            path=parquet,
            hint="re-download it; a partial download is not a valid parquet file",
        ) from None
    schema = handle.schema_arrow
    wanted = [opts.image_col, opts.text_col] + ([id_col] if id_col else [])
    for column in wanted:
        if column not in schema.names:
            raise InputError(
                f"no column {column!r}; columns present: {', '.join(schema.names)}",
                path=parquet,
                hint="pick the right one with --image-col, --text-col or --id-col",
            )
    _check_image_type(schema.field(opts.image_col).type, parquet, opts.image_col)
    if not (
        pa.types.is_string(schema.field(opts.text_col).type)
        or pa.types.is_large_string(schema.field(opts.text_col).type)
    ):
        raise InputError(
            f"column holds {schema.field(opts.text_col).type}, not text",
            path=parquet,
            field=opts.text_col,
            hint="pick the transcription column with --text-col",
        )
    row = 0
    try:
        for batch in handle.iter_batches(batch_size=_BATCH_ROWS, columns=wanted):
            images = batch.column(opts.image_col).to_pylist()
            texts = batch.column(opts.text_col).to_pylist()
            ids = batch.column(id_col).to_pylist() if id_col else [None] * len(texts)
            for image, text, source_id in zip(images, texts, ids, strict=True):
                if id_col and (source_id is None or str(source_id).strip() == ""):
                    raise InputError(
                        f"row {row} has no id",
                        path=parquet,
                        field=id_col,
                        hint="every row needs a value in the id column (pick one with --id-col)",
                    )
                yield row, image, text, (str(source_id).strip() if id_col else None)
                row += 1
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"cannot read row group after row {row} ({exc})",
            path=parquet,
            hint="the file is damaged or truncated; re-download it",
        ) from None


def _check_image_type(kind: pa.DataType, parquet: Path, column: str) -> None:
    names = (
        {kind.field(i).name for i in range(kind.num_fields)} if pa.types.is_struct(kind) else set()
    )
    if not names & {"bytes", "path"}:
        raise InputError(
            f"column holds {kind}, not an image struct {{bytes, path}}",
            path=parquet,
            field=column,
            hint="pick the image column with --image-col",
        )


def _image_ref(
    ctx: ImportContext,
    parquet: Path,
    row: int,
    image: Any,
    record_id: str,
    split: str,
    used_names: set[str],
    meta: dict[str, Any],
) -> str | None:
    """Write embedded bytes (probed) or reference a path-only image; None when skipped."""
    data = image.get("bytes") if isinstance(image, dict) else None
    path = image.get("path") if isinstance(image, dict) else None
    if path:
        meta["image_path"] = path
    if not data:
        if not path:
            ctx.skip("no image", record_id)
            return None
        ctx.note("images referenced by path (no bytes in the parquet)")
        target = Path(path)
        return ctx.reference(target if target.is_absolute() else parquet.parent / target)
    extension = image_extension(data)
    name = unique_name(f"{split}/{safe_name(record_id)}", used_names)
    if extension is None:
        return _bad_image(
            ctx, BadImage("unreadable image (unknown format)"), parquet, row, record_id
        )
    relative = ctx.save_bytes(data, f"{name}.{extension}")
    try:
        info = probe_image(ctx.staging / relative)
    except BadImage as bad:
        (ctx.staging / relative).unlink()
        ctx.written.discard(relative)
        return _bad_image(ctx, bad, parquet, row, record_id)
    meta.update(width=info.width, height=info.height)  # what base.py records for other images
    return relative


def _bad_image(ctx: ImportContext, bad: BadImage, parquet: Path, row: int, record_id: str) -> None:
    """Same policy as base.py's verification: an error, or a counted skip with --skip-bad-images."""
    if not ctx.skip_bad_images:
        raise InputError(
            f"row {row} (id {record_id}): {bad}",
            path=parquet,
            hint="re-download the file, or pass --skip-bad-images to count and skip it",
        )
    ctx.skip(str(bad).split(" (")[0], record_id)
    return None


def image_extension(data: bytes) -> str | None:
    """File extension for encoded image bytes from their magic number (None when unknown)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    return None


def _relative_name(parquet: Path, src: Path) -> str:
    return parquet.name if src.is_file() else parquet.relative_to(src).as_posix()
