"""Writers and validators of the official VQAv2, COCO captions and Karpathy split layouts.

The synthetic world is written in the real benchmarks' file layouts so that the very loaders,
prompts and metrics used for VQAv2, COCO and Flickr30k run unchanged on it. These functions are
kept free of anything synthetic so the benchmark loaders can reuse the validators on the real
files. The layouts, as the maintainers ship them:

- VQAv2 (GT-Vision-Lab/VQA, ``PythonHelperTools/vqaTools/vqa.py`` and ``vqaEvalDemo.py``):
  ``Questions/v2_OpenEnded_mscoco_<subtype>_questions.json`` =
  ``{info, task_type: "Open-Ended", data_type: "mscoco", license, data_subtype,
  questions: [{image_id, question, question_id}]}`` and
  ``Annotations/v2_mscoco_<subtype>_annotations.json`` =
  ``{info, license, data_subtype, annotations: [{question_type, multiple_choice_answer,
  answers: [{answer, answer_confidence, answer_id}] (ten, ids 1..10), image_id, answer_type,
  question_id}]}``; images ``<subtype>/COCO_<subtype>_<image_id:012d>.<ext>``.
- COCO captions: ``annotations/captions_<subtype>.json`` = ``{info, images: [{license,
  file_name, coco_url, height, width, date_captured, flickr_url, id}], licenses: [{url, id,
  name}], annotations: [{image_id, id, caption}]}`` plus ``type: "captions"``, which the
  original coco-caption toolkit's ``loadRes`` copies (and fails without).
- Karpathy splits: ``dataset_coco.json`` = ``{images: [{filepath, sentids, filename, imgid,
  split, sentences: [{tokens, raw, imgid, sentid}], cocoid}], dataset: "coco"}``;
  ``dataset_flickr30k.json`` is the same without ``filepath`` and ``cocoid``.

JSON is written compact, UTF-8, keys in a fixed order: same content, same bytes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_text

VQA_TASK_TYPE = "Open-Ended"
VQA_DATA_TYPE = "mscoco"
ANSWER_TYPES = ("yes/no", "number", "other")
ANSWER_CONFIDENCES = ("yes", "maybe", "no")
ANSWERS_PER_QUESTION = 10
CAPTIONS_PER_IMAGE = 5
KARPATHY_SPLITS = ("train", "val", "test", "restval")
KARPATHY_DATASETS = ("coco", "flickr30k")

#: The official question types of VQA real images (GT-Vision-Lab/VQA,
#: QuestionTypes/mscoco_question_types.txt). A question's type is the longest one it starts with.
MSCOCO_QUESTION_TYPES: tuple[str, ...] = (
    "how many", "is the", "what", "what color is the", "what is the", "is this", "is this a",
    "what is", "are the", "what kind of", "is there a", "what type of", "is it", "what are the",
    "where is the", "is there", "does the", "what color are the", "are these", "are there",
    "which", "is", "what is the man", "is the man", "are", "how", "does this", "what is on the",
    "what does the", "how many people are", "what is in the", "what is this", "do", "what are",
    "are they", "what time", "what sport is", "are there any", "is he", "what color is", "why",
    "where are the", "what color", "who is", "what animal is", "is the woman", "is this an",
    "do you", "how many people are in", "what room is", "has", "is this person",
    "what is the woman", "can you", "why is the", "is the person", "what is the color of the",
    "what is the person", "could", "was", "is that a", "what number is", "what is the name",
    "what brand",
)  # fmt: skip


def vqa_question_type(question: str) -> str:
    """VQAv2's ``question_type``: the longest official type the question's words start with
    (``"none of the above"`` when none does, as in the official files)."""
    words = re.findall(r"[a-z0-9']+", question.lower())
    best = ""
    for qtype in MSCOCO_QUESTION_TYPES:
        parts = qtype.split()
        if words[: len(parts)] == parts and len(parts) > len(best.split()):
            best = qtype
    return best or "none of the above"


def coco_image_name(subtype: str, image_id: int, ext: str = "png") -> str:
    """COCO's image file name: ``COCO_<subtype>_<image_id:012d>.<ext>``."""
    return f"COCO_{subtype}_{image_id:012d}.{ext}"


