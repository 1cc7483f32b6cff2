"""The task registry: each benchmark is one declarative :class:`Task` entry.

A task ties a loader (files -> :class:`EvalItem` list), a finder (data folder -> that task's
files), a prompt, a token budget and the metric that scores it. Adding a benchmark means writing
its loader in ``vlm_retain.data.benchmarks`` and one entry in :data:`TASKS`; the runner, the
CLI and the report need no change (the lmms-eval idea, without its sprawl).

How a runner uses it::

    for name, sources in find_tasks(data_dir, group="general").items():
        task = get_task(name)
        items = task.load(sources, split=split)
        chosen = task.select(items, limit, seed)          # retrieval: the gallery (100 images)
        record = selection_record(chosen, n_total=len(items), limit=limit, seed=seed)
        prompt = task.render_prompt(item)                 # generate tasks
        row = {"id": item.id, "prediction": ..., **task.reference_of(item)}
        gallery = task.gallery(chosen)                    # retrieval tasks: texts, text_image
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from vlm_retain.data.benchmarks import (
    EvalItem,
    Gallery,
    build_gallery,
    load_coco,
    load_docvqa,
    load_flickr30k,
    load_ocr,
    load_textvqa,
    load_vqav2,
    select,
    selection_record,
)
from vlm_retain.data.benchmarks.discover import (
    find_coco,
    find_docvqa,
    find_flickr30k,
    find_ocr,
    find_textvqa,
    find_vqav2,
    find_world_signs,
)
from vlm_retain.data.benchmarks.retrieval import DEFAULT_GALLERY_IMAGES
from vlm_retain.data.prompts import (
    CAPTION_PROMPT,
    DEFAULT_OCR_PROMPT,
    DOCVQA_PROMPT,
    TEXTVQA_PROMPT,
    VQA_PROMPT,
)
from vlm_retain.errors import InputError

__all__ = [
    "TASKS",
    "Task",
    "find_tasks",
    "get_task",
    "register",
    "select",
    "selection_record",
    "task_names",
]

TaskKind = Literal["generate", "retrieval"]
MetricName = Literal["ocr", "vqa", "anls", "caption", "retrieval"]
TaskGroup = Literal["ocr", "general"]

#: The predictions.jsonl field that carries each metric's references (docs/formats.md).
REFERENCE_FIELD: dict[str, str] = {
    "ocr": "reference",
    "vqa": "answers",
    "anls": "answers",
    "caption": "references",
    "retrieval": "references",
}


class Loader(Protocol):
    """``loader(sources, split=..., images=...) -> items``: what every benchmark loader is."""

    def __call__(
        self, sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
    ) -> list[EvalItem]: ...


@dataclass(frozen=True)
class Task:
    """One benchmark as the runner sees it.

    ``prompt`` is a template in which ``{question}`` is replaced by the item's question (after
    ``question_transform``, e.g. lmms-eval's ``str.capitalize`` for TextVQA); it is filled by
    plain replacement, so braces in questions are safe. ``default_limit`` applies when the user
    gives no ``--limit``: retrieval tasks score a gallery of 100 images with their captions.
    ``max_new_tokens`` is 0 for retrieval (nothing is generated).
    """

    name: str
    kind: TaskKind
    metric: MetricName
    prompt: str
    max_new_tokens: int
    loader: Loader
    find: Callable[[Path], list[Path]]
    group: TaskGroup = "general"
    question_transform: Callable[[str], str] | None = None
    default_limit: int | None = None
    description: str = ""
    comparable_to: str = ""

    @property
    def reference_field(self) -> str:
        """``reference``, ``answers`` or ``references``: the field predictions carry."""
        return REFERENCE_FIELD[self.metric]

    def load(
        self, sources: Sequence[Path], *, split: str | None = None, images: Path | None = None
    ) -> list[EvalItem]:
        """All items of the chosen split (the loader's default split when None)."""
        return self.loader([Path(s) for s in sources], split=split, images=images)

    def select(
        self, items: Sequence[EvalItem], limit: int | None = None, seed: int = 0
    ) -> list[EvalItem]:
        """The deterministic subset to run: ``limit`` items, or ``default_limit`` without one."""
        return select(items, limit if limit is not None else self.default_limit, seed)

    def render_prompt(self, item: EvalItem) -> str:
        """The text sent with the image."""
        question = item.question or ""
        if self.question_transform is not None:
            question = self.question_transform(question)
        return self.prompt.replace("{question}", question)

    def reference_of(self, item: EvalItem) -> dict[str, Any]:
        """``{field: value}`` of the item's references, for a predictions.jsonl row."""
        value = getattr(item, self.reference_field)
        if value is None:
            raise InputError(f"item {item.id!r} has no {self.reference_field} to score against")
        return {self.reference_field: value}

    def gallery(self, items: Sequence[EvalItem]) -> Gallery:
        """Retrieval: the images and the flat caption list (already-selected items, all kept)."""
        if self.kind != "retrieval":
            raise ValueError(f"task {self.name!r} is not a retrieval task")
        return build_gallery(items, None)


def _capitalize(question: str) -> str:
    return question.capitalize()


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add (or replace) a task in the registry; returns it, so entries read as declarations."""
    if task.kind == "retrieval" and task.metric != "retrieval":
        raise ValueError(f"task {task.name!r}: a retrieval task uses the retrieval metric")
    TASKS[task.name] = task
    return task


register(
    Task(
        name="ocr",
        kind="generate",
        metric="ocr",
        prompt=DEFAULT_OCR_PROMPT,
        max_new_tokens=128,
        loader=load_ocr,
        find=find_ocr,
        group="ocr",
        description="line transcription on a manifest's split (default test); CER/WER",
        comparable_to="our own manifests only; CER is micro-averaged (docs/metrics.md)",
    )
)
register(
    Task(
        name="vqav2",
        kind="generate",
        metric="vqa",
        prompt=VQA_PROMPT,
        max_new_tokens=16,
        loader=load_vqav2,
        find=find_vqav2,
        description="VQAv2 (official JSON, lmms-lab parquet or the world's vqav2/); accuracy",
        comparable_to="lmms-eval vqav2_val on val2014 (not test-dev)",
    )
)
register(
    Task(
        name="world-signs",
        kind="generate",
        metric="vqa",
        prompt=VQA_PROMPT,
        max_new_tokens=32,
        loader=load_vqav2,
        find=find_world_signs,
        description="the synthetic world's sign-reading questions (signs/, VQAv2 layout)",
        comparable_to="nothing published: a stand-in for TextVQA/OCRBench",
    )
)
register(
    Task(
        name="coco",
        kind="generate",
        metric="caption",
        prompt=CAPTION_PROMPT,
        max_new_tokens=64,
        loader=load_coco,
        find=find_coco,
        description="COCO captions, Karpathy test (or captions_<subtype>.json, or parquet)",
        comparable_to="Karpathy-test CIDEr in papers; lmms-eval coco2014_cap_val on parquet",
    )
)
register(
    Task(
        name="flickr30k",
        kind="generate",
        metric="caption",
        prompt=CAPTION_PROMPT,
        max_new_tokens=64,
        loader=load_flickr30k,
        find=find_flickr30k,
        description="Flickr30k captions, Karpathy 1k test (or lmms-lab parquet: all 31,783)",
        comparable_to="Karpathy-test numbers; lmms-eval flickr30k_test only on the parquet",
    )
)
register(
    Task(
        name="coco-retrieval",
        kind="retrieval",
        metric="retrieval",
        prompt=CAPTION_PROMPT,
        max_new_tokens=0,
        loader=load_coco,
        find=find_coco,
        default_limit=DEFAULT_GALLERY_IMAGES,
        description="image-text retrieval by caption likelihood on a 100-image Karpathy gallery",
        comparable_to="base vs fine-tuned only; not CLIP-style 5k-image recall",
    )
)
register(
    Task(
        name="flickr30k-retrieval",
        kind="retrieval",
        metric="retrieval",
        prompt=CAPTION_PROMPT,
        max_new_tokens=0,
        loader=load_flickr30k,
        find=find_flickr30k,
        default_limit=DEFAULT_GALLERY_IMAGES,
        description="image-text retrieval by caption likelihood on a 100-image Karpathy gallery",
        comparable_to="base vs fine-tuned only; not CLIP-style 1k-image recall",
    )
)
register(
    Task(
        name="textvqa",
        kind="generate",
        metric="vqa",
        prompt=TEXTVQA_PROMPT,
        max_new_tokens=32,
        loader=load_textvqa,
        find=find_textvqa,
        question_transform=_capitalize,
        description="TextVQA val (official JSON + train_images/, or lmms-lab parquet)",
        comparable_to="lmms-eval textvqa_val (prompt without OCR tokens)",
    )
)
register(
    Task(
        name="docvqa",
        kind="generate",
        metric="anls",
        prompt=DOCVQA_PROMPT,
        max_new_tokens=128,
        loader=load_docvqa,
        find=find_docvqa,
        description="DocVQA val (val_v1.0.json + documents/, or lmms-lab parquet); ANLS",
        comparable_to="lmms-eval docvqa_val; model cards report DocVQA test (server)",
    )
)


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(
            f"unknown task {name!r}", hint=f"known tasks: {', '.join(sorted(TASKS))}"
        ) from None


def task_names(group: TaskGroup | Literal["all"] = "all") -> list[str]:
    """Registered task names of a group, in registration order."""
    return [name for name, task in TASKS.items() if group == "all" or task.group == group]


def find_tasks(
    data_dir: Path,
    *,
    group: TaskGroup | Literal["all"] = "all",
    names: Iterable[str] | None = None,
) -> dict[str, list[Path]]:
    """``{task name: its source paths}`` for every task whose files are under ``data_dir``.

    Tasks with nothing found are left out (an empty dict means nothing was recognised; the
    runner says so). Raises InputError when ``data_dir`` is not a folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError("no such folder", path=data_dir, hint="pass the benchmark data folder")
    wanted = list(names) if names is not None else task_names(group)
    found: dict[str, list[Path]] = {}
    for name in wanted:
        sources = get_task(name).find(data_dir)
        if sources:
            found[name] = sources
    return found
