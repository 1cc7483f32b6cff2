"""The lmms-lab parquet layouts: which benchmark a file holds, its split, its rows.

lmms-eval reads its benchmarks from Hugging Face datasets published as parquet shards named
``<split>-NNNNN-of-MMMMM[-hash].parquet`` with the image as the struct ``{bytes, path}``. A user
who downloaded such a snapshot can point us at it; we recognise the benchmark by its columns
(only the footer is read), so folder names do not matter:

- VQAv2 (``lmms-lab/VQAv2``): ``question_id, question, answers: [{answer, answer_confidence,
  answer_id}], image, answer_type, question_type, image_id, multiple_choice_answer``;
- COCO-Caption (``lmms-lab/COCO-Caption``, ``COCO-Caption2017``): ``question_id`` (the file
  name), ``image, question, answer: [str], id`` (the COCO image id), ``file_name``...;
- Flickr30k (``lmms-lab/flickr30k``): ``image, caption: [str], sentids, img_id, filename``;
- TextVQA (``lmms-lab/textvqa``): ``question_id, question, answers: [str], image, image_id``...;
- DocVQA (``lmms-lab/DocVQA``): ``questionId, question, answers: [str], image, docId``...
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlm_retain.data.benchmarks.common import LAYOUT_HINT, check_layout
from vlm_retain.data.benchmarks.items import ImageRef
from vlm_retain.errors import InputError

PARQUET_KINDS = ("vqav2", "coco", "flickr30k", "textvqa", "docvqa")
_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_]+?)(?:-\d{5}-of-\d{5}.*)?\.parquet$")


def parquet_schema(path: Path) -> Any:
    """The arrow schema from the file footer; an unreadable file is an InputError naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable parquet ({exc})", path=path, hint=LAYOUT_HINT) from None


def parquet_kind(path: Path) -> str | None:
    """Which lmms-lab benchmark layout ``path`` has (one of :data:`PARQUET_KINDS`), or None."""
    import pyarrow as pa

    try:
        schema = parquet_schema(path)
    except InputError:
        return None
    names = set(schema.names)
    if "image" not in names:
        return None
    if "questionId" in names and "answers" in names:
        return "docvqa"
    if {"caption", "filename"} <= names:
        return "flickr30k"
    if {"answer", "question_id"} <= names and ("file_name" in names or "id" in names):
        return "coco"
    if {"answers", "question_id", "question"} <= names:
        answers = schema.field("answers").type
        if pa.types.is_list(answers) and pa.types.is_struct(answers.value_type):
            return "vqav2"
        return "textvqa"
    return None


def shard_split(path: Path) -> str:
    """The split a shard belongs to, from its name (``validation-00003-of-00068.parquet``)."""
    match = _SHARD.match(path.name)
    return match.group("split") if match else path.stem


def shards_by_split(files: Sequence[Path]) -> dict[str, list[Path]]:
    """Shards grouped by split, each list sorted so rows come in a stable order."""
    groups: dict[str, list[Path]] = {}
    for file in sorted(files):
        groups.setdefault(shard_split(file), []).append(file)
    return groups


def check_columns(path: Path, required: Sequence[str]) -> None:
    """Every required column present, or an InputError naming the file and the first missing."""
    names = set(parquet_schema(path).names)
    check_layout([f"missing column {name!r}" for name in required if name not in names], path)


def iter_rows(
    files: Sequence[Path], columns: Sequence[str], *, image_column: str = "image"
) -> Iterator[tuple[ImageRef, dict[str, Any]]]:
    """Yield ``(image reference, row without the image)`` over the shards, in order.

    Only ``columns`` are read now (text: small); the image column is left on disk and read
    row group by row group when an :class:`ImageRef` is loaded.
    """
    import pyarrow.parquet as pq

    for file in files:
        present = set(parquet_schema(file).names)
        wanted = [name for name in columns if name in present]
        handle = pq.ParquetFile(file)
        for group in range(handle.num_row_groups):
            rows = handle.read_row_group(group, columns=wanted).to_pylist()
            for index, row in enumerate(rows):
                yield ImageRef.from_parquet(file, group, index, column=image_column), row
