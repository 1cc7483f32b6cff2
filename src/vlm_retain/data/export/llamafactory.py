"""LLaMA-Factory export: ``<name>_<split>.json`` in sharegpt form and a ``dataset_info.json``.

The entries follow LLaMA-Factory's own multimodal example (``mllm_demo`` in its
``data/dataset_info.json``): ``formatting: sharegpt``, ``columns: {messages, images}`` and
``tags`` for the ``role``/``content``/``user``/``assistant`` spelling. ``split`` is always
``train``: LLaMA-Factory loads a local file with ``load_dataset("json", data_files=...,
split=<split>)`` (``src/llamafactory/data/loader.py``) and ``datasets`` names the one split of
local files ``train``, so an eval set must say ``train`` too and is chosen with ``eval_dataset``.

Each item is one exchange: a user turn ``<image>`` + prompt and an assistant turn with the text,
with exactly one image path, which is what LLaMA-Factory's converter and its multimodal plugin
check (roles alternate user/assistant, an even number of turns, as many ``<image>`` tags as
images). Image paths are absolute: LLaMA-Factory joins relative ones to its ``media_dir``, which
would tie the export to where it is unpacked. The record id travels as an extra ``id`` field,
which LLaMA-Factory ignores and ``data import sharegpt`` reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlm_retain.data.manifest import SPLITS, Record, manifest_path, read_manifest
from vlm_retain.data.naming import IMAGE_TAG, safe_name, unique_name
from vlm_retain.data.prompts import CAPTION_PROMPT, DEFAULT_OCR_PROMPT
from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json, staged_output_dir, write_marker

#: The OCR prompt the evaluation asks too, so a model trained on the export is scored fairly.
DEFAULT_PROMPT = DEFAULT_OCR_PROMPT
DATASET_INFO = "dataset_info.json"
#: The role/content spelling written (LLaMA-Factory's defaults are from/value, human/gpt).
TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
}


def export_llamafactory(
    folders: list[Path], to: Path, *, prompt: str, overwrite: bool
) -> dict[str, Any]:
    """Write one JSON per manifest and split under ``to``; return the ``dataset_info`` written."""
    if IMAGE_TAG in prompt:
        raise InputError(f"--prompt must not contain {IMAGE_TAG}", hint="the export puts it first")
    manifests = [manifest_path(Path(folder)) for folder in folders]
    names = _dataset_names(manifests)
    guard_output(to, [m.parent for m in manifests])
    info: dict[str, Any] = {}
    with staged_output_dir(to, overwrite=overwrite) as staging:
        for manifest, name in zip(manifests, names, strict=True):
            by_split: dict[str, list[Record]] = {split: [] for split in SPLITS}
            for record in read_manifest(manifest):
                by_split[record.split].append(record)
            for split, records in by_split.items():
                if not records:
                    continue
                key = f"{name}_{split}"
                _write_items(staging / f"{key}.json", manifest, records, prompt)
                info[key] = dataset_entry(f"{key}.json")
        atomic_write_json(staging / DATASET_INFO, info)
        write_marker(
            staging,
            "export",
            format="llamafactory",
            manifests=[str(m.resolve()) for m in manifests],
        )
    return info


def dataset_entry(file_name: str) -> dict[str, Any]:
    """One ``dataset_info.json`` entry for a multimodal sharegpt file."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "split": "train",
        "columns": {"messages": "messages", "images": "images"},
        "tags": dict(TAGS),
    }


def sharegpt_item(record: Record, image: Path, prompt: str) -> dict[str, Any]:
    """The sharegpt object for one record (``id`` first so files read well)."""
    return {
        "id": record.id,
        "messages": [
            {"role": "user", "content": IMAGE_TAG + _prompt_for(record, prompt)},
            {"role": "assistant", "content": record.text},
        ],
        "images": [str(image)],
    }


def guard_output(to: Path, inputs: list[Path]) -> None:
    """Refuse an output that is, holds or sits inside an input manifest folder (an
    ``--overwrite`` would otherwise replace the manifest and the images it owns)."""
    target = Path(to).resolve()
    for folder in inputs:
        source = folder.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise InputError(
                "--to must be outside the manifest folders",
                path=to,
                hint="write the export to a new folder of its own",
            )


def _write_items(path: Path, manifest: Path, records: list[Record], prompt: str) -> None:
    """A JSON array written one item a line: valid JSON, streamable, readable with ``less``."""
    folder = manifest.parent
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n")
        for number, record in enumerate(records):
            image = record.image_path(folder).resolve()
            if not image.is_file():
                raise InputError(
                    f"image of {record.id!r} not found: {image}",
                    path=manifest,
                    field="image",
                    hint="re-import the dataset or restore the image",
                )
            line = json.dumps(sharegpt_item(record, image, prompt), ensure_ascii=False)
            handle.write(line + (",\n" if number < len(records) - 1 else "\n"))
        handle.write("]\n")


def _prompt_for(record: Record, prompt: str) -> str:
    """OCR records get ``--prompt``; other tasks carry their own question in ``meta``;
    caption records without one get the captioning prompt the evaluation asks."""
    if record.task == "ocr":
        return prompt
    for key in ("prompt", "question"):
        value = record.meta.get(key)
        if isinstance(value, str) and value.strip():
            return value
    if record.task == "caption":
        return CAPTION_PROMPT
    raise InputError(
        f"{record.task} record {record.id!r} has no meta.prompt or meta.question",
        hint="only OCR records can use --prompt",
    )


def _dataset_names(manifests: list[Path]) -> list[str]:
    """The manifest folder names, made file-safe and unique (``iam``, ``iam_2``...)."""
    used: set[str] = set()
    return [
        unique_name(safe_name(manifest.parent.resolve().name, "dataset"), used)
        for manifest in manifests
    ]
