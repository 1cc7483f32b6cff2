"""The manifest: one JSON object per line describing an image and its text.

This is the contract between every stage (see docs/formats.md). Fields:

- ``id``: unique within the manifest (the source's natural id where it has one);
- ``image``: path relative to the manifest's folder (``..`` allowed: images are referenced
  where they lie unless they had to be cut out or decoded);
- ``text``: transcription or answer, NFC-normalized, stripped, whitespace runs collapsed;
- ``lang``: ISO 639-1 code; ``source``: importer or generator name;
- ``split``: ``train``, ``val`` or ``test`` (the source's own split name goes in ``meta``);
- ``task``: ``ocr`` by default, or ``vqa``, ``caption``...; ``meta``: free-form object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_text
from vlm_retain.text import clean_text, is_nfc

MANIFEST_NAME = "manifest.jsonl"
CARD_NAME = "card.json"
SPLITS = ("train", "val", "test")
TASKS = ("ocr", "vqa", "caption", "retrieval")
LANG_CODE = re.compile(r"^[a-z]{2}$")
_REQUIRED = ("id", "image", "text", "lang", "source", "split")
_KNOWN = (*_REQUIRED, "task", "meta")


@dataclass(frozen=True, slots=True)
class Record:
    """One manifest line. Build it with :meth:`create` to get the text cleaned."""

    id: str
    image: str
    text: str
    lang: str
    source: str
    split: str
    task: str = "ocr"
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        id: str,
        image: str,
        text: str,
        lang: str,
        source: str,
        split: str,
        task: str = "ocr",
        meta: dict[str, Any] | None = None,
    ) -> Record:
        """Make a record with ``text`` cleaned (NFC, strip, collapse whitespace)."""
        return cls(
            id=str(id),
            image=image,
            text=clean_text(text),
            lang=lang,
            source=source,
            split=split,
            task=task,
            meta=dict(meta or {}),
        )

    def to_json(self) -> str:
        """One compact JSON line (non-ASCII kept as is, so manifests stay readable)."""
        obj: dict[str, Any] = {
            "id": self.id,
            "image": self.image,
            "text": self.text,
            "lang": self.lang,
            "source": self.source,
            "split": self.split,
            "task": self.task,
        }
        if self.meta:
            obj["meta"] = self.meta
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    def image_path(self, manifest_dir: Path) -> Path:
        """Absolute-ish path of the image, resolved against the manifest's folder."""
        return (
            (manifest_dir / self.image) if not Path(self.image).is_absolute() else Path(self.image)
        )


def validate_record(record: Record, *, where: Path | None = None, line: int | None = None) -> None:
    """Raise :class:`InputError` naming the field when a record breaks the contract.

    Text must already be clean: validation does not fix, it reports (``data check`` relies on it
    to find non-NFC text that a hand-edited manifest may contain, so only shape is checked here).
    """
    for name in ("id", "image", "source"):
        if not getattr(record, name):
            raise InputError("empty value", path=where, line=line, field=name)
    if not LANG_CODE.match(record.lang):
        raise InputError(
            f"language {record.lang!r} is not an ISO 639-1 code",
            path=where,
            line=line,
            field="lang",
            hint="use two lowercase letters such as ru, en, it, ar",
        )
    if record.split not in SPLITS:
        raise InputError(
            f"split {record.split!r} is not one of {', '.join(SPLITS)}",
            path=where,
            line=line,
            field="split",
            hint="keep the source's own split name in meta",
        )
    if record.task not in TASKS:
        raise InputError(
            f"task {record.task!r} is not one of {', '.join(TASKS)}",
            path=where,
            line=line,
            field="task",
        )


def write_manifest(path: Path, records: Iterable[Record]) -> int:
    """Validate and write records atomically; ids must be unique. Returns the count written."""
    seen: set[str] = set()
    lines: list[str] = []
    for number, record in enumerate(records, start=1):
        validate_record(record, where=path, line=number)
        if record.id in seen:
            raise InputError(f"duplicate id {record.id!r}", path=path, line=number, field="id")
        seen.add(record.id)
        lines.append(record.to_json())
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def manifest_path(path: Path) -> Path:
    """Accept either a manifest folder or the ``manifest.jsonl`` file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(
            "no manifest here", path=path, hint="pass a folder written by 'vlm-retain data import'"
        )
    return path


def iter_manifest(path: Path, *, strict: bool = True) -> Iterator[Record]:
    """Yield records from a manifest file or folder, naming file and line on malformed input.

    With ``strict`` (the default) text that is not clean is an error; ``data check`` reads with
    ``strict=False`` so it can report such lines among its findings instead of stopping.
    """
    for _, record in iter_manifest_lines(path, strict=strict):
        yield record


def iter_manifest_lines(path: Path, *, strict: bool = True) -> Iterator[tuple[int, Record]]:
    """Like :func:`iter_manifest`, with each record's line number in the file."""
    path = manifest_path(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError("invalid UTF-8", path=path, line=number) from None
            except ValueError as exc:
                raise InputError(f"malformed JSON ({exc.msg})", path=path, line=number) from None
            yield number, _record_from_obj(obj, path, number, strict=strict)


def read_manifest(path: Path, *, strict: bool = True) -> list[Record]:
    """All records of a manifest; duplicate ids are an error in strict mode."""
    records: list[Record] = []
    first_line: dict[str, int] = {}
    for number, record in iter_manifest_lines(path, strict=strict):
        if strict and record.id in first_line:
            raise InputError(
                f"duplicate id {record.id!r} (first on line {first_line[record.id]})",
                path=manifest_path(path),
                line=number,
                field="id",
            )
        first_line.setdefault(record.id, number)
        records.append(record)
    return records


def _record_from_obj(obj: Any, path: Path, number: int, *, strict: bool) -> Record:
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", path=path, line=number)
    for name in _REQUIRED:
        if name not in obj:
            raise InputError("missing field", path=path, line=number, field=name)
        if not isinstance(obj[name], str):
            raise InputError("expected a string", path=path, line=number, field=name)
    unknown = sorted(set(obj) - set(_KNOWN))
    if unknown:
        raise InputError(
            "unknown field",
            path=path,
            line=number,
            field=unknown[0],
            hint=f"put extra information under 'meta'; known fields are {', '.join(_KNOWN)}",
        )
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError("expected an object", path=path, line=number, field="meta")
    record = Record(
        id=obj["id"],
        image=obj["image"],
        text=obj["text"],
        lang=obj["lang"],
        source=obj["source"],
        split=obj["split"],
        task=obj.get("task", "ocr"),
        meta=meta,
    )
    validate_record(record, where=path, line=number)
    if strict and (not is_nfc(record.text) or clean_text(record.text) != record.text):
        raise InputError(
            "text is not clean (NFC, stripped, single spaces)",
            path=path,
            line=number,
            field="text",
            hint="run 'vlm-retain data check' for details or re-import",
        )
    return record
