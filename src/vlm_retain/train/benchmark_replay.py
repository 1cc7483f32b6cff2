"""Replay from a benchmark's own layout: VQAv2, TextVQA, DocVQA, COCO and Flickr30k folders
(and the synthetic world's ``vqav2/`` and ``signs/``) read through the data layer's loaders.

Why: general data for replay is most often a benchmark download (VQAv2 train2014, Karpathy's
COCO train split), and importing it into a manifest first is an extra step that adds nothing.
A ``benchmark:`` replay source that holds a ``manifest.jsonl`` is read as a manifest (by
:func:`~vlm_retain.train.mixture.load_samples`); any other folder is searched with
:mod:`vlm_retain.data.benchmarks.discover` and every layout found is loaded with its loader.

How items become training samples:

- **VQA** (VQAv2, world signs, TextVQA, DocVQA): the prompt is the evaluation's
  (:data:`~vlm_retain.data.prompts.VQA_PROMPT` with the question; TextVQA's question passed
  through ``str.capitalize`` as lmms-eval does), the answer is the most common of the human
  answers (VQAv2's ``multiple_choice_answer`` rule: the majority of the ten); a tie goes to the
  alphabetically first of the tied answers, so the choice never depends on annotator order.
  Items without a non-empty answer are skipped.
- **Captions** (COCO, Flickr30k): one sample per image (so an image with five references does
  not weigh five times in the draw), its answer one reference chosen by a seeded draw
  (``(seed, crc32(item id))``: the same caption in every epoch and every run with that seed),
  asked ``data.caption_prompt``.
- **Split**: the replay source's ``split`` (default ``train``) is matched to the benchmark's
  names: ``train`` is ``train``, ``train2014`` or ``train2017``; ``val`` is ``val``,
  ``val2014``, ``val2017``, ``validation`` or ``minival``; ``test`` is ``test``, ``test2015``
  or ``test2014`` (the first that exists is used).
- **Images** must be files: their sizes are read (header only, once per image) for the token
  counts. Parquet-backed layouts (lmms-lab shards, images as bytes) are refused with a clear
  error: export them to image files first (or import them to a manifest). Writing a cache of
  images behind the user's back would silently copy gigabytes.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlm_retain.data.images import BadImage, open_image
from vlm_retain.data.prompts import CAPTION_PROMPT, VQA_PROMPT
from vlm_retain.errors import InputError

#: Benchmark split names for each replay ``split`` value, in the order they are tried.
SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "train2014", "train2017"),
    "val": ("val", "val2014", "val2017", "validation", "minival"),
    "test": ("test", "test2015", "test2014"),
}


@dataclass(frozen=True)
class _Kind:
    name: str
    task: str  # "vqa" or "caption"
    finder: Callable[[Path], list[Path]]
    loader: Callable[..., list[Any]]
    question: Callable[[str], str] = lambda q: q


def _kinds() -> list[_Kind]:
    from vlm_retain.data.benchmarks import (
        load_coco,
        load_docvqa,
        load_flickr30k,
        load_textvqa,
        load_vqav2,
    )
    from vlm_retain.data.benchmarks.discover import (
        find_coco,
        find_docvqa,
        find_flickr30k,
        find_textvqa,
        find_vqav2,
        find_world_signs,
    )

    return [
        _Kind("vqav2", "vqa", find_vqav2, load_vqav2),
        _Kind("world-signs", "vqa", find_world_signs, load_vqav2),
        _Kind("textvqa", "vqa", find_textvqa, load_textvqa, str.capitalize),
        _Kind("docvqa", "vqa", find_docvqa, load_docvqa),
        _Kind("coco", "caption", find_coco, load_coco),
        _Kind("flickr30k", "caption", find_flickr30k, load_flickr30k),
    ]


def majority_answer(answers: Sequence[str]) -> str | None:
    """The most common non-empty answer (stripped); ties go to the alphabetically first."""
    counts = Counter(a.strip() for a in answers if a and a.strip())
    if not counts:
        return None
    top = max(counts.values())
    return min(a for a, c in counts.items() if c == top)


def benchmark_samples(
    folder: str | Path,
    *,
    counter: Callable[[str, str, tuple[int, int] | None], int],
    split: str = "train",
    source: str | None = None,
    replay: bool = True,
    tasks: Sequence[str] | None = None,
    caption_prompt: str = CAPTION_PROMPT,
    seed: int = 0,
    what: str = "replay benchmark",
) -> list[Any]:
    """Samples from every benchmark layout found under ``folder`` (see the module docstring).

    ``source`` names them (default: the layout, e.g. ``vqav2``); ``tasks`` keeps only ``vqa``
    and/or ``caption`` layouts. Raises :class:`InputError` when no layout is found, the split is
    missing, images are in parquet, an image cannot be opened, or nothing is left.
    """
    from vlm_retain.train.mixture import Sample

    folder = Path(folder)
    wanted = set(tasks) if tasks else {"vqa", "caption"}
    found = [(kind, kind.finder(folder)) for kind in _kinds()]
    found = [(kind, sources) for kind, sources in found if sources]
    if not found:
        raise InputError(
            f"{what}: no manifest.jsonl and no benchmark layout found here (VQAv2, TextVQA, "
            "DocVQA, COCO captions, Flickr30k)",
            path=folder,
            hint="point at the benchmark's folder (e.g. the one holding Questions/ and "
            "Annotations/), or import it to a manifest",
        )
    samples: list[Any] = []
    sizes: dict[Path, tuple[int, int]] = {}
    for kind, sources in found:
        if kind.task not in wanted:
            continue
        parquet = [s for s in sources if s.suffix == ".parquet"]
        if parquet:
            raise InputError(
                f"{what}: {kind.name} is stored as parquet (images as bytes), which replay does "
                "not read",
                path=parquet[0],
                hint="export the images to files first (the official JSON layout with an image "
                "folder), or import the data to a manifest",
            )
        items = _load_split(kind, sources, split, folder, what)
        for item in items:
            ref = item.image
            if ref.path is None or ref.data is not None or ref.in_parquet:
                raise InputError(
                    f"{what}: {kind.name} item {item.id} has no image file",
                    path=folder,
                    hint="export the images to files first",
                )
            if kind.task == "vqa":
                answer = majority_answer(item.answers or [])
                if answer is None or not item.question:
                    continue
                prompt = VQA_PROMPT.format(question=kind.question(item.question))
            else:
                refs = [r.strip() for r in item.references or [] if r and r.strip()]
                if not refs:
                    continue
                rng = np.random.default_rng([seed, zlib.crc32(item.id.encode("utf-8"))])
                answer = refs[int(rng.integers(len(refs)))]
                prompt = caption_prompt
            size = sizes.get(ref.path)
            if size is None:
                size = sizes[ref.path] = _size(ref.path, what)
            samples.append(
                Sample(
                    source=source or kind.name,
                    image=ref.path,
                    prompt=prompt,
                    answer=answer,
                    task=kind.task,
                    tokens=counter(prompt, answer, size),
                    replay=replay,
                    id=f"{kind.name}:{item.id}",
                    size=size,
                )
            )
    if not samples:
        names = ", ".join(kind.name for kind, _ in found)
        raise InputError(
            f"{what} is empty: no {'/'.join(sorted(wanted))} items with an answer in split "
            f"{split!r} (layouts found: {names})",
            path=folder,
        )
    return samples


def _load_split(kind: _Kind, sources: list[Path], split: str, folder: Path, what: str) -> list:
    """The items of the first benchmark split name that matches ``split``."""
    last: InputError | None = None
    for name in SPLIT_NAMES.get(split, (split,)):
        try:
            return kind.loader(sources, split=name)
        except InputError as exc:
            if "no split" not in str(exc):
                raise
            last = exc
    raise InputError(
        f"{what}: {kind.name} has no {split} split (tried {', '.join(SPLIT_NAMES[split])})",
        path=folder,
        hint=f"{last}; set the replay source's split" if last else None,
    )


def _size(path: Path, what: str) -> tuple[int, int]:
    try:
        with open_image(path) as handle:
            return handle.size
    except BadImage as exc:
        raise InputError(f"{what}: {exc}: {path}", path=path, field="image") from None
