"""The evaluation runner: tasks found under data folders, one model, predictions and results.

For each task it writes ``OUT/<task>/``:

- ``selection.json``: which items were evaluated (``--limit`` subsets are deterministic);
- ``predictions.jsonl``: one line per item, written incrementally (``.partial`` beside it,
  flushed per batch), so an interrupted run resumes where it stopped without redoing work;
  retrieval tasks write ``scores.npy`` (+ id files) instead, once the matrix is complete;
- ``results.json``: the metrics of the metrics layer, with the model, the task's wall time and
  throughput (and the estimated cost with ``gpu_cost_per_hour``) in ``provenance.timing``.

A task whose ``results.json`` exists with the same settings is skipped (reported as cached).
Finished predictions are stamped with their settings (``predictions.settings.json``), so a run
stopped while scoring resumes by scoring them again, without generating anything.

Every task's files are read, validated and its subset chosen before the first task runs, so a
broken benchmark file stops the run at once rather than after an hour of another task.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from vlm_retain.data.benchmarks import BadImage, EvalItem, build_gallery, selection_record
from vlm_retain.data.benchmarks.discover import check_sources
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


#: Lines per generate call when ``--batch-size`` is not given: on a GPU the 7B shape read 125
#: lines/s at 256 on an H200 (20 GiB in all) against 28 at 32 (docs/performance.md); on a CPU
#: larger batches stop paying long before that.
AUTO_BATCH_SIZE = {"cpu": 16, "cuda": 256}


@dataclass(frozen=True)
class EvalSettings:
    """What a run was asked to do; every field that changes predictions is part of resume checks."""

    model: str
    adapter: str | None = None
    backend: str = "hf"
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int | None = None  # None: AUTO_BATCH_SIZE by device; not recorded
    kv_cache: str = "dynamic"  # dynamic | static (HF backend): same tokens, not recorded
    max_new_tokens: int | None = None  # None: each task's own budget
    resamples: int = 1000
    gpu_cost_per_hour: float | None = None
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32: recorded (it changes predictions)
    allow_pickle: bool = False  # how the weights may be read, not what they are: not recorded
    trust_remote_code: bool = False
    strict_adapter_base: bool = True  # False: --ignore-adapter-base
    #: The OCR prompt, when a model was fine-tuned with another one than the default
    #: (``data.prompt`` of its training config): it must be asked what it learnt to answer.
    ocr_prompt: str | None = None

    def task(self, name: str) -> Task:
        """The registered task, with :attr:`ocr_prompt` in place of the OCR task's prompt."""
        task = get_task(name)
        if self.ocr_prompt and task.name == "ocr":
            return replace(task, prompt=self.ocr_prompt)
        return task

    def for_task(self, task: Task) -> dict[str, Any]:
        """The settings recorded with (and compared against) a task's outputs.

        Local model and adapter folders are recorded as absolute paths (``--model m`` and
        ``--model /abs/m`` are the same model); hub ids as given.
        """
        return {
            "task": task.name,
            "model": model_identity(self.model),
            "adapter": model_identity(self.adapter),
            "backend": self.backend,
            "dtype": self.dtype,
            "split": self.split,
            "limit": self.limit,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens or task.max_new_tokens,
            "prompt": task.prompt,
        }


