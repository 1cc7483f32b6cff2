"""Flickr30k captions: Karpathy's ``dataset_flickr30k.json`` (default: the standard 1,000-image
test split) with its image folder, or lmms-lab ``flickr30k`` parquet.

Layout on disk::

    karpathy/dataset_flickr30k.json (or beside the images)
    flickr30k-images/1000092795.jpg ...   (or images/, or the folder passed as ``images``)

The lmms-lab parquet holds all 31,783 images in one ``test`` split, Karpathy's train images
included: its numbers are not Karpathy-test numbers (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vlm_retain.data.benchmarks.common import (
    PARQUET_SPLIT_PREFERENCE,
    choose_split,
    require_one,
    unique_ids,
)
from vlm_retain.data.benchmarks.items import EvalItem
from vlm_retain.data.benchmarks.karpathy import load_karpathy
from vlm_retain.data.benchmarks.parquet import check_columns, iter_rows, shards_by_split
from vlm_retain.errors import InputError

KARPATHY_FLICKR = "dataset_flickr30k.json"
PARQUET_COLUMNS = ("image", "caption", "filename")


def load_flickr30k_karpathy(
    path: Path, *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """One Karpathy split of Flickr30k (default ``test``: 1,000 images, 5 captions each)."""
    return load_karpathy(Path(path), "flickr30k", split=split, images=images)


def load_flickr30k_parquet(files: Sequence[Path], *, split: str | None = None) -> list[EvalItem]:
    """lmms-lab ``flickr30k`` shards: every Flickr30k image (its one split is ``test``)."""
    groups = shards_by_split(files)
    chosen = choose_split(groups, split, PARQUET_SPLIT_PREFERENCE, Path(files[0]).parent)
    shards = groups[chosen]
    for shard in shards:
        check_columns(shard, PARQUET_COLUMNS)
    items = [
        EvalItem(
            id=Path(str(row["filename"])).stem,
            image=image,
            references=list(row["caption"]) if row.get("caption") else None,
            fields={
                "split": chosen,
                "filename": row["filename"],
                "img_id": row.get("img_id"),
                "references_from": "lmms-lab flickr30k (all 31,783 images, not Karpathy test)",
            },
        )
        for image, row in iter_rows(shards, ("caption", "img_id", "filename"))
    ]
    if items and all(item.references is None for item in items):
        raise InputError(f"split {chosen!r} has no captions", path=shards[0])
    unique_ids((item.id for item in items), shards[0], "filename")
    return items


def load_flickr30k(
    sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """Load from what discovery found: Karpathy's file, or parquet shards."""
    sources = [Path(s) for s in sources]
    shards = [s for s in sources if s.suffix == ".parquet"]
    if shards:
        return load_flickr30k_parquet(shards, split=split)
    path = require_one(sources, f"{KARPATHY_FLICKR} files")
    return load_flickr30k_karpathy(path, split=split, images=images)
