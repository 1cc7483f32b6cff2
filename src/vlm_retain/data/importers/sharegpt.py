"""LLaMA-Factory sharegpt JSON: one user turn with ``<image>`` + prompt, one assistant answer.

Two spellings are read, as LLaMA-Factory's ``dataset_info.json`` tags allow: the OpenAI-like
``messages`` with ``role``/``content`` (``user``/``assistant``, what ``data export llamafactory``
writes and what ``mllm_demo.json`` uses) and the classic ``conversations`` with ``from``/``value``
(``human``/``gpt``). A file is a JSON array or JSON lines (one object a line, as LLaMA-Factory's
``json`` loader also accepts). ``images`` holds paths, absolute or relative to ``--image-dir``
(default: the JSON's folder, where LLaMA-Factory's ``media_dir`` points by default); images are
referenced where they lie.

One item is one OCR example, so items that are not one image + one exchange are skipped and
counted: no image, several images, no assistant turn, several exchanges, an empty answer. The
prompt (user text without ``<image>``) goes to ``meta.prompt`` so an export can reproduce it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_retain.data.importers.base import (
    ImportContext,
    require_dir,
    require_file,
    require_lang_and_source,
)
from vlm_retain.data.manifest import Record
from vlm_retain.data.naming import IMAGE_TAG, SPLIT_WORDS
from vlm_retain.errors import InputError
from vlm_retain.fsutil import read_utf8
from vlm_retain.text import clean_text

#: (messages key, role key, content key, user role, assistant role) of the two spellings.
_SPELLINGS = (
    ("messages", "role", "content", {"user", "human"}, {"assistant", "gpt"}),
    ("conversations", "from", "value", {"human", "user"}, {"gpt", "assistant"}),
)
_SYSTEM_ROLES = {"system"}
_NAME_END = re.compile(r"(?:^|[_.\-])(?P<word>[A-Za-z]+)$")


@dataclass(frozen=True)
class SharegptOptions:
    """``split`` overrides the file name; ``image_dir`` is where relative image paths start."""

    lang: str
    split: str | None = None
    image_dir: Path | None = None
    source: str = "sharegpt"


def build(ctx: ImportContext, opts: SharegptOptions) -> list[Record]:
    """Read one sharegpt file into one OCR record per item that is one image + one exchange.

    Structural damage (not JSON, not a list of turns, an unknown role, a duplicate id) stops
    the import, because it means the file is not what the user thinks; items that are valid
    sharegpt but not an OCR example are skipped and counted.
    """
    require_lang_and_source(opts.lang, opts.source)
    src = require_file(ctx.src, "sharegpt JSON file", "pass the .json or .jsonl file itself")
    split, original_split = _split(src, opts.split)
    image_root = src.parent
    if opts.image_dir is not None:
        image_root = require_dir(opts.image_dir, "--image-dir folder", "pass an existing folder")
    items = _load_items(src)

    records: list[Record] = []
    seen: dict[str, int] = {}
    for index, (line, item) in enumerate(items):
        where = {"path": src, "line": line}
        if not isinstance(item, dict):
            raise InputError(f"item {index}: expected a JSON object", **where)
        record_id = _item_id(item, src, index, where)
        if record_id in seen:
            raise InputError(
                f"item {index}: duplicate id {record_id!r} (also item {seen[record_id]})",
                field="id",
                **where,
            )
        seen[record_id] = index
        turns = _turns(item, index, where)
        if turns is None:
            raise InputError(
                f"item {index}: neither 'messages' nor 'conversations'",
                hint="expected LLaMA-Factory sharegpt items",
                **where,
            )
        users = [content for role, content in turns if role == "user"]
        answers = [content for role, content in turns if role == "assistant"]
        if not answers:
            ctx.skip("no assistant turn", record_id)
            continue
        if len(answers) > 1 or len(users) > 1:
            ctx.skip("more than one exchange", record_id)
            continue
        images = _images(item, index, where)
        if not images:
            ctx.skip("no image", record_id)
            continue
        if len(images) > 1:
            ctx.skip("more than one image", record_id)
            continue
        text = clean_text(answers[0])
        if not text:
            ctx.skip("empty answer", record_id)
            continue
        user_text = users[0] if users else ""
        if IMAGE_TAG not in user_text:
            ctx.note(f"user turns without {IMAGE_TAG} (LLaMA-Factory would reject them)")
        meta: dict[str, Any] = {
            "prompt": clean_text(user_text.replace(IMAGE_TAG, " ")),
            "index": index,
        }
        if original_split:
            meta["original_split"] = original_split
        system = _system(item, turns)
        if system:
            meta["system"] = system
        image = Path(images[0])
        records.append(
            Record.create(
                id=record_id,
                image=ctx.reference(image if image.is_absolute() else image_root / image),
                text=text,
                lang=opts.lang,
                source=opts.source,
                split=split,
                meta=meta,
            )
        )
    return records


def _split(src: Path, option: str | None) -> tuple[str, str | None]:
    """(manifest split, the source's own word when it differs or came from the name)."""
    if option is not None:
        word = option.strip().lower()
        if word not in SPLIT_WORDS:
            raise InputError(f"--split {option!r} is not one of train, val, test")
        return SPLIT_WORDS[word], (word if SPLIT_WORDS[word] != word else None)
    stem = src.name.removesuffix(".jsonl").removesuffix(".json")
    match = _NAME_END.search(stem)
    word = match["word"].lower() if match else ""
    if word not in SPLIT_WORDS:
        raise InputError(
            "cannot tell the split from the file name",
            path=src,
            hint="pass --split train|val|test, or name it *_train.json, *_val.json or *_test.json",
        )
    return SPLIT_WORDS[word], word


def _load_items(src: Path) -> list[tuple[int | None, Any]]:
    """Items with their line number (JSON lines) or None (one JSON array)."""
    text = read_utf8(src)
    stripped = text.lstrip()
    if not stripped:
        raise InputError("empty file", path=src, hint="expected a JSON array of sharegpt items")
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON at column {exc.colno} ({exc.msg})", path=src, line=exc.lineno
            ) from None
        if not isinstance(data, list):
            raise InputError("expected a JSON array of items", path=src)
        return [(None, item) for item in data]
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and stripped.startswith("{"):
        try:
            json.loads(text)
        except json.JSONDecodeError:
            pass  # not one object spread over lines: read it as JSON lines below
        else:
            raise InputError(
                "expected a JSON array of items or one object per line",
                path=src,
                hint="wrap the items in [ ... ] or write them as JSON lines",
            )
    items: list[tuple[int | None, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON at column {exc.colno} ({exc.msg})",
                path=src,
                line=number,
                hint="a JSON lines file holds one object per line",
            ) from None
    return items


def _item_id(item: dict[str, Any], src: Path, index: int, where: dict[str, Any]) -> str:
    value = item.get("id")
    if value is None:
        return f"{src.name.removesuffix('.jsonl').removesuffix('.json')}-{index:06d}"
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise InputError(
            f"item {index}: id must be a non-empty string or integer", field="id", **where
        )
    return str(value).strip()


def _turns(item: dict[str, Any], index: int, where: dict[str, Any]) -> list[tuple[str, str]] | None:
    """``(user|assistant|system, content)`` turns, or None when the item has no conversation."""
    for key, role_key, content_key, user_roles, assistant_roles in _SPELLINGS:
        if key not in item:
            continue
        turns = item[key]
        if not isinstance(turns, list):
            raise InputError(f"item {index}: expected a list of turns", field=key, **where)
        result = []
        for number, turn in enumerate(turns):
            if not isinstance(turn, dict) or not isinstance(turn.get(content_key), str):
                raise InputError(
                    f"item {index}, turn {number}: expected {{{role_key!r}, {content_key!r}}} "
                    f"with a string {content_key!r}",
                    field=key,
                    **where,
                )
            role = turn.get(role_key)
            if role in user_roles:
                result.append(("user", turn[content_key]))
            elif role in assistant_roles:
                result.append(("assistant", turn[content_key]))
            elif role in _SYSTEM_ROLES:
                result.append(("system", turn[content_key]))
            else:
                raise InputError(
                    f"item {index}, turn {number}: unknown role {role!r}",
                    field=f"{key}.{role_key}",
                    **where,
                )
        return result
    return None


def _images(item: dict[str, Any], index: int, where: dict[str, Any]) -> list[str]:
    value = item.get("images")
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise InputError(f"item {index}: images must be file paths", field="images", **where)
    return values


def _system(item: dict[str, Any], turns: list[tuple[str, str]]) -> str:
    system = next((content for role, content in turns if role == "system"), "")
    if not system and isinstance(item.get("system"), str):
        system = item["system"]
    return clean_text(system)
