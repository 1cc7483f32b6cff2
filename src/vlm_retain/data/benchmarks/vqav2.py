"""VQAv2 in the official layout (and the synthetic world's ``vqav2/`` and ``signs/``), or as
lmms-lab parquet.

Official layout (GT-Vision-Lab/VQA), one pair per subtype (``val2014``; the world: ``test``)::

    ROOT/Questions/v2_OpenEnded_mscoco_<subtype>_questions.json
    ROOT/Annotations/v2_mscoco_<subtype>_annotations.json
    images: <subtype>/COCO_<subtype>_<image_id:012d>.<jpg|png> under ROOT, ROOT/images,
            ROOT/Images/mscoco, ROOT/../images or the folder passed as ``images``

The files are validated with the very validator the synthetic world is tested with
(:func:`~vlm_retain.data.synthetic.layouts.vqa_problems`), so a file that passes here is the
layout the official evaluation tools read. Each item carries the ten human answers, which the
VQA metric needs (the leave-one-out ``min(1, matches/3)`` average).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from vlm_retain.data.benchmarks.common import (
    JSON_SPLIT_PREFERENCE,
    PARQUET_SPLIT_PREFERENCE,
    check_layout,
    choose_split,
    image_base,
    read_json,
    require_one,
    unique_ids,
)
from vlm_retain.data.benchmarks.items import EvalItem, ImageRef
from vlm_retain.data.benchmarks.parquet import check_columns, iter_rows, shards_by_split
from vlm_retain.data.synthetic.layouts import coco_image_name, vqa_file_names, vqa_problems
from vlm_retain.errors import InputError

QUESTIONS_FILE = re.compile(r"^v2_OpenEnded_mscoco_(?P<subtype>.+)_questions\.json$")
_EXTENSIONS = ("jpg", "png", "jpeg")
PARQUET_COLUMNS = ("question_id", "question", "answers", "image")
_PARQUET_EXTRA = ("answer_type", "question_type", "image_id", "multiple_choice_answer")


def is_vqa_root(folder: Path) -> bool:
    """True when ``folder`` holds at least one official questions file."""
    return bool(question_subtypes(folder))


def question_subtypes(root: Path) -> list[str]:
    """Subtypes that have a questions file (with or without annotations)."""
    questions = Path(root) / "Questions"
    if not questions.is_dir():
        return []
    found = (QUESTIONS_FILE.match(name) for name in os.listdir(questions))
    return sorted(match.group("subtype") for match in found if match)


def annotated_subtypes(root: Path) -> list[str]:
    """Subtypes with both files: only those can be scored (VQAv2's test has no answers)."""
    return [s for s in question_subtypes(root) if (Path(root) / vqa_file_names(s)[1]).is_file()]


def load_vqav2_json(
    root: Path, *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """Items of one subtype of an official-layout folder (default: ``test`` if annotated, as in
    the synthetic world, else ``val2014``...). Raises InputError on a wrong layout."""
    root = Path(root)
    if not question_subtypes(root):
        raise InputError(
            "no Questions/v2_OpenEnded_mscoco_<subtype>_questions.json here",
            path=root,
            hint="point at the folder that holds Questions/ and Annotations/",
        )
    subtypes = annotated_subtypes(root)
    if not subtypes:
        raise InputError(
            "no Annotations/v2_mscoco_<subtype>_annotations.json for any questions file",
            path=root / "Annotations",
            hint="VQAv2 test answers are not public; use the val2014 annotations",
        )
    subtype = choose_split(subtypes, split, JSON_SPLIT_PREFERENCE, root / "Annotations")
    q_path, a_path = (root / name for name in vqa_file_names(subtype))
    questions, annotations = read_json(q_path), read_json(a_path)
    problems = vqa_problems(questions, annotations)
    if problems:
        blame = q_path if problems[0].startswith("questions") else a_path
        check_layout(problems, blame)
    by_qid = {q["question_id"]: q for q in questions["questions"]}
    anns = annotations["annotations"]
    base, ext = _image_folder(root, subtype, [a["image_id"] for a in anns[:3]], images)
    items = []
    for ann in anns:
        image_id = ann["image_id"]
        items.append(
            EvalItem(
                id=str(ann["question_id"]),
                image=ImageRef.from_path(base / coco_image_name(subtype, image_id, ext)),
                question=by_qid[ann["question_id"]]["question"],
                answers=[a["answer"] for a in ann["answers"]],
                fields={
                    "split": subtype,
                    "image_id": image_id,
                    "answer_type": ann["answer_type"],
                    "question_type": ann["question_type"],
                    "multiple_choice_answer": ann["multiple_choice_answer"],
                },
            )
        )
    return items


def _image_folder(
    root: Path, subtype: str, image_ids: Sequence[int], images: Path | None
) -> tuple[Path, str]:
    """The folder of this subtype's images and their extension (real COCO: jpg; world: png)."""
    candidates = [
        root / "images" / subtype,
        root / "Images" / "mscoco" / subtype,
        root / "Images" / subtype,
        root / subtype,
        root.parent / "images" / subtype,
        root.parent / subtype,
    ]
    if images is not None:
        candidates = [Path(images) / subtype, Path(images), *candidates]
    probes = [coco_image_name(subtype, i, ext) for i in image_ids for ext in _EXTENSIONS]
    base = image_base(candidates, probes)
    for ext in _EXTENSIONS:
        if any((base / coco_image_name(subtype, i, ext)).is_file() for i in image_ids):
            return base, ext
    prefix = f"COCO_{subtype}_"
    if base.is_dir():
        with os.scandir(base) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and "." in entry.name:
                    return base, entry.name.rsplit(".", 1)[1]
    return base, "jpg"


def load_vqav2_parquet(files: Sequence[Path], *, split: str | None = None) -> list[EvalItem]:
    """Items from lmms-lab ``VQAv2`` parquet shards (default split ``validation``)."""
    groups = shards_by_split(files)
    chosen = choose_split(groups, split, PARQUET_SPLIT_PREFERENCE, Path(files[0]).parent)
    shards = groups[chosen]
    for shard in shards:
        check_columns(shard, PARQUET_COLUMNS)
    items = []
    for image, row in iter_rows(shards, (*PARQUET_COLUMNS[:3], *_PARQUET_EXTRA)):
        answers = row.get("answers")
        items.append(
            EvalItem(
                id=str(row["question_id"]),
                image=image,
                question=row["question"],
                answers=[a["answer"] for a in answers] if answers else None,
                fields={"split": chosen, **{k: row[k] for k in _PARQUET_EXTRA if k in row}},
            )
        )
    if items and all(item.answers is None for item in items):
        raise InputError(
            f"split {chosen!r} has no answers (VQAv2 test answers are scored only on EvalAI)",
            path=shards[0],
            hint="use the validation split",
        )
    unique_ids((item.id for item in items), shards[0], "question_id")
    return items


def load_vqav2(
    sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
) -> list[EvalItem]:
    """Load from what discovery found: one official-layout folder, or parquet shards."""
    sources = [Path(s) for s in sources]
    shards = [s for s in sources if s.suffix == ".parquet"]
    if shards:
        return load_vqav2_parquet(shards, split=split)
    return load_vqav2_json(require_one(sources, "VQAv2 folders"), split=split, images=images)
