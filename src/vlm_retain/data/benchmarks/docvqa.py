"""DocVQA (single-page document questions), where the user has the files: the official
``val_v1.0.json`` with its ``documents/`` folder, or lmms-lab ``DocVQA`` parquet. Scored with
ANLS over the given answers.

Layout on disk (rrc.cvc.uab.es, task 1)::

    val/val_v1.0.json   {"dataset_split": "val", "data": [{"questionId", "question",
                         "image": "documents/<name>.png", "answers": [...], "docId", ...}]}
    val/documents/<name>.png

The ``image`` field is relative to the JSON's folder. The test answers are not public.
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

DOCVQA_FILE = re.compile(r"^(?P<split>train|val|test)_v1\.0(?:_withQT)?\.json$")
_ITEM_KEYS = ("questionId", "question", "image")
PARQUET_COLUMNS = ("questionId", "question", "answers", "image")
SPLIT_PREFERENCE = ("val", "validation")


def docvqa_split(path: Path) -> str | None:
    """``val`` for ``val_v1.0.json`` (or ``val_v1.0_withQT.json``); None for other names."""
    match = DOCVQA_FILE.match(Path(path).name)
    return match.group("split") if match else None


def load_docvqa_json(path: Path, *, images: Path | None = None) -> list[EvalItem]:
    """All questions of one DocVQA file; the test file (no answers) is refused."""
    path = Path(path)
    doc = read_answered_questions(path, _ITEM_KEYS, dataset="DocVQA", hint="use val_v1.0.json")
    split = str(doc.get("dataset_split") or docvqa_split(path) or "val")
    candidates = [path.parent, path.parent.parent]
    if images is not None:
        candidates = [Path(images), Path(images).parent, *candidates]
    base = image_base(candidates, [str(entry["image"]) for entry in doc["data"][:3]])
    items = [
        EvalItem(
            id=str(entry["questionId"]),
            image=ImageRef.from_path(base / str(entry["image"])),
            question=entry["question"],
            answers=[str(a) for a in entry["answers"]],
            fields={
                "split": split,
                "doc_id": entry.get("docId"),
                "question_types": entry.get("question_types"),
            },
        )
        for entry in doc["data"]
    ]
    unique_ids((item.id for item in items), path, "questionId")
    return items


def load_docvqa_parquet(files: Sequence[Path], *, split: str | None = None) -> list[EvalItem]:
    """lmms-lab ``DocVQA`` shards (default split ``validation``)."""
    groups = shards_by_split(files)
    chosen = choose_split(groups, split, PARQUET_SPLIT_PREFERENCE, Path(files[0]).parent)
    shards = groups[chosen]
    for shard in shards:
        check_columns(shard, PARQUET_COLUMNS)
    columns = ("questionId", "question", "answers", "docId", "question_types")
    items = [
        EvalItem(
            id=str(row["questionId"]),
            image=image,
            question=row["question"],
            answers=[str(a) for a in row["answers"]] if row.get("answers") else None,
            fields={
                "split": chosen,
                "doc_id": row.get("docId"),
                "question_types": row.get("question_types"),
            },
        )
        for image, row in iter_rows(shards, columns)
    ]
    if items and all(item.answers is None for item in items):
        raise InputError(f"split {chosen!r} has no answers", path=shards[0], hint="use validation")
    unique_ids((item.id for item in items), shards[0], "questionId")
    return items


def load_docvqa(
    sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """Load from what discovery found: ``<split>_v1.0.json`` files or parquet shards."""
    sources = [Path(s) for s in sources]
    shards = [s for s in sources if s.suffix == ".parquet"]
    if shards:
        return load_docvqa_parquet(shards, split=split)
    by_split = one_per_key(sources, lambda s: docvqa_split(s) or s.stem, "DocVQA")
    if not by_split:
        raise InputError("no DocVQA <split>_v1.0.json given")
    chosen = choose_split(by_split, split, SPLIT_PREFERENCE, sources[0].parent)
    return load_docvqa_json(by_split[chosen], images=images)
