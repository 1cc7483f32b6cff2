"""Hugging Face parquet export: ``data/{train,validation,test}.parquet`` with an Image feature.

The columns are what ``datasets`` writes for an ``Image`` + ``Value`` dataset such as
``Teklia/IAM-line`` (``image`` as a ``{bytes, path}`` struct, ``text``), plus ``id``, ``lang`` and
``source`` so nothing of the manifest's identity is lost. The ``huggingface`` schema metadata
carries the feature types, so ``datasets.load_dataset("parquet", ...)`` (or simply
``load_dataset(OUT)``) decodes ``image`` as a PIL image; the folder layout and the
``validation`` name are the ones the hub's parquet loader maps to splits. Image bytes are
copied as they are (no re-encoding); ``path`` holds the file name, as ``datasets`` keeps when it
embeds files. Rows are written in row groups of 100, as ``datasets`` does for image data, so
memory stays flat.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlm_retain.data.export.llamafactory import guard_output
from vlm_retain.data.manifest import Record, iter_manifest, manifest_path
from vlm_retain.errors import InputError
from vlm_retain.fsutil import staged_output_dir, write_marker

#: Manifest split -> the file name the Hugging Face hub and ``datasets`` expect.
SPLIT_FILES = {"train": "train", "val": "validation", "test": "test"}
ROW_GROUP_ROWS = 100
_STRING = {"dtype": "string", "_type": "Value"}
FEATURES = {
    "image": {"_type": "Image"},
    "text": _STRING,
    "id": _STRING,
    "lang": _STRING,
    "source": _STRING,
}
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [
        ("image", IMAGE_TYPE),
        ("text", pa.string()),
        ("id", pa.string()),
        ("lang", pa.string()),
        ("source", pa.string()),
    ],
    metadata={"huggingface": json.dumps({"info": {"features": FEATURES}})},
)


def export_parquet(folder: Path, to: Path, *, overwrite: bool) -> dict[str, int]:
    """Write ``to/data/<split>.parquet`` for each split present; return rows per split file."""
    manifest = manifest_path(Path(folder))
    guard_output(to, [manifest.parent])
    counts: dict[str, int] = {}
    with staged_output_dir(to, overwrite=overwrite) as staging:
        writers: dict[str, _SplitWriter] = {}
        try:
            for record in iter_manifest(manifest):
                name = SPLIT_FILES[record.split]
                if name not in writers:
                    writers[name] = _SplitWriter(staging / "data" / f"{name}.parquet")
                writers[name].add(record, manifest)
        finally:
            for name, writer in writers.items():
                counts[name] = writer.close()
        write_marker(staging, "export", format="parquet", manifest=str(manifest.resolve()))
    order = list(SPLIT_FILES.values())
    return {name: counts[name] for name in sorted(counts, key=order.index)}


class _SplitWriter:
    """Buffers one row group of a split at a time and appends it to the split's file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(path, SCHEMA)
        self._rows: list[dict[str, Any]] = []
        self._count = 0

    def add(self, record: Record, manifest: Path) -> None:
        """Queue one record with its image bytes as they are on disk (no re-encoding, so the
        export is lossless); write a row group once enough rows are queued, so memory holds
        one row group of images, not a split."""
        image = record.image_path(manifest.parent)
        try:
            data = image.read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read the image of {record.id!r}: {image} ({exc.strerror})",
                path=manifest,
                field="image",
                hint="re-import the dataset or restore the image",
            ) from None
        self._rows.append(
            {
                "image": {"bytes": data, "path": image.name},
                "text": record.text,
                "id": record.id,
                "lang": record.lang,
                "source": record.source,
            }
        )
        if len(self._rows) >= ROW_GROUP_ROWS:
            self._flush()

    def close(self) -> int:
        """Write what is queued and the parquet footer (without it the file is unreadable);
        return the number of rows in the file, for the summary the CLI prints."""
        self._flush()
        self._writer.close()
        return self._count

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=SCHEMA))
            self._count += len(self._rows)
            self._rows = []
