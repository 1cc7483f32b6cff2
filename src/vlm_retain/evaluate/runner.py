"""The evaluation runner: tasks found under data folders, one model, predictions and results.

For each task it writes ``OUT/<task>/``:

- ``selection.json``: which items were evaluated (``--limit`` subsets are deterministic);
- ``predictions.jsonl``: one line per item, written incrementally (``.partial`` beside it,
  flushed per batch), so an interrupted run resumes where it stopped without redoing work;
  retrieval tasks write ``scores.npy`` (+ id files) instead, once the matrix is complete;
- ``results.json``: the metrics of the metrics layer, with the model, the task's wall time and
  throughput (and the estimated cost with ``gpu_cost_per_hour``) in ``provenance.timing``.

A task whose ``results.json`` exists with the same settings is skipped (reported as cached).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from vlm_retain.data.benchmarks import EvalItem, selection_record
from vlm_retain.errors import InputError
from vlm_retain.evaluate.generate.base import GenerationConfig, Request
from vlm_retain.evaluate.generate.resume import ResumableJsonl
from vlm_retain.evaluate.results import build_results, read_results, write_results
from vlm_retain.evaluate.scoring import score_file
from vlm_retain.evaluate.tasks import Task, find_tasks, get_task
from vlm_retain.fsutil import atomic_write_json
from vlm_retain.progress import progress_bar

#: The figure each task reports first in summaries (and whether higher is better).
HEADLINE: dict[str, tuple[str, bool]] = {
    "ocr": ("cer", False),
    "vqa": ("accuracy", True),
    "anls": ("anls", True),
    "caption": ("cider", True),
    "retrieval": ("t2i_r1", True),
}


@dataclass(frozen=True)
class EvalSettings:
    """What a run was asked to do; every field that changes predictions is part of resume checks."""

    model: str
    adapter: str | None = None
    backend: str = "hf"
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int = 16
    max_new_tokens: int | None = None  # None: each task's own budget
    resamples: int = 1000
    gpu_cost_per_hour: float | None = None
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "auto"

    def for_task(self, task: Task) -> dict[str, Any]:
        """The settings recorded with (and compared against) a task's outputs."""
        return {
            "task": task.name,
            "model": self.model,
            "adapter": self.adapter,
            "backend": self.backend,
            "split": self.split,
            "limit": self.limit,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens or task.max_new_tokens,
            "prompt": task.prompt,
        }


@dataclass
class TaskOutcome:
    """One task's result for the summary table."""

    task: str
    n: int
    metrics: dict[str, Any] = field(default_factory=dict)
    ci95: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    items_per_s: float = 0.0
    cost: float | None = None
    errors: int = 0
    status: str = "done"  # done | cached | empty


def discover(group: str, data: Sequence[Path]) -> dict[str, list[Path]]:
    """Tasks (with their source files) found under the data folders for ``group``."""
    found: dict[str, list[Path]] = {}
    for folder in data:
        if not Path(folder).exists():
            raise InputError("data folder not found", path=folder)
        for name, sources in find_tasks(Path(folder), group=group).items():
            found.setdefault(name, []).extend(sources)
    if not found:
        what = {"ocr": "OCR manifest", "general": "benchmark files"}.get(group, "tasks")
        raise InputError(
            f"found no {what} under {', '.join(str(d) for d in data)}",
            hint="see docs/evaluation.md for the layouts each task reads",
        )
    return dict(sorted(found.items()))


