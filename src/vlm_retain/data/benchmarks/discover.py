"""Finding each benchmark's files under a data folder, by the names its layout uses.

``vlm-retain eval general --data DIR`` runs whatever it finds, so discovery must recognise the
synthetic world's folder and real benchmark downloads alike, without a config file. Each finder
returns the sources its loader takes: a VQA root folder, annotation JSON files, a manifest, or
parquet shards (recognised by their columns, whatever the folder is called). When a benchmark is
present both as JSON and as parquet, the JSON layout wins, so items are never loaded twice.

One run evaluates one copy of each benchmark. :func:`check_sources` decides, before any task
runs, what a task's sources gathered from every ``--data`` folder mean: OCR manifests combine
(their items are concatenated); for every other task two copies of the same file (two
``dataset_coco.json``, two VQAv2 roots, the same parquet split in two folders, JSON here and
parquet there) are refused with one error naming both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from vlm_retain.data.benchmarks.coco import KARPATHY_COCO, captions_subtype
from vlm_retain.data.benchmarks.common import DUPLICATE_HINT, walk_files
from vlm_retain.data.benchmarks.docvqa import docvqa_split
from vlm_retain.data.benchmarks.flickr30k import KARPATHY_FLICKR
from vlm_retain.data.benchmarks.ocr import has_ocr_records
from vlm_retain.data.benchmarks.parquet import parquet_kind, shard_split
from vlm_retain.data.benchmarks.textvqa import textvqa_split
from vlm_retain.data.benchmarks.vqav2 import QUESTIONS_FILE
from vlm_retain.data.manifest import MANIFEST_NAME
from vlm_retain.errors import InputError

#: The folder name of the synthetic world's sign-reading questions (VQAv2 layout).
SIGNS_FOLDER = "signs"


def _files(data_dir: Path) -> list[Path]:
    return list(walk_files(Path(data_dir)))


@functools.lru_cache(maxsize=1024)
def _kind(path: str, mtime_ns: int, size: int) -> str | None:
    del mtime_ns, size  # cache key only: a rewritten file is classified again
    return parquet_kind(Path(path))


def parquet_shards(data_dir: Path, kind: str) -> list[Path]:
    """Parquet files under ``data_dir`` whose columns are lmms-lab's ``kind`` layout."""
    found = []
    for file in _files(data_dir):
        if file.suffix == ".parquet":
            stat = file.stat()
            if _kind(str(file), stat.st_mtime_ns, stat.st_size) == kind:
                found.append(file)
    return found


def vqa_roots(data_dir: Path) -> list[Path]:
    """Folders holding ``Questions/v2_OpenEnded_mscoco_*_questions.json``."""
    roots = {
        file.parent.parent
        for file in _files(data_dir)
        if file.parent.name == "Questions" and QUESTIONS_FILE.match(file.name)
    }
    return sorted(roots)


def find_vqav2(data_dir: Path) -> list[Path]:
    """VQAv2-layout roots (the world's ``vqav2/``, a real ``VQAv2/``), else VQAv2 parquet."""
    roots = [root for root in vqa_roots(data_dir) if root.name != SIGNS_FOLDER]
    return roots or parquet_shards(data_dir, "vqav2")


def find_world_signs(data_dir: Path) -> list[Path]:
    """The synthetic world's ``signs/`` root (VQAv2 layout, sign-reading questions)."""
    return [root for root in vqa_roots(data_dir) if root.name == SIGNS_FOLDER]


def find_coco(data_dir: Path) -> list[Path]:
    """``dataset_coco.json`` and ``captions_<subtype>.json`` files, else COCO-Caption parquet."""
    files = [
        file
        for file in _files(data_dir)
        if file.name == KARPATHY_COCO or captions_subtype(file) is not None
    ]
    return files or parquet_shards(data_dir, "coco")


def find_flickr30k(data_dir: Path) -> list[Path]:
    """``dataset_flickr30k.json``, else lmms-lab flickr30k parquet."""
    files = [file for file in _files(data_dir) if file.name == KARPATHY_FLICKR]
    return files or parquet_shards(data_dir, "flickr30k")


def find_textvqa(data_dir: Path) -> list[Path]:
    """``TextVQA_<version>_<split>.json`` files (test excluded: no answers), else parquet."""
    files = [file for file in _files(data_dir) if textvqa_split(file) not in (None, "test")]
    return files or parquet_shards(data_dir, "textvqa")


def find_docvqa(data_dir: Path) -> list[Path]:
    """``<split>_v1.0.json`` files (test excluded: no answers), else DocVQA parquet."""
    files = [file for file in _files(data_dir) if docvqa_split(file) not in (None, "test")]
    return files or parquet_shards(data_dir, "docvqa")


def find_ocr(data_dir: Path) -> list[Path]:
    """Manifest folders with OCR records (a world's manifest, all VQA and captions, is not)."""
    return [
        file.parent
        for file in _files(data_dir)
        if file.name == MANIFEST_NAME and has_ocr_records(file)
    ]


Finder = Callable[[Path], list[Path]]


def _slot(source: Path) -> tuple[tuple[str, ...], Path]:
    """What a source is to its loader (the key) and where it lives: two sources with the same
    key in two places are two copies of one thing, which no loader can combine."""
    if source.suffix == ".parquet":
        return ("parquet split", shard_split(source)), source.parent
    if source.is_dir():
        if (source / MANIFEST_NAME).is_file():
            return ("manifest", str(source)), source  # manifests combine: never a conflict
        return ("folder",), source
    for kind, part in (
        ("captions", captions_subtype(source)),
        ("TextVQA split", textvqa_split(source)),
        ("DocVQA split", docvqa_split(source)),
    ):
        if part is not None:
            return (kind, part), source
    return ("file", source.name), source


def check_sources(task: str, sources: list[Path]) -> None:
    """Refuse sources of ``task`` that are several copies of one benchmark (see the module
    docstring); OCR manifests pass (the loader combines them)."""
    places: dict[tuple[str, ...], Path] = {}
    kinds = {source.suffix == ".parquet" for source in sources}
    if len(kinds) > 1:
        json_one = next(s for s in sources if s.suffix != ".parquet")
        parquet_one = next(s for s in sources if s.suffix == ".parquet")
        raise InputError(
            f"{task}: found both as JSON ({json_one}) and as parquet ({parquet_one.parent})",
            hint=DUPLICATE_HINT,
        )
    for source in sources:
        key, place = _slot(Path(source))
        if key in places and places[key] != place:
            raise InputError(
                f"{task}: two copies found ({places[key]} and {place})", hint=DUPLICATE_HINT
            )
        places.setdefault(key, place)