def model_identity(value: str | Path | None) -> str | None:
    """A local folder's resolved absolute path; anything else (a hub id) unchanged."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else str(value)


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


@dataclass
class _Plan:
    """A task read and validated, ready to run (or already settled: cached, empty)."""

    task: Task
    folder: Path
    settings: dict[str, Any]
    items: list[EvalItem] = field(default_factory=list)
    chosen: list[EvalItem] = field(default_factory=list)
    outcome: TaskOutcome | None = None
    finished: dict[str, Any] | None = None  # the stamp of complete predictions to score again


def discover(group: str, data: Sequence[Path]) -> dict[str, list[Path]]:
    """Tasks (with their source files) found under the data folders for ``group``.

    The same file reached twice (a folder passed twice, or nested in another) counts once.
    Several copies of one benchmark (two ``dataset_coco.json``...) are refused here, before any
    task runs, naming both; several OCR manifests are combined (:func:`check_sources`).
    """
    found: dict[str, list[Path]] = {}
    for folder in data:
        if not Path(folder).exists():
            raise InputError("data folder not found", path=folder)
        for name, sources in find_tasks(Path(folder), group=group).items():
            have = found.setdefault(name, [])
            have.extend(s for s in (Path(p).resolve() for p in sources) if s not in have)
    for name, sources in found.items():
        check_sources(name, sources)
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
        loaded: Any = None,
        reuse: Sequence[Path] = (),
    ) -> None:
        """``reuse``: other output folders of this model; a task missing here whose results
        there were made with the same recorded settings is copied in instead of evaluated
        again. The settings name the model by path, not by its weights: pass only folders
        made from the weights now at that path."""
        self.settings = settings
        self.out = Path(out)
        self.console = console or Console(markup=False, highlight=False)
        self.progress = progress
        self._loaded: Any = loaded  # a model another runner already loaded (same settings)
        self.reuse = [Path(p) for p in reuse]

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
                allow_pickle=self.settings.allow_pickle,
                trust_remote_code=self.settings.trust_remote_code,
                strict_adapter_base=self.settings.strict_adapter_base,
            )
        return self._loaded

    @property
    def batch_size(self) -> int:
        """``settings.batch_size``, or by device when it is None (:data:`AUTO_BATCH_SIZE`)."""
        if self.settings.batch_size is not None:
            return self.settings.batch_size
        if self.settings.backend != "hf":
            return AUTO_BATCH_SIZE["cuda"]  # vLLM runs on a GPU
        return AUTO_BATCH_SIZE["cuda" if self.loaded.device.type == "cuda" else "cpu"]

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
        """Read, validate and select every task first (a broken file anywhere stops the run
        before any work), then run them in order."""
        plans = [self.prepare(self.settings.task(name), sources) for name, sources in tasks.items()]
        return [self.execute(plan) for plan in plans]

    def run_task(self, task: Task, sources: list[Path]) -> TaskOutcome:
        return self.execute(self.prepare(task, sources))

    def prepare(self, task: Task, sources: list[Path]) -> _Plan:
        """Everything that can fail on the inputs, without the model: earlier outputs with
        other settings, the layout of the task's files, the subset."""
        folder = self.out / task.name
        plan = _Plan(task=task, folder=folder, settings=self.settings.for_task(task))
        self._copy_reusable(folder, plan.settings)
        plan.outcome = self._cached(folder, plan.settings)
        if plan.outcome is not None:
            return plan
        plan.items = task.load(sources, split=self.settings.split)
        plan.chosen = task.select(plan.items, self.settings.limit, self.settings.seed)
        if not plan.chosen:
            plan.outcome = TaskOutcome(task=task.name, n=0, status="empty")
        elif task.kind == "generate":
            plan.finished = self._finished_predictions(folder, plan.settings, plan.chosen)
        return plan

    def execute(self, plan: _Plan) -> TaskOutcome:
        task, folder, settings, chosen = plan.task, plan.folder, plan.settings, plan.chosen
        if plan.outcome is not None:
            if plan.outcome.status == "empty":
                self.console.print(f"{task.name}: no items in this split; skipped")
            return plan.outcome
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            folder / "selection.json",
            selection_record(
                chosen, n_total=len(plan.items), limit=self.settings.limit, seed=self.settings.seed
            ),
        )
        if task.kind == "retrieval":
            return self._retrieval(task, chosen, folder, settings)
        return self._generate(task, chosen, folder, settings, finished=plan.finished)

    def _finished_predictions(
        self, folder: Path, settings: dict[str, Any], chosen: list[EvalItem]
    ) -> dict[str, Any] | None:
        """The stamp of complete predictions of this very run (scoring was interrupted), None
        when there are none; predictions of another run, or a partial file of one, are refused
        here, before any task runs."""
        predictions = folder / PREDICTIONS
        if self.settings.overwrite:
            return None
        wanted = json.loads(json.dumps(settings))
        partial_settings = folder / (PREDICTIONS + ".partial.json")
        if not predictions.is_file():
            if (folder / (PREDICTIONS + ".partial")).is_file() and partial_settings.is_file():
                _require_same(
                    _read_json(partial_settings), wanted, folder / (PREDICTIONS + ".partial")
                )
            return None
        stamp_file = folder / PREDICTIONS_STAMP
        stamp = _read_json(stamp_file) if stamp_file.is_file() else None
        if not isinstance(stamp, dict) or not isinstance(stamp.get("settings"), dict):
            raise InputError(
                f"complete predictions exist without their settings ({PREDICTIONS_STAMP})",
                path=predictions,
                hint="pass --overwrite to generate them again, or choose another --out",
            )
        _require_same(stamp["settings"], wanted, predictions)
        ids = [str(line.get("id")) for line in _read_jsonl(predictions)]
        if ids != [item.id for item in chosen]:
            raise InputError(
                "complete predictions here are for other items than this run selects "
                f"({len(ids)} lines, {len(chosen)} items selected)",
                path=predictions,
                hint="pass --overwrite to generate them again, or choose another --out",
            )
        return stamp

    def _copy_reusable(self, folder: Path, settings: dict[str, Any]) -> None:
        """Copy the task's folder from the first ``reuse`` folder whose results have exactly
        ``settings`` (the same model, task, subset and decoding), when ``folder`` has none."""
        if self.settings.overwrite or folder.exists():
            return
        wanted = json.loads(json.dumps(settings))
        for other in self.reuse:
            source = other / folder.name
            try:
                results = read_results(source / "results.json")
            except (OSError, ValueError, InputError):
                continue
            if results.get("provenance", {}).get("settings") == wanted:
                staging = folder.with_name(f".{folder.name}.copying")
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(source, staging)
                staging.rename(folder)  # whole or not at all
                return

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
        self,
        task: Task,
        items: list[EvalItem],
        folder: Path,
        settings: dict[str, Any],
        *,
        finished: dict[str, Any] | None = None,
    ) -> TaskOutcome:
        predictions = folder / PREDICTIONS
        stamp_file = folder / PREDICTIONS_STAMP
        if finished is not None:  # complete from a run stopped while scoring: score them
            self.console.print(f"{task.name}: predictions complete from an earlier run; scoring")
            errors = sum(
                bool((line.get("meta") or {}).get("error")) for line in _read_jsonl(predictions)
            )
            timing = finished.get("timing") or {}
            seconds, processed = float(timing.get("seconds", 0.0)), int(timing.get("items", 0))
        else:
            if self.settings.overwrite:  # never score old predictions under a new stamp
                for path in (stamp_file, predictions):
                    path.unlink(missing_ok=True)
            seconds, processed, errors = self._predict(task, items, predictions, settings)
        report, _ = score_file(
            task.metric, predictions, resamples=self.settings.resamples, seed=self.settings.seed
        )
        return self._write_results(
            task, report, folder, settings, seconds, processed, errors, inputs=[predictions]
        )

    def _predict(
        self, task: Task, items: list[EvalItem], predictions: Path, settings: dict[str, Any]
    ) -> tuple[float, int, int]:
        """Generate what is missing (resumably) and finish ``predictions.jsonl`` with its
        stamp; return (seconds, items generated, items with image errors)."""
        from vlm_retain.evaluate.generate import make_backend

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
                    batch_size=self.batch_size,
                    max_new_tokens=settings["max_new_tokens"],
                    kv_cache=self.settings.kv_cache,
                )
                options = (
                    {}
                    if self.settings.backend == "hf"
                    else {"dtype": _vllm_dtype(self.settings.dtype)}
                )
                backend = make_backend(
                    self.settings.backend,
                    model=model,  # hf: the loaded model already carries the adapter
                    adapter=None if self.settings.backend == "hf" else self.settings.adapter,
                    config=config,
                    **options,
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
                        if len(batch) >= self.batch_size:
                            writer.write(batch)
                            batch = []
                        bar.advance(progress_task)
                    writer.write(batch)
        finally:
            writer.close()
        seconds = time.perf_counter() - start
        # the stamp first: a crash before finish leaves the partial file, which resumes; after
        # it, the complete file and its stamp, which are scored again without generating
        timing = {"seconds": round(seconds, 3), "items": len(todo), "errors": errors}
        atomic_write_json(
            predictions.with_name(PREDICTIONS_STAMP), {"settings": settings, "timing": timing}
        )
        writer.finish([item.id for item in items])
        return seconds, len(todo), errors

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
        gallery_ids = gallery.image_ids
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
            images, kept, failed = [], [], []
            for item in gallery.images:
                try:
                    images.append(item.image.load())
                    kept.append(item)
                except BadImage as exc:
                    failed.append(f"{item.id}: {exc}")
            if failed:
                # drop the image with its captions: rows and columns of the matrix stay paired
                gallery = build_gallery(kept, None)
                assert gallery.image_ids == [item.id for item in kept]
            if not kept:
                self.console.print(
                    f"{task.name}: none of the {len(failed)} gallery images could be decoded "
                    f"(first: {failed[0]}); nothing to score"
                )
                return TaskOutcome(task=task.name, n=0, errors=len(failed), status="empty")
            if failed:
                self.console.print(
                    f"{task.name}: warning: {len(failed)} of {len(failed) + len(kept)} gallery "
                    f"images could not be decoded and are left out with their captions "
                    f"(first: {failed[0]})"
                )
            start = time.perf_counter()
            with self._bar() as bar:
                progress_task = bar.add_task(f"{task.name}", total=len(images))
                matrix = score_matrix(
                    loaded,
                    images,
                    gallery.texts,
                    prompt=task.prompt,
                    batch_size=self.batch_size,
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
        dropped = len(set(gallery_ids) - set(image_ids))
        return self._write_results(
            task,
            report,
            folder,
            settings,
            seconds,
            0 if reuse else len(image_ids),
            dropped,
            inputs=[scores_file, *sidecar_paths(scores_file)],
            error_note=(
                f"{dropped} gallery images could not be decoded; they were left out with their "
                f"captions (Recall@K is over the {len(image_ids)} images left)"
            ),
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
        error_note: str | None = None,
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
                error_note
                or f"{errors} items could not be run (image errors); "
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


def compare_runs(base: Path, other: Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """Per-task, per-metric values of two eval folders and their differences.

    Each row carries ``same_items``: whether both runs evaluated the same items of that task
    (their ``selection.json`` ids, limit and seed agree) and ``item_note`` saying how they
    differ otherwise. With ``strict`` such a task is an error instead.
    """
    rows = []
    base, other = Path(base), Path(other)
    for results_file in sorted(base.glob("*/results.json")):
        counterpart = other / results_file.parent.name / "results.json"
        if not counterpart.is_file():
            continue
        task = results_file.parent.name
        note = selection_difference(results_file.parent, counterpart.parent)
        if note is not None and strict:
            raise InputError(
                f"{task}: the two runs evaluated different items ({note})",
                path=counterpart.parent,
                hint="rerun both with the same --split, --limit and --seed, or drop --strict",
            )
        a, b = read_results(results_file), read_results(counterpart)
        for metric, value in a["metrics"].items():
            new = b["metrics"].get(metric)
            if not isinstance(value, int | float) or not isinstance(new, int | float):
                continue
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "base": value,
                    "other": new,
                    "delta": new - value,
                    "relative": (new / value) if value else None,
                    "same_items": note is None,
                    "item_note": note,
                }
            )
    if not rows:
        raise InputError(
            f"no task has results in both {base} and {other}",
            hint="pass two folders written by 'vlm-retain eval'",
        )
    return rows


def selection_difference(base_task: Path, other_task: Path) -> str | None:
    """How two task folders' ``selection.json`` differ (None when they chose the same items)."""
    records = []
    for folder in (base_task, other_task):
        try:
            records.append(_read_json(folder / "selection.json"))
        except InputError:
            return f"no readable selection.json in {folder}"
    a, b = records
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "unreadable selection.json"
    differences = [
        f"{key} {a.get(key)!r} vs {b.get(key)!r}"
        for key in ("limit", "seed")
        if a.get(key) != b.get(key)
    ]
    ids_a, ids_b = a.get("ids") or [], b.get("ids") or []
    if ids_a != ids_b:
        shared = len(set(ids_a) & set(ids_b))
        differences.append(f"{len(ids_a)} vs {len(ids_b)} items, {shared} shared")
    return "; ".join(differences) or None


PREDICTIONS = "predictions.jsonl"
#: Written beside complete predictions: the settings that produced them and the generation time.
PREDICTIONS_STAMP = "predictions.settings.json"

_VLLM_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _vllm_dtype(dtype: str) -> str:
    return _VLLM_DTYPES.get(dtype, dtype)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable JSON ({exc})", path=path) from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (OSError, ValueError) as exc:
        raise InputError(
            f"unreadable predictions ({exc})", path=path, hint="pass --overwrite to start over"
        ) from None


def _require_same(saved: Any, wanted: dict[str, Any], path: Path) -> None:
    """Refuse outputs recorded with other settings, naming the settings that differ."""
    saved = saved if isinstance(saved, dict) else {}
    differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if differing:
        raise InputError(
            f"outputs from a run with other settings exist here ({', '.join(differing)})",
            path=path,
            hint="rerun with the same settings to resume, use another --out, "
            "or pass --overwrite to evaluate again",
        )
