"""Karpathy's split files (``dataset_coco.json``, ``dataset_flickr30k.json``): the splits that
captioning and retrieval papers report on (COCO: 5,000 test images; Flickr30k: 1,000).

Layout (``layouts.karpathy_problems`` validates it)::

    {"images": [{"filepath"*, "filename", "imgid", "split", "sentids", "cocoid"*,
                 "sentences": [{"raw", "tokens", "imgid", "sentid"}]}], "dataset": "coco"}
    (* COCO only; Flickr30k's ``filename`` is the bare image name, the world's includes
    its folder)

Images resolve against an image root: COCO joins ``filepath/filename``, Flickr30k uses
``filename``. The root is the folder passed as ``images`` or the first usual place where the
first images exist (beside the JSON, ``images/``, ``flickr30k-images/``, or one level up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlm_retain.data.benchmarks.common import (
    check_layout,
    choose_split,
    image_base,
    read_json,
    unique_ids,
)
from vlm_retain.data.benchmarks.items import EvalItem, ImageRef
from vlm_retain.data.synthetic.layouts import karpathy_problems

DEFAULT_KARPATHY_SPLIT = "test"


def read_karpathy(path: Path, dataset: str) -> dict[str, Any]:
    """The parsed file, validated (real COCO images may have 6 or 7 sentences: any count
    of at least one is accepted)."""
    doc = read_json(path)
    problems = karpathy_problems(doc, dataset=dataset, captions_per_image=None)
    if not problems:
        problems = [
            f"images[{n}]: no sentences"
            for n, image in enumerate(doc["images"])
            if not image["sentences"]
        ]
    check_layout(problems, path)
    return doc


def _relative_path(entry: Mapping[str, Any], dataset: str) -> str:
    if dataset == "coco":
        return f"{entry['filepath']}/{entry['filename']}"
    return str(entry["filename"])


def _candidates(path: Path, dataset: str, images: Path | None) -> list[Path]:
    here, up = path.parent, path.parent.parent
    places = [here, here / "images", up / "images", up]
    if dataset == "flickr30k":
        places = [
            here / "flickr30k-images",
            up / "flickr30k-images",
            up / "flickr30k" / "flickr30k-images",
            *places,
        ]
    else:
        places += [up / "coco", up / "coco" / "images"]
    return [Path(images), *places] if images is not None else places


def load_karpathy(
    path: Path,
    dataset: str,
    *,
    split: str | None = None,
    images: Path | None = None,
    references: Mapping[int, Sequence[str]] | None = None,
    references_from: str = "",
) -> list[EvalItem]:
    """Items of one Karpathy split (default ``test``), one per image with its reference
    captions. ``references`` (COCO image id -> captions) replaces Karpathy's ``raw`` sentences
    with the official COCO captions when it covers every selected image.

    Ids: COCO the ``cocoid``; Flickr30k the image file's stem (``1000092795``), the same id the
    lmms-lab parquet gives, so predictions can be compared across the two layouts.
    """
    path = Path(path)
    doc = read_karpathy(path, dataset)
    chosen = choose_split(
        {entry["split"] for entry in doc["images"]},
        split,
        (DEFAULT_KARPATHY_SPLIT, "val"),
        path,
    )
    entries = [entry for entry in doc["images"] if entry["split"] == chosen]
    probes = [_relative_path(entry, dataset) for entry in entries[:3]]
    base = image_base(_candidates(path, dataset, images), probes)
    use_coco = references is not None and all(
        entry.get("cocoid") in references for entry in entries
    )
    items = []
    for entry in entries:
        rel = _relative_path(entry, dataset)
        if dataset == "coco":
            item_id = str(entry["cocoid"])
            fields: dict[str, Any] = {"image_id": entry["cocoid"], "filepath": entry["filepath"]}
        else:
            item_id = Path(entry["filename"]).stem
            fields = {}
        refs = (
            list(references[entry["cocoid"]])  # type: ignore[index]
            if use_coco
            else [s["raw"].strip() for s in entry["sentences"]]
        )
        fields.update(
            split=chosen,
            filename=entry["filename"],
            imgid=entry["imgid"],
            references_from=references_from if use_coco else path.name,
        )
        items.append(
            EvalItem(
                id=item_id,
                image=ImageRef.from_path(base / rel),
                references=refs,
                fields=fields,
            )
        )
    unique_ids((item.id for item in items), path, "image")
    return items
