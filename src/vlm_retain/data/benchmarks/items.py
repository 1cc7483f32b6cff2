"""What every benchmark loader returns: plain items with a lazily loaded image.

Loaders read only the annotation files, so listing 214k VQAv2 questions costs seconds and no
image I/O. Pixels are decoded when the runner asks for them (``ImageRef.load``), in whatever
order and batch it likes; a missing or broken image then raises :class:`BadImage`, which the
runner counts and reports while the run goes on, instead of stopping a long evaluation at load
time. Parquet images are read one row group at a time and the last few row groups are cached,
so a batch of neighbouring rows costs one read, and a 30 GB parquet never sits in memory.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vlm_retain.data.images import BadImage, open_rgb

__all__ = ["BadImage", "EvalItem", "ImageRef"]

_ROW_GROUP_CACHE_SIZE = 4
_cache_lock = threading.Lock()
_row_group_cache: OrderedDict[tuple[str, int, str], list[Any]] = OrderedDict()


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where an item's image lives: a file, raw encoded bytes, or one row of a parquet file.

    Build it with :meth:`from_path`, :meth:`from_bytes` or :meth:`from_parquet`. ``key`` names
    the image (several VQA questions share one), so a runner or a retrieval gallery can encode
    each image once.
    """

    key: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    row_group: int = -1
    row: int = -1
    column: str = "image"

    @classmethod
    def from_path(cls, path: Path | str) -> ImageRef:
        """An image file, opened only when loaded (it may be missing until then)."""
        return cls(key=str(path), path=Path(path))

    @classmethod
    def from_bytes(cls, data: bytes, key: str) -> ImageRef:
        """Encoded image bytes held in memory (PNG, JPEG...)."""
        return cls(key=key, data=data)

    @classmethod
    def from_parquet(
        cls, path: Path | str, row_group: int, row: int, *, column: str = "image"
    ) -> ImageRef:
        """Row ``row`` of row group ``row_group`` of a parquet file whose ``column`` holds the
        Hugging Face image struct ``{bytes, path}``; nothing is read until :meth:`load`."""
        path = Path(path)
        return cls(
            key=f"{path}#{row_group}:{row}", path=path, row_group=row_group, row=row, column=column
        )

    @property
    def in_parquet(self) -> bool:
        """True for a parquet row (``path`` is then the parquet file, not an image)."""
        return self.row_group >= 0

    def load(self) -> Image.Image:
        """Decode the image and return it in RGB; raise :class:`BadImage` with a short reason
        (``image missing``, ``unreadable image (...)``, ``truncated image (...)``...)."""
        if self.data is not None:
            return _decode(io.BytesIO(self.data))
        if self.path is None:
            raise BadImage("no image")
        if self.in_parquet:
            return _decode(io.BytesIO(_parquet_image_bytes(self)))
        return _decode(self.path)


def _decode(source: Path | io.BytesIO) -> Image.Image:
    """Decode fully to RGB with the pixel limit, as every other reader of images does."""
    return open_rgb(source)


def _parquet_image_bytes(ref: ImageRef) -> bytes:
    assert ref.path is not None
    cache_key = (str(ref.path), ref.row_group, ref.column)
    with _cache_lock:
        rows = _row_group_cache.get(cache_key)
        if rows is not None:
            _row_group_cache.move_to_end(cache_key)
    if rows is None:
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(ref.path).read_row_group(ref.row_group, columns=[ref.column])
        except FileNotFoundError:
            raise BadImage("image missing (parquet file gone)") from None
        except (OSError, ValueError) as exc:
            raise BadImage(f"unreadable parquet row group ({exc})") from None
        rows = table.column(ref.column).to_pylist()
        with _cache_lock:
            _row_group_cache[cache_key] = rows
            while len(_row_group_cache) > _ROW_GROUP_CACHE_SIZE:
                _row_group_cache.popitem(last=False)
    if not 0 <= ref.row < len(rows):
        raise BadImage(f"row {ref.row} not in row group {ref.row_group}")
    cell = rows[ref.row]
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not data:
        raise BadImage("image missing (no bytes in the parquet cell)")
    return bytes(data)


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One thing to evaluate, in the shape every metric needs.

    - ``reference``: the one expected text (OCR);
    - ``answers``: the human answers (VQA: ten; DocVQA: one or more for ANLS);
    - ``references``: reference captions (captioning, and retrieval: the image's captions);
    - ``fields``: what a report may group by or a runner may record (``split``, ``image_id``,
      ``answer_type``, ``question_type``, ``lang``...). Always JSON-serialisable.
    """

    id: str
    image: ImageRef
    question: str | None = None
    reference: str | None = None
    answers: list[str] | None = None
    references: list[str] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
