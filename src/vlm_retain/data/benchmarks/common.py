"""What the loaders share: reading annotation JSON, layout errors, split choice, image roots.

Benchmarks are unpacked in many slightly different ways (``val2014/`` beside the JSON, under
``images/``, under VQA's own ``Images/mscoco/``), so each loader lists the usual places and
:func:`image_base` picks the one where the first images really are. Missing images are never an
error here: the runner counts them when it decodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError

LAYOUT_HINT = "benchmark folder in the wrong layout; see docs/evaluation.md for the expected files"

#: What to do about several copies of one benchmark (one run evaluates one copy of each).
DUPLICATE_HINT = (
    "one run evaluates one copy of each benchmark: pass only one of them with --data, "
    "or evaluate each in its own run (its own --out)"
)

#: Splits chosen by default when a JSON layout offers several (with references): the held-out
#: split of the synthetic world first, then the public validation splits of the real benchmarks
#: (their test answers are not public).
JSON_SPLIT_PREFERENCE = ("test", "val", "val2014", "val2017", "validation", "minival")
#: The same for lmms-lab parquet, whose ``test`` splits have no answers except Flickr30k's
#: (its only split).
PARQUET_SPLIT_PREFERENCE = ("validation", "val", "lite", "test")

#: How deep :func:`walk_files` looks under a data folder.
MAX_DEPTH = 4


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file is an :class:`InputError` naming it."""
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except UnicodeDecodeError:
        raise InputError("invalid UTF-8", path=path, hint=LAYOUT_HINT) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON ({exc.msg}, line {exc.lineno})", path=path, hint=LAYOUT_HINT
        ) from None


def check_layout(problems: Iterable[str], path: Path) -> None:
    """Raise one :class:`InputError` naming ``path``, the first problems and the layout hint."""
    found = list(problems)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise InputError("; ".join(found[:3]) + more, path=path, hint=LAYOUT_HINT)


def require_keys(obj: Any, keys: Sequence[str], where: str, path: Path) -> None:
    """Layout check for formats without a validator in ``layouts.py`` (TextVQA, DocVQA)."""
    if not isinstance(obj, dict):
        check_layout([f"{where}: expected a JSON object"], path)
    missing = [key for key in keys if key not in obj]
    check_layout([f"{where}: missing key {key!r}" for key in missing], path)


def choose_split(
    available: Iterable[str], wanted: str | None, preference: Sequence[str], path: Path
) -> str:
    """``wanted`` if available, else the first preferred split present, else the only one."""
    names = sorted(set(available))
    if wanted is not None:
        if wanted not in names:
            raise InputError(
                f"no split {wanted!r} here (found: {', '.join(names) or 'none'})",
                path=path,
                hint="pass one of the splits found",
            )
        return wanted
    for name in preference:
        if name in names:
            return name
    if len(names) == 1:
        return names[0]
    raise InputError(
        f"several splits and none of the usual evaluation ones: {', '.join(names) or 'none'}",
        path=path,
        hint="pass --split",
    )


def image_base(candidates: Sequence[Path], probes: Sequence[str]) -> Path:
    """The first candidate folder under which one of the ``probes`` (relative image paths of
    the first items) exists; else the first existing candidate; else the first candidate."""
    unique = list(dict.fromkeys(candidates))
    for base in unique:
        if any((base / rel).is_file() for rel in probes):
            return base
    for base in unique:
        if base.is_dir():
            return base
    return unique[0]


def walk_files(root: Path, max_depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Files under ``root`` up to ``max_depth`` levels, sorted, hidden entries skipped.

    Image files are not yielded (big image folders are listed once, cheaply, by ``scandir``),
    so discovery stays fast on a real COCO tree.
    """
    root = Path(root)
    base_depth = len(root.parts)
    # links are followed (a benchmark folder linked into a data folder is found); the depth
    # limit keeps a link cycle from looping
    for current, dirs, files in os.walk(root, followlinks=True):
        depth = len(Path(current).parts) - base_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if depth >= max_depth:
            dirs[:] = []
        for name in sorted(files):
            if name.startswith(".") or name.lower().endswith(_IMAGE_SUFFIXES):
                continue
            yield Path(current) / name


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")


def unique_ids(ids: Iterable[str], path: Path, what: str) -> None:
    """Item ids must be unique: predictions are joined to references by id."""
    seen: set[str] = set()
    for item_id in ids:
        if item_id in seen:
            check_layout([f"duplicate {what} {item_id!r}"], path)
        seen.add(item_id)


def require_one(sources: Sequence[Path], what: str) -> Path:
    """The single source a loader needs; several copies are ambiguous, none is an error."""
    if not sources:
        raise InputError(f"no {what} given")
    if len(sources) > 1:
        listing = ", ".join(str(s) for s in sources)
        raise InputError(f"several {what} found ({listing})", path=sources[0], hint=DUPLICATE_HINT)
    return sources[0]


def one_per_key(sources: Sequence[Path], key: Any, what: str) -> dict[str, Path]:
    """``{key(source): source}``; two sources with one key (two copies of a split) are an
    error naming both, never a silent choice."""
    found: dict[str, Path] = {}
    for source in sources:
        name = key(source)
        if name in found and found[name] != source:
            raise InputError(
                f"two {what} files for {name!r} ({found[name]}, {source})",
                path=source,
                hint=DUPLICATE_HINT,
            )
        found[name] = source
    return found


def read_answered_questions(
    path: Path, item_keys: Sequence[str], *, dataset: str, hint: str
) -> dict[str, Any]:
    """A TextVQA/DocVQA-style file (``{"data": [...]}``) whose every question has answers.

    Both datasets share this shape; a test file (answers not public) is refused with ``hint``.
    """
    doc = read_json(path)
    require_keys(doc, ("data",), "file", path)
    if not isinstance(doc["data"], list):
        check_layout(["'data' is not a list"], path)
    for n, entry in enumerate(doc["data"]):
        require_keys(entry, item_keys, f"data[{n}]", path)
        if "answers" not in entry:
            raise InputError(
                f"no answers (the {dataset} test answers are not public)",
                path=path,
                field=f"data[{n}].answers",
                hint=hint,
            )
        if not isinstance(entry["answers"], list) or not entry["answers"]:
            check_layout([f"data[{n}]: 'answers' is not a non-empty list"], path)
    return doc
