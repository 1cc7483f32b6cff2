"""COCO captions: Karpathy's test split (the papers' "COCO Caption"), the official
``captions_<subtype>.json`` files, or lmms-lab ``COCO-Caption`` parquet.

Layouts on disk::

    karpathy/dataset_coco.json                  the split (default: test, 5,000 images)
    coco/annotations/captions_<subtype>.json    the official captions (val2014, or the world's
                                                train/val/test)
    images: <subtype>/COCO_<subtype>_<id:012d>.jpg under the usual roots

With both, the Karpathy file chooses the images and the official file supplies the reference
strings (what LAVIS-style ``coco_karpathy_test_gt.json`` files hold); with only the official
file, every image of one subtype is an item (what lmms-eval's ``coco2014_cap_val`` scores).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm_retain.data.benchmarks.common import (
    JSON_SPLIT_PREFERENCE,
    PARQUET_SPLIT_PREFERENCE,
    check_layout,
    choose_split,
    image_base,
    one_per_key,
    read_json,
    require_one,
    unique_ids,
)
from vlm_retain.data.benchmarks.items import EvalItem, ImageRef
from vlm_retain.data.benchmarks.karpathy import load_karpathy
from vlm_retain.data.benchmarks.parquet import check_columns, iter_rows, shards_by_split
from vlm_retain.data.synthetic.layouts import coco_captions_problems
from vlm_retain.errors import InputError

KARPATHY_COCO = "dataset_coco.json"
_CAPTIONS = re.compile(r"^captions_(?P<subtype>.+)\.json$")
PARQUET_COLUMNS = ("question_id", "image", "answer")


def captions_subtype(path: Path) -> str | None:
    """``val2014`` for ``captions_val2014.json``; None for any other name."""
    match = _CAPTIONS.match(Path(path).name)
    return match.group("subtype") if match else None


def read_captions(path: Path) -> dict[str, Any]:
    """A validated ``captions_<subtype>.json`` (any number of captions per image >= 1)."""
    doc = read_json(path)
    check_layout(coco_captions_problems(doc, captions_per_image=None), path)
    return doc


def captions_by_image(doc: dict[str, Any]) -> dict[int, list[str]]:
    """Image id -> its captions, in file order."""
    refs: dict[int, list[str]] = {}
    for ann in doc["annotations"]:
        refs.setdefault(ann["image_id"], []).append(str(ann["caption"]).strip())
    return refs


def load_coco_captions(path: Path, *, images: Path | None = None) -> list[EvalItem]:
    """Every image of one official captions file, with all its captions as references."""
    path = Path(path)
    subtype = captions_subtype(path) or path.stem
    doc = read_captions(path)
    refs = captions_by_image(doc)
    root = path.parent.parent if path.parent.name == "annotations" else path.parent
    candidates = [
        root / subtype,
        root / "images" / subtype,
        root.parent / "images" / subtype,
        root.parent / subtype,
    ]
    if images is not None:
        candidates = [Path(images) / subtype, Path(images), *candidates]
    base = image_base(candidates, [image["file_name"] for image in doc["images"][:3]])
    items = [
        EvalItem(
            id=str(image["id"]),
            image=ImageRef.from_path(base / image["file_name"]),
            references=refs[image["id"]],
            fields={
                "split": subtype,
                "image_id": image["id"],
                "file_name": image["file_name"],
                "references_from": path.name,
            },
        )
        for image in doc["images"]
    ]
    unique_ids((item.id for item in items), path, "image id")
    return items


def load_coco_karpathy(
    path: Path,
    *,
    split: str | None = None,
    images: Path | None = None,
    captions: Sequence[Path] = (),
) -> list[EvalItem]:
    """One Karpathy split of ``dataset_coco.json``; references from the official ``captions``
    files when they cover every chosen image, else Karpathy's ``raw`` sentences."""
    refs: dict[int, list[str]] = {}
    names = []
    for file in captions:
        refs.update(captions_by_image(read_captions(Path(file))))
        names.append(Path(file).name)
    return load_karpathy(
        Path(path),
        "coco",
        split=split,
        images=images,
        references=refs or None,
        references_from="+".join(names),
    )


def load_coco_parquet(files: Sequence[Path], *, split: str | None = None) -> list[EvalItem]:
    """lmms-lab ``COCO-Caption`` shards (default split ``val``: all 40,504 val2014 images)."""
    groups = shards_by_split(files)
    chosen = choose_split(groups, split, PARQUET_SPLIT_PREFERENCE, Path(files[0]).parent)
    shards = groups[chosen]
    for shard in shards:
        check_columns(shard, PARQUET_COLUMNS)
    items = []
    for image, row in iter_rows(shards, ("question_id", "answer", "id", "file_name")):
        image_id = row.get("id")
        if image_id is None:  # lmms-eval parses it from the file name in question_id
            image_id = int(str(row["question_id"]).rsplit("_", 1)[-1].split(".")[0])
        items.append(
            EvalItem(
                id=str(image_id),
                image=image,
                references=list(row["answer"]) if row.get("answer") else None,
                fields={
                    "split": chosen,
                    "image_id": image_id,
                    "file_name": row.get("file_name") or row["question_id"],
                },
            )
        )
    if items and all(item.references is None for item in items):
        raise InputError(
            f"split {chosen!r} has no reference captions (COCO test is scored on the server)",
            path=shards[0],
            hint="use the val split",
        )
    unique_ids((item.id for item in items), shards[0], "image id")
    return items


def load_coco(
    sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """Load from what discovery found: Karpathy's file (plus official captions), official
    captions files alone, or parquet shards."""
    sources = [Path(s) for s in sources]
    shards = [s for s in sources if s.suffix == ".parquet"]
    if shards:
        return load_coco_parquet(shards, split=split)
    karpathy = [s for s in sources if s.name == KARPATHY_COCO]
    captions = [s for s in sources if captions_subtype(s) is not None]
    if karpathy:
        return load_coco_karpathy(
            require_one(karpathy, f"{KARPATHY_COCO} files"),
            split=split,
            images=images,
            captions=_matching(
                list(one_per_key(captions, captions_subtype, "COCO captions").values())
            ),
        )
    if not captions:
        raise InputError(
            "no dataset_coco.json, captions_<subtype>.json or COCO-Caption parquet given"
        )
    by_subtype = one_per_key(captions, captions_subtype, "COCO captions")
    chosen = choose_split(by_subtype, split, JSON_SPLIT_PREFERENCE, captions[0].parent)
    return load_coco_captions(by_subtype[chosen], images=images)


def _matching(captions: Sequence[Path]) -> list[Path]:
    """Captions files worth reading for Karpathy's val/test: those of the val subtypes (real
    COCO: ``captions_val2014.json``; the world: ``val`` and ``test``). The train file is
    large and holds none of those images."""
    return [c for c in captions if "train" not in (captions_subtype(c) or "")]