class Runner:
    """Runs tasks for one model, loading it once, only when a task needs it."""

    def __init__(
        self,
        settings: EvalSettings,
        out: Path,
        *,
        console: Console | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = settings
        self.out = Path(out)
        self.console = console or Console(markup=False, highlight=False)
        self.progress = progress
        self._loaded: Any = None

    # ------------------------------------------------------------------ model
    @property
    def loaded(self) -> Any:
        """The model, loaded on first use (a run whose tasks are all cached never loads it)."""
        if self._loaded is None:
            from vlm_retain.models.loading import load_model

            self._loaded = load_model(
                self.settings.model,
                adapter=self.settings.adapter,
                device=self.settings.device,
                dtype=self.settings.dtype,
            )
        return self._loaded

    def model_block(self) -> dict[str, Any]:
        if self._loaded is not None:
            return self._loaded.describe()
        return {
            "path": self.settings.model,
            "adapter": self.settings.adapter,
            "family": None,
            "dtype": None,
        }

    # ------------------------------------------------------------------ tasks
    def run(self, tasks: dict[str, list[Path]]) -> list[TaskOutcome]:
        outcomes = []
        for name, sources in tasks.items():
            outcomes.append(self.run_task(get_task(name), sources))
        return outcomes

    def run_task(self, task: Task, sources: list[Path]) -> TaskOutcome:
        folder = self.out / task.name
        settings = self.settings.for_task(task)
        cached = self._cached(folder, settings)
        if cached is not None:
            return cached
        items = task.load(sources, split=self.settings.split)
        chosen = task.select(items, self.settings.limit, self.settings.seed)
        if not chosen:
            self.console.print(f"{task.name}: no items in this split; skipped")
            return TaskOutcome(task=task.name, n=0, status="empty")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            folder / "selection.json",
            selection_record(
                chosen, n_total=len(items), limit=self.settings.limit, seed=self.settings.seed
            ),
        )
        if task.kind == "retrieval":
            return self._retrieval(task, chosen, folder, settings)
        return self._generate(task, chosen, folder, settings)

    def _cached(self, folder: Path, settings: dict[str, Any]) -> TaskOutcome | None:
        results_file = folder / "results.json"
        if self.settings.overwrite or not results_file.is_file():
            return None
        results = read_results(results_file)
        if results.get("provenance", {}).get("settings") != json.loads(json.dumps(settings)):
            raise InputError(
                "results from a run with other settings exist here",
                path=results_file,
                hint="use another --out, or pass --overwrite to evaluate again",
            )
        timing = results["provenance"].get("timing", {})
        return TaskOutcome(
            task=settings["task"],
            n=results["n"],
            metrics=results["metrics"],
            ci95=results["ci95"],
            seconds=timing.get("seconds", 0.0),
            items_per_s=timing.get("items_per_s", 0.0),
            cost=timing.get("cost"),
            errors=timing.get("errors", 0),
            status="cached",
        )

    def _generate(
        self, task: Task, items: list[EvalItem], folder: Path, settings: dict[str, Any]
    ) -> TaskOutcome:
        from vlm_retain.evaluate.generate import make_backend

        predictions = folder / "predictions.jsonl"
        writer = ResumableJsonl(predictions, settings, overwrite=self.settings.overwrite)
        done = writer.start()
        todo = [item for item in items if item.id not in done]
        by_id = {item.id: item for item in todo}
        errors = 0
        model = None
        if todo:  # load before the clock starts: timing measures generation, not loading
            model = self.loaded if self.settings.backend == "hf" else self.settings.model
        start = time.perf_counter()
        try:
            if todo:
                config = GenerationConfig(
                    batch_size=self.settings.batch_size, max_new_tokens=settings["max_new_tokens"]
                )
                backend = make_backend(
                    self.settings.backend,
                    model=model,  # hf: the loaded model already carries the adapter
                    adapter=None if self.settings.backend == "hf" else self.settings.adapter,
                    config=config,
                )
                requests = [
                    Request(item.id, _request_image(item), task.render_prompt(item))
                    for item in todo
                ]
                with self._bar() as bar:
                    progress_task = bar.add_task(f"{task.name}", total=len(todo))
                    batch: list[dict[str, Any]] = []
                    for result in backend.generate(requests):
                        item = by_id[result.id]
                        errors += result.error is not None
                        batch.append(_prediction_line(task, item, result))
                        if len(batch) >= self.settings.batch_size:
                            writer.write(batch)
                            batch = []
                        bar.advance(progress_task)
                    writer.write(batch)
        finally:
            writer.close()
        seconds = time.perf_counter() - start
        writer.finish([item.id for item in items])
        report, _ = score_file(
            task.metric, predictions, resamples=self.settings.resamples, seed=self.settings.seed
        )
        return self._write_results(
            task, report, folder, settings, seconds, len(todo), errors, inputs=[predictions]
        )

    def _retrieval(
        self, task: Task, items: list[EvalItem], folder: Path, settings: dict[str, Any]
    ) -> TaskOutcome:
        from vlm_retain.evaluate.likelihood import score_matrix
        from vlm_retain.evaluate.metrics.retrieval import (
            load_score_matrix,
            save_score_matrix,
            score_retrieval,
            sidecar_paths,
        )

        gallery = task.gallery(items)
        scores_file = folder / "scores.npy"
        settings_file = folder / "scores.settings.json"
        start = time.perf_counter()
        reuse = (
            scores_file.is_file()
            and settings_file.is_file()
            and not self.settings.overwrite
            and json.loads(settings_file.read_text(encoding="utf-8")) == settings
        )
        if not reuse:
            loaded = self.loaded  # loaded before the clock starts: timing measures scoring
            images = [item.image.load() for item in gallery.images]
            start = time.perf_counter()
            with self._bar() as bar:
                progress_task = bar.add_task(f"{task.name}", total=len(images))
                matrix = score_matrix(
                    loaded,
                    images,
                    gallery.texts,
                    prompt=task.prompt,
                    batch_size=self.settings.batch_size,
                    progress=lambda done, total: bar.update(progress_task, completed=done),
                )
            texts = [
                {"id": t, "image_id": gallery.image_ids[i]}
                for t, i in zip(gallery.text_ids, gallery.text_image, strict=True)
            ]
            save_score_matrix(scores_file, matrix, gallery.image_ids, texts)
            atomic_write_json(settings_file, settings)
        seconds = time.perf_counter() - start
        matrix, image_ids, text_ids, text_image = load_score_matrix(scores_file)
        report = score_retrieval(
            matrix,
            text_image,
            image_ids=image_ids,
            text_ids=text_ids,
            resamples=self.settings.resamples,
            seed=self.settings.seed,
        )
        return self._write_results(
            task,
            report,
            folder,
            settings,
            seconds,
            0 if reuse else len(image_ids),
            0,
            inputs=[scores_file, *sidecar_paths(scores_file)],
        )

    def _write_results(
        self,
        task: Task,
        report: Any,
        folder: Path,
        settings: dict[str, Any],
        seconds: float,
        processed: int,
        errors: int,
        *,
        inputs: list[Path],
    ) -> TaskOutcome:
        rate = processed / seconds if seconds > 0 and processed else 0.0
        cost = None
        if self.settings.gpu_cost_per_hour is not None:
            cost = seconds / 3600.0 * self.settings.gpu_cost_per_hour
        results = build_results(
            report,
            split=self.settings.split or "default",
            inputs=inputs,
            seed=self.settings.seed,
            resamples=self.settings.resamples,
            model=self.model_block(),
            config=settings,
        )
        results["provenance"]["settings"] = settings
        results["provenance"]["timing"] = {
            "seconds": round(seconds, 3),
            "items": processed,
            "items_per_s": round(rate, 3),
            "cost": cost,
            "errors": errors,
        }
        if errors:
            report.warnings.append(
                f"{errors} items could not be run (image errors); "
                "they count as wrong (empty prediction)"
            )
            results["warnings"] = report.warnings
        write_results(folder / "results.json", results)
        return TaskOutcome(
            task=task.name,
            n=report.n,
            metrics=report.metrics,
            ci95=report.ci95,
            seconds=seconds,
            items_per_s=rate,
            cost=cost,
            errors=errors,
        )

    def _bar(self) -> Progress:
        return progress_bar(self.progress)


