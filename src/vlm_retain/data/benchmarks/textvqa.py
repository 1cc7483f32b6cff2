"""TextVQA (reading text in natural images), where the user has the files: the official JSON
with its image folder, or lmms-lab ``textvqa`` parquet. Scored with VQA accuracy.

Layout on disk (textvqa.org)::

    TextVQA_0.5.1_val.json   {"dataset_type": "val", "data": [{"question_id", "question",
                              "image_id", "answers": [ten strings], ...}]}
    train_images/<image_id>.jpg   (the val images are in train_images/, as shipped)

An OCR fine-tune is most likely to shift exactly this skill, so it is worth running when the
files are at hand; nothing here downloads them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from vlm_retain.data.benchmarks.common import (
    PARQUET_SPLIT_PREFERENCE,
    choose_split,
    image_base,
    one_per_key,
    read_answered_questions,
    unique_ids,
)
from vlm_retain.data.benchmarks.items import EvalItem, ImageRef
from vlm_retain.data.benchmarks.parquet import check_columns, iter_rows, shards_by_split
from vlm_retain.errors import InputError

TEXTVQA_FILE = re.compile(r"^TextVQA_[\d.]+_(?P<split>[a-z]+)\.json$")
_ITEM_KEYS = ("question_id", "question", "image_id")
PARQUET_COLUMNS = ("question_id", "question", "answers", "image")
SPLIT_PREFERENCE = ("val", "validation")


def textvqa_split(path: Path) -> str | None:
    """``val`` for ``TextVQA_0.5.1_val.json``; None for other names."""
    match = TEXTVQA_FILE.match(Path(path).name)
    return match.group("split") if match else None


def load_textvqa_json(path: Path, *, images: Path | None = None) -> list[EvalItem]:
    """All questions of one TextVQA file; the test file (no answers) is refused."""
    path = Path(path)
    doc = read_answered_questions(
        path, _ITEM_KEYS, dataset="TextVQA", hint="use TextVQA_0.5.1_val.json"
    )
    split = str(doc.get("dataset_type") or textvqa_split(path) or "val")
    folder = "test_images" if split == "test" else "train_images"
    here, up = path.parent, path.parent.parent
    candidates = [here / folder, here / "images", up / folder, up / "images", here]
    if images is not None:
        candidates = [Path(images), Path(images) / folder, *candidates]
    probes = [f"{entry['image_id']}.jpg" for entry in doc["data"][:3]]
    base = image_base(candidates, probes)
    items = [
        EvalItem(
            id=str(entry["question_id"]),
            image=ImageRef.from_path(base / f"{entry['image_id']}.jpg"),
            question=entry["question"],
            answers=[str(a) for a in entry["answers"]],
            fields={"split": split, "image_id": entry["image_id"]},
        )
        for entry in doc["data"]
    ]
    unique_ids((item.id for item in items), path, "question_id")
    return items


def load_textvqa_parquet(files: Sequence[Path], *, split: str | None = None) -> list[EvalItem]:
    """lmms-lab ``textvqa`` shards (default split ``validation``)."""
    groups = shards_by_split(files)
    chosen = choose_split(groups, split, PARQUET_SPLIT_PREFERENCE, Path(files[0]).parent)
    shards = groups[chosen]
    for shard in shards:
        check_columns(shard, PARQUET_COLUMNS)
    items = [
        EvalItem(
            id=str(row["question_id"]),
            image=image,
            question=row["question"],
            answers=[str(a) for a in row["answers"]] if row.get("answers") else None,
            fields={"split": chosen, "image_id": row.get("image_id")},
        )
        for image, row in iter_rows(shards, ("question_id", "question", "answers", "image_id"))
    ]
    if items and all(item.answers is None for item in items):
        raise InputError(f"split {chosen!r} has no answers", path=shards[0], hint="use validation")
    unique_ids((item.id for item in items), shards[0], "question_id")
    return items


def load_textvqa(
    sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """Load from what discovery found: ``TextVQA_*_<split>.json`` files or parquet shards."""
    sources = [Path(s) for s in sources]
    shards = [s for s in sources if s.suffix == ".parquet"]
    if shards:
        return load_textvqa_parquet(shards, split=split)
    by_split = one_per_key(sources, lambda s: textvqa_split(s) or s.stem, "TextVQA")
    if not by_split:
        raise InputError("no TextVQA_<version>_<split>.json given")
    chosen = choose_split(by_split, split, SPLIT_PREFERENCE, sources[0].parent)
    return load_textvqa_json(by_split[chosen], images=images)
