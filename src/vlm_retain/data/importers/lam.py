"""LAM: ``lines/img/*.jpg`` listed by ``lines/split/<config>/{train,val,test}.json``.

Gotchas handled (see docs/datasets/lam.md): the split config may be nested
(``leave_decade_out/leave_decade_3_out``), so configs are discovered by walking ``lines/split``
and an unknown one is refused with the list of those that exist; ``decade_id`` is kept in
``meta`` for date-based analyses; empty transcriptions are skipped and counted; an image listed
in two splits of one config is dropped from all of them (counted), because keeping it anywhere
would put a test line in training. Images are small and of any size: they are referenced where
they lie, never copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_retain.data.importers.base import ImportContext, require_dir
from vlm_retain.data.manifest import SPLITS, Record
from vlm_retain.errors import InputError
from vlm_retain.fsutil import read_utf8
from vlm_retain.text import clean_text

_LAYOUT_HINT = (
    "pass the LAM folder holding lines/ (with lines/img and lines/split), or lines/ itself"
)
#: Fields the reference loader (``utils/dummy_main.py``) reads, with their JSON types.
_REQUIRED_FIELDS: dict[str, type] = {"img": str, "text": str, "decade_id": int}
#: Fields the split files also carry; kept in ``meta`` when present, checked when present.
_OPTIONAL_FIELDS: dict[str, type] = {"nameset": str, "width": int, "height": int}


@dataclass(frozen=True)
class LamOptions:
    """``config``: a folder under ``lines/split/`` holding ``{train,val,test}.json``."""

    config: str = "basic"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One validated record of a split file."""

    split: str
    img: str
    text: str
    decade_id: int
    extra: dict[str, Any]


def build(ctx: ImportContext, opts: LamOptions) -> list[Record]:
    """Read the three split files of one config into records that reference the line images.

    All entries are read before any record is made, because an image listed in two splits can
    only be recognized (and dropped from both) once every split file has been seen.
    """
    lines_dir = find_lines_dir(ctx.src)
    img_dir = require_dir(lines_dir / "img", "lines/img folder", _LAYOUT_HINT)
    split_root = require_dir(lines_dir / "split", "lines/split folder", _LAYOUT_HINT)
    config = opts.config.replace("\\", "/").strip("/")
    configs = available_configs(split_root)
    if config not in configs:
        raise InputError(
            f"unknown split config {opts.config!r}",
            path=split_root,
            hint=f"configs here: {', '.join(configs) or 'none (no train/val/test.json found)'}",
        )
    config_dir = split_root / config

    entries: list[_Entry] = []
    for split in SPLITS:
        path = config_dir / f"{split}.json"
        if not path.is_file():
            ctx.note(f"{split}.json absent from config {config}")
            continue
        entries.extend(_read_split_file(path, split))

    splits_of: dict[str, set[str]] = {}
    for entry in entries:
        splits_of.setdefault(Path(entry.img).stem, set()).add(entry.split)

    records: list[Record] = []
    seen: set[str] = set()
    for entry in entries:
        stem = Path(entry.img).stem
        if len(splits_of[stem]) > 1:
            ctx.skip("listed in several splits of the config (leakage)", stem)
            continue
        if stem in seen:
            ctx.skip("listed twice in the same split file", stem)
            continue
        seen.add(stem)
        text = clean_text(entry.text)
        if not text:
            ctx.skip("empty transcription", stem)
            continue
        meta: dict[str, Any] = {
            "decade_id": entry.decade_id,
            "config": config,
            "original_split": entry.split,
            "img": entry.img,
        }
        if "nameset" in entry.extra:
            meta["nameset"] = entry.extra["nameset"]
            if entry.extra["nameset"] != entry.split:
                ctx.note("records whose nameset differs from their split file")
        for name in ("width", "height"):
            if name in entry.extra:
                meta[f"listed_{name}"] = entry.extra[name]
        records.append(
            Record.create(
                id=stem,
                image=ctx.reference(img_dir / entry.img),
                text=text,
                lang="it",
                source="lam",
                split=entry.split,
                meta=meta,
            )
        )
    return records


def find_lines_dir(src: Path) -> Path:
    """``SRC/lines``, or ``SRC`` itself when it holds ``img/`` and ``split/``."""
    if (src / "lines").is_dir():
        return src / "lines"
    if (src / "img").is_dir() and (src / "split").is_dir():
        return src
    raise InputError("LAM lines/ folder not found", path=src, hint=_LAYOUT_HINT)


def available_configs(split_root: Path) -> list[str]:
    """Every folder under ``split_root`` holding a train/val/test JSON, as a POSIX path."""
    names = {f"{split}.json" for split in SPLITS}
    found = {
        path.parent.relative_to(split_root).as_posix()
        for path in split_root.rglob("*.json")
        if path.name in names and path.parent != split_root
    }
    return sorted(found)


def _read_split_file(path: Path, split: str) -> list[_Entry]:
    """Parse one split JSON, naming the file, line and record index on any malformed part."""
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON ({exc.msg}, column {exc.colno})",
            path=path,
            line=exc.lineno,
            hint="re-extract the LAM archive",
        ) from None
    if not isinstance(data, list):
        raise InputError(
            f"expected a JSON list of records, found {type(data).__name__}",
            path=path,
            hint="a LAM split file is a list of {decade_id, img, nameset, text, width, height}",
        )
    entries: list[_Entry] = []
    for index, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise InputError(f"record [{index}] is not a JSON object", path=path)
        for name, kind in (_REQUIRED_FIELDS | _OPTIONAL_FIELDS).items():
            if name not in obj:
                if name in _REQUIRED_FIELDS:
                    raise InputError(f"record [{index}] has no such field", path=path, field=name)
                continue
            value = obj[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise InputError(
                    f"record [{index}]: expected {kind.__name__}, found {value!r}",
                    path=path,
                    field=name,
                )
        if not obj["img"].strip():
            raise InputError(f"record [{index}] has an empty image name", path=path, field="img")
        entries.append(
            _Entry(
                split=split,
                img=obj["img"].strip(),
                text=obj["text"],
                decade_id=obj["decade_id"],
                extra={name: obj[name] for name in _OPTIONAL_FIELDS if name in obj},
            )
        )
    return entries