def vqa_file_names(subtype: str) -> tuple[str, str]:
    """``(Questions/..., Annotations/...)`` relative paths of one VQAv2 subtype."""
    return (
        f"Questions/v2_OpenEnded_mscoco_{subtype}_questions.json",
        f"Annotations/v2_mscoco_{subtype}_annotations.json",
    )


def coco_captions_name(subtype: str) -> str:
    """``annotations/captions_<subtype>.json``, relative to the COCO root."""
    return f"annotations/captions_{subtype}.json"


@dataclass(frozen=True)
class VqaItem:
    """One question with its ten human answers, as ``(answer, answer_confidence)`` pairs."""

    question_id: int
    image_id: int
    question: str
    answer_type: str
    answers: tuple[tuple[str, str], ...]
    question_type: str = ""

    @property
    def multiple_choice_answer(self) -> str:
        """The most frequent answer (first seen wins a tie)."""
        return Counter(answer for answer, _ in self.answers).most_common(1)[0][0]


@dataclass(frozen=True)
class CaptionImage:
    """One image with its reference captions, for the COCO and Karpathy layouts.

    ``folder`` is the image's folder under the image root (COCO's ``train2014``); ``split`` is
    the Karpathy split name.
    """

    image_id: int
    folder: str
    file_name: str
    width: int
    height: int
    split: str
    captions: tuple[str, ...]


