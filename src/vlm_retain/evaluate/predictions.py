"""Reading ``predictions.jsonl``: ours, and LLaMA-Factory's ``generated_predictions.jsonl``.

Our contract: one object per line with ``id``, ``prediction``, the reference field of the task
(``reference`` for OCR, ``answers`` for VQA/ANLS, ``references`` for captions) and optional
``meta``; other top-level fields (``lang``, ``source``, ``split``, ``answer_type``...) are kept
for breakdowns. LLaMA-Factory writes ``prompt``/``predict``/``label`` without ids; such a file is
accepted as it is for OCR, each line's id being its line number, so results of a model trained
and run there can be scored here with the same conventions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_retain.data.manifest import read_manifest
from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.common import MISSING  # value for items without a field

#: The reference field each task reads.
TARGET_FIELD = {"ocr": "reference", "vqa": "answers", "anls": "answers", "caption": "references"}


@dataclass(frozen=True)
class Prediction:
    """One scored item: what the model said, what it should have said, and its fields."""

    id: str
    prediction: str
    target: str | list[str]
    fields: dict[str, Any] = field(default_factory=dict)
    line: int = 0


def read_predictions(path: Path, task: str) -> list[Prediction]:
    """Parse and validate a predictions file for ``task``; errors name the file and line."""
    if task not in TARGET_FIELD:
        raise InputError(f"unknown task {task!r}; known: {', '.join(TARGET_FIELD)}")
    path = Path(path)
    if not path.is_file():
        raise InputError("predictions file not found", path=path)
    records: list[Prediction] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            obj = _parse_line(raw, path, number)
            record = _to_prediction(obj, task, path, number)
            if record.id in seen:
                raise InputError(
                    f"duplicate id {record.id!r} (first on line {seen[record.id]})",
                    path=path,
                    line=number,
                    field="id",
                )
            seen[record.id] = number
            records.append(record)
    if not records:
        raise InputError("no predictions (the file is empty)", path=path)
    return records


def _parse_line(raw: bytes, path: Path, number: int) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError:
        raise InputError("invalid UTF-8", path=path, line=number) from None
    except ValueError as exc:
        raise InputError(f"not a JSON line ({exc.msg})", path=path, line=number) from None
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", path=path, line=number)
    return obj


def _to_prediction(obj: dict[str, Any], task: str, path: Path, number: int) -> Prediction:
    if "prediction" not in obj and "predict" in obj:
        return _from_llamafactory(obj, task, path, number)
    for name in ("id", "prediction", TARGET_FIELD[task]):
        if name not in obj:
            hint = None
            if name == TARGET_FIELD[task]:
                hint = f"a {task} prediction needs {TARGET_FIELD[task]!r}"
            raise InputError("missing field", path=path, line=number, field=name, hint=hint)
    prediction = obj["prediction"]
    if prediction is None:
        prediction = ""
    if not isinstance(prediction, str):
        raise InputError("expected a string", path=path, line=number, field="prediction")
    target = _target(obj[TARGET_FIELD[task]], task, path, number)
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise InputError("expected an object", path=path, line=number, field="meta")
    fields = {
        k: v for k, v in obj.items() if k not in ("id", "prediction", TARGET_FIELD[task], "meta")
    }
    fields["meta"] = meta
    identifier = obj["id"]
    if isinstance(identifier, bool) or not isinstance(identifier, str | int):
        raise InputError("expected a string or an integer", path=path, line=number, field="id")
    return Prediction(
        id=str(identifier), prediction=prediction, target=target, fields=fields, line=number
    )


def _from_llamafactory(obj: dict[str, Any], task: str, path: Path, number: int) -> Prediction:
    if task != "ocr":
        raise InputError(
            f"LLaMA-Factory predictions (predict/label) can be scored as ocr, not {task}",
            path=path,
            line=number,
        )
    for name in ("predict", "label"):
        if name not in obj:
            raise InputError(
                "missing field",
                path=path,
                line=number,
                field=name,
                hint="LLaMA-Factory predictions carry predict and label",
            )
        if not isinstance(obj[name], str):
            raise InputError("expected a string", path=path, line=number, field=name)
    return Prediction(
        id=f"line-{number:06d}",
        prediction=obj["predict"],
        target=obj["label"],
        fields={"meta": {}, "format": "llamafactory"},
        line=number,
    )


def _target(value: Any, task: str, path: Path, number: int) -> str | list[str]:
    name = TARGET_FIELD[task]
    if task == "ocr":
        if not isinstance(value, str):
            raise InputError("expected a string", path=path, line=number, field=name)
        return value
    if not isinstance(value, list) or not value:
        raise InputError("expected a non-empty list", path=path, line=number, field=name)
    texts: list[str] = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("answer"), str):
            item = item["answer"]  # VQAv2's {"answer", "answer_id"} form
        if not isinstance(item, str):
            raise InputError("expected a list of strings", path=path, line=number, field=name)
        texts.append(item)
    return texts


def manifest_fields(folder: Path) -> dict[str, dict[str, Any]]:
    """id -> fields of a manifest's records, to join breakdown fields by id (``--manifest``)."""
    return {
        record.id: {
            "lang": record.lang,
            "source": record.source,
            "split": record.split,
            "task": record.task,
            "meta": record.meta,
        }
        for record in read_manifest(folder)
    }


def field_values(
    records: Sequence[Prediction], name: str, joined: Mapping[str, dict[str, Any]] | None = None
) -> list[str]:
    """Per-item values of ``name`` (``lang``, ``meta.decade_id``...) as strings for breakdowns.

    Looked up in the prediction's own fields first, then in the joined manifest record;
    an item without it gets :data:`MISSING`.
    """
    values = []
    for record in records:
        value = _lookup(record.fields, name)
        if value is None and joined is not None and record.id in joined:
            value = _lookup(joined[record.id], name)
        values.append(MISSING if value is None else str(value))
    return values


def _lookup(fields: Mapping[str, Any], name: str) -> Any:
    if name.startswith("meta."):
        meta = fields.get("meta") or {}
        return meta.get(name[len("meta.") :]) if isinstance(meta, dict) else None
    value = fields.get(name)
    if value is None:
        meta = fields.get("meta") or {}
        value = meta.get(name) if isinstance(meta, dict) else None
    return value