def _request_image(item: EvalItem) -> Any:
    """A path the backend opens when its batch comes, or the decoded image for parquet bytes."""
    path = getattr(item.image, "path", None)
    if path is not None and not item.image.in_parquet:
        return Path(path)
    return item.image.load()


def _prediction_line(task: Task, item: EvalItem, result: Any) -> dict[str, Any]:
    """One predictions.jsonl line in the contract of docs/metrics.md."""
    meta = {**item.fields, "n_tokens": result.n_tokens}
    if result.error is not None:
        meta["error"] = result.error
    return {"id": item.id, "prediction": result.text, **task.reference_of(item), "meta": meta}


def compare_runs(base: Path, other: Path) -> list[dict[str, Any]]:
    """Per-task, per-metric values of two eval folders and their differences."""
    rows = []
    base, other = Path(base), Path(other)
    for results_file in sorted(base.glob("*/results.json")):
        counterpart = other / results_file.parent.name / "results.json"
        if not counterpart.is_file():
            continue
        a, b = read_results(results_file), read_results(counterpart)
        for metric, value in a["metrics"].items():
            new = b["metrics"].get(metric)
            if not isinstance(value, int | float) or not isinstance(new, int | float):
                continue
            rows.append(
                {
                    "task": results_file.parent.name,
                    "metric": metric,
                    "base": value,
                    "other": new,
                    "delta": new - value,
                    "relative": (new / value) if value else None,
                }
            )
    if not rows:
        raise InputError(
            f"no task has results in both {base} and {other}",
            hint="pass two folders written by 'vlm-retain eval'",
        )
    return rows