def vqa_documents(
    items: Sequence[VqaItem], *, subtype: str, info: dict[str, Any], license: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The questions and annotations JSON objects of one subtype."""
    questions = {
        "info": info,
        "task_type": VQA_TASK_TYPE,
        "data_type": VQA_DATA_TYPE,
        "license": license,
        "data_subtype": subtype,
        "questions": [
            {"image_id": item.image_id, "question": item.question, "question_id": item.question_id}
            for item in items
        ],
    }
    annotations = {
        "info": info,
        "license": license,
        "data_subtype": subtype,
        "annotations": [
            {
                "question_type": item.question_type or vqa_question_type(item.question),
                "multiple_choice_answer": item.multiple_choice_answer,
                "answers": [
                    {"answer": answer, "answer_confidence": confidence, "answer_id": number}
                    for number, (answer, confidence) in enumerate(item.answers, start=1)
                ],
                "image_id": item.image_id,
                "answer_type": item.answer_type,
                "question_id": item.question_id,
            }
            for item in items
        ],
        "data_type": VQA_DATA_TYPE,
    }
    return questions, annotations


def write_vqa(
    root: Path,
    subtype: str,
    items: Sequence[VqaItem],
    *,
    info: dict[str, Any],
    license: dict[str, Any],
) -> tuple[Path, Path]:
    """Write one subtype's questions and annotations under ``root``; return both paths."""
    questions, annotations = vqa_documents(items, subtype=subtype, info=info, license=license)
    q_name, a_name = vqa_file_names(subtype)
    write_json(root / q_name, questions)
    write_json(root / a_name, annotations)
    return root / q_name, root / a_name


def coco_captions_document(
    images: Sequence[CaptionImage], *, info: dict[str, Any], licenses: list[dict[str, Any]]
) -> dict[str, Any]:
    """A ``captions_<subtype>.json`` object; caption ids are ``image_id * 10 + k``."""
    license_id = licenses[0]["id"] if licenses else 0
    return {
        "info": info,
        "images": [
            {
                "license": license_id,
                "file_name": image.file_name,
                "coco_url": "",
                "height": image.height,
                "width": image.width,
                "date_captured": "",
                "flickr_url": "",
                "id": image.image_id,
            }
            for image in images
        ],
        "licenses": licenses,
        "type": "captions",
        "annotations": [
            {"image_id": image.image_id, "id": image.image_id * 10 + k, "caption": caption}
            for image in images
            for k, caption in enumerate(image.captions)
        ],
    }


def karpathy_tokens(raw: str) -> list[str]:
    """Karpathy's ``tokens``: the caption lowercased, split into words, punctuation dropped."""
    return re.findall(r"\w+", raw.lower())


def karpathy_document(images: Sequence[CaptionImage], *, dataset: str) -> dict[str, Any]:
    """A ``dataset_<dataset>.json`` object; ``imgid``/``sentid`` count from 0 in list order.

    For ``flickr30k`` (whose images all sit in one folder) ``filename`` is
    ``<folder>/<file_name>``, so it resolves against the same image root as the COCO form.
    """
    if dataset not in KARPATHY_DATASETS:
        raise ValueError(f"dataset must be one of {KARPATHY_DATASETS}, not {dataset!r}")
    entries = []
    sentid = 0
    for imgid, image in enumerate(images):
        sentences = []
        for caption in image.captions:
            sentences.append(
                {
                    "tokens": karpathy_tokens(caption),
                    "raw": caption,
                    "imgid": imgid,
                    "sentid": sentid,
                }
            )
            sentid += 1
        sentids = [s["sentid"] for s in sentences]
        if dataset == "coco":
            entries.append(
                {
                    "filepath": image.folder,
                    "sentids": sentids,
                    "filename": image.file_name,
                    "imgid": imgid,
                    "split": image.split,
                    "sentences": sentences,
                    "cocoid": image.image_id,
                }
            )
        else:
            entries.append(
                {
                    "sentids": sentids,
                    "imgid": imgid,
                    "sentences": sentences,
                    "split": image.split,
                    "filename": f"{image.folder}/{image.file_name}",
                }
            )
    return {"images": entries, "dataset": dataset}


def write_json(path: Path, obj: Any) -> None:
    """Compact UTF-8 JSON with a final newline, written atomically (same object, same bytes)."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


# --- validators: each returns every problem found (empty list = valid) -------------------------


def vqa_problems(
    questions: Any, annotations: Any, *, answers_per_question: int = ANSWERS_PER_QUESTION
) -> list[str]:
    """Everything that makes a questions/annotations pair differ from the official layout."""
    problems: list[str] = []
    problems += _missing(
        questions,
        ("info", "task_type", "data_type", "license", "data_subtype", "questions"),
        "questions",
    )
    problems += _missing(
        annotations, ("info", "license", "data_subtype", "annotations"), "annotations"
    )
    if problems:
        return problems
    if questions["task_type"] != VQA_TASK_TYPE:
        problems.append(f"questions: task_type {questions['task_type']!r} is not 'Open-Ended'")
    if questions["data_subtype"] != annotations["data_subtype"]:
        problems.append("questions and annotations name different data_subtype")
    by_qid: dict[int, dict[str, Any]] = {}
    for n, question in enumerate(questions["questions"]):
        where = f"questions[{n}]"
        problems += _missing(question, ("image_id", "question", "question_id"), where)
        qid = question.get("question_id")
        if qid in by_qid:
            problems.append(f"{where}: duplicate question_id {qid}")
        by_qid[qid] = question
    seen: set[int] = set()
    for n, ann in enumerate(annotations["annotations"]):
        where = f"annotations[{n}]"
        keys = (
            "question_type",
            "multiple_choice_answer",
            "answers",
            "image_id",
            "answer_type",
            "question_id",
        )
        missing = _missing(ann, keys, where)
        if missing:
            problems += missing
            continue
        qid = ann["question_id"]
        if qid in seen:
            problems.append(f"{where}: duplicate question_id {qid}")
        seen.add(qid)
        if qid not in by_qid:
            problems.append(f"{where}: question_id {qid} has no question")
        elif by_qid[qid].get("image_id") != ann["image_id"]:
            problems.append(f"{where}: image_id differs from the question's")
        if ann["answer_type"] not in ANSWER_TYPES:
            problems.append(f"{where}: answer_type {ann['answer_type']!r}")
        problems += _answer_problems(ann, where, answers_per_question)
    for qid in by_qid.keys() - seen:
        problems.append(f"question_id {qid} has no annotation")
    return problems


def _answer_problems(ann: dict[str, Any], where: str, expected: int) -> list[str]:
    answers = ann["answers"]
    if not isinstance(answers, list) or len(answers) != expected:
        count = len(answers) if isinstance(answers, list) else "no list of"
        return [f"{where}: {count} answers, expected {expected}"]
    problems: list[str] = []
    for answer in answers:
        problems += _missing(answer, ("answer", "answer_confidence", "answer_id"), where)
    if problems:
        return problems
    if sorted(a["answer_id"] for a in answers) != list(range(1, expected + 1)):
        problems.append(f"{where}: answer_id are not 1..{expected}")
    if any(a["answer_confidence"] not in ANSWER_CONFIDENCES for a in answers):
        problems.append(f"{where}: answer_confidence outside {ANSWER_CONFIDENCES}")
    counts = Counter(a["answer"] for a in answers)
    top = max(counts.values())
    if counts.get(ann["multiple_choice_answer"], 0) != top:
        problems.append(f"{where}: multiple_choice_answer is not the most frequent answer")
    return problems


def coco_captions_problems(
    doc: Any, *, captions_per_image: int | None = CAPTIONS_PER_IMAGE
) -> list[str]:
    """Problems of a ``captions_*.json``; ``captions_per_image=None`` accepts any count >= 1
    (real COCO has a few images with six or seven)."""
    problems = _missing(doc, ("info", "images", "licenses", "annotations"), "captions")
    if problems:
        return problems
    image_ids: set[int] = set()
    for n, image in enumerate(doc["images"]):
        where = f"images[{n}]"
        problems += _missing(image, ("id", "file_name", "width", "height"), where)
        if image.get("id") in image_ids:
            problems.append(f"{where}: duplicate id {image.get('id')}")
        image_ids.add(image.get("id"))
    per_image: Counter[int] = Counter()
    ann_ids: set[int] = set()
    for n, ann in enumerate(doc["annotations"]):
        where = f"annotations[{n}]"
        problems += _missing(ann, ("id", "image_id", "caption"), where)
        if ann.get("id") in ann_ids:
            problems.append(f"{where}: duplicate id {ann.get('id')}")
        ann_ids.add(ann.get("id"))
        if ann.get("image_id") not in image_ids:
            problems.append(f"{where}: image_id {ann.get('image_id')} is not in images")
        if not str(ann.get("caption", "")).strip():
            problems.append(f"{where}: empty caption")
        per_image[ann.get("image_id")] += 1
    for image_id in sorted(image_ids, key=str):
        count = per_image.get(image_id, 0)
        if (captions_per_image is None and count < 1) or (
            captions_per_image is not None and count != captions_per_image
        ):
            problems.append(f"image {image_id}: {count} captions")
    return problems


def karpathy_problems(
    doc: Any, *, dataset: str, captions_per_image: int | None = CAPTIONS_PER_IMAGE
) -> list[str]:
    """Problems of a Karpathy ``dataset_<dataset>.json``."""
    problems = _missing(doc, ("images", "dataset"), "dataset")
    if problems:
        return problems
    if doc["dataset"] != dataset:
        problems.append(f"dataset is {doc['dataset']!r}, expected {dataset!r}")
    keys: tuple[str, ...] = ("sentids", "filename", "imgid", "split", "sentences")
    if dataset == "coco":
        keys += ("filepath", "cocoid")
    imgids: set[int] = set()
    sentids: set[int] = set()
    for n, image in enumerate(doc["images"]):
        where = f"images[{n}]"
        missing = _missing(image, keys, where)
        if missing:
            problems += missing
            continue
        if image["imgid"] in imgids:
            problems.append(f"{where}: duplicate imgid {image['imgid']}")
        imgids.add(image["imgid"])
        if image["split"] not in KARPATHY_SPLITS:
            problems.append(f"{where}: split {image['split']!r} not in {KARPATHY_SPLITS}")
        sentences = image["sentences"]
        if captions_per_image is not None and len(sentences) != captions_per_image:
            problems.append(f"{where}: {len(sentences)} sentences")
        for sentence in sentences:
            missing = _missing(sentence, ("tokens", "raw", "imgid", "sentid"), where)
            if missing:
                problems += missing
                continue
            if sentence["imgid"] != image["imgid"]:
                problems.append(f"{where}: sentence imgid differs from the image's")
            if sentence["sentid"] in sentids:
                problems.append(f"{where}: duplicate sentid {sentence['sentid']}")
            sentids.add(sentence["sentid"])
        if [s.get("sentid") for s in sentences] != image["sentids"]:
            problems.append(f"{where}: sentids do not list the sentences' sentid")
    return problems


def require_valid(problems: Iterable[str], path: Path) -> None:
    """Raise one :class:`InputError` naming ``path`` and the first problems, if any."""
    found = list(problems)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise InputError("; ".join(found[:3]) + more, path=path)


def _missing(obj: Any, keys: Iterable[str], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected a JSON object"]
    return [f"{where}: missing key {key!r}" for key in keys if key not in obj]
