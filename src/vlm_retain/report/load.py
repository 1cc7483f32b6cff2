"""Find what to report in the folders the user names: run, eval and sweep folders.

Three layouts are accepted, so a report can be made at any stage of a project:

- an **eval folder**: ``<task>/results.json`` (written by ``vlm-retain eval``);
- a **run folder**: ``eval/`` inside (and, optionally, ``train_log.jsonl`` for curves);
- a **sweep folder**: ``sweep.json`` with ``points/alpha_X/eval``; every point becomes a run
  named ``alpha=X`` (prefixed with the sweep's name when several inputs are reported).

Everything here only reads; a folder that fits none of the layouts is an input error (exit 2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.evaluate.results import read_results
from vlm_retain.evaluate.runner import HEADLINE


@dataclass(frozen=True)
class TaskResult:
    """One evaluated task: its folder, its results document and its metric family."""

    name: str
    folder: Path
    results: dict[str, Any]

    @property
    def family(self) -> str:
        """``ocr``, ``vqa``, ``anls``, ``caption`` or ``retrieval`` (results.json ``task``)."""
        return str(self.results.get("task"))

    @property
    def is_ocr(self) -> bool:
        return self.family == "ocr"

    @property
    def headline(self) -> tuple[str, bool] | None:
        """(metric, higher is better) that stands for this task in retention and the gate."""
        return HEADLINE.get(self.family)

    def metric(self, name: str) -> float | None:
        value = self.results.get("metrics", {}).get(name)
        return float(value) if isinstance(value, int | float) else None

    def ci(self, name: str) -> list[float] | None:
        value = self.results.get("ci95", {}).get(name)
        if isinstance(value, list) and len(value) == 2 and all(_finite(v) for v in value):
            return [float(value[0]), float(value[1])]
        return None


@dataclass
class EvalSet:
    """One model's evaluation (a run, an eval folder or one sweep point) under a display name."""

    name: str
    path: Path
    kind: str  # run | eval | sweep-point | baseline
    tasks: dict[str, TaskResult]
    train_log: Path | None = None
    alpha: float | None = None
    sweep: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ocr_tasks(self) -> dict[str, TaskResult]:
        return {name: task for name, task in self.tasks.items() if task.is_ocr}

    @property
    def general_tasks(self) -> dict[str, TaskResult]:
        return {
            name: task
            for name, task in self.tasks.items()
            if not task.is_ocr and task.headline is not None
        }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and value == value and abs(value) != float("inf")


def read_eval_folder(folder: Path) -> dict[str, TaskResult]:
    """``{task: TaskResult}`` for every ``<task>/results.json`` directly under ``folder``."""
    tasks = {}
    for results_file in sorted(Path(folder).glob("*/results.json")):
        tasks[results_file.parent.name] = TaskResult(
            results_file.parent.name, results_file.parent, read_results(results_file)
        )
    return tasks


def load_baseline(folder: Path) -> EvalSet:
    """The base model's eval folder (a run folder is accepted too: its ``eval/`` is used)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("baseline folder not found", path=folder)
    eval_dir = folder / "eval" if (folder / "eval").is_dir() else folder
    tasks = read_eval_folder(eval_dir)
    if not tasks:
        raise InputError(
            "no <task>/results.json in the baseline folder",
            path=folder,
            hint="pass the base model's folder written by 'vlm-retain eval'",
        )
    return EvalSet(name="base", path=folder, kind="baseline", tasks=tasks)


def load_inputs(paths: Sequence[Path], names: Sequence[str] | None = None) -> list[EvalSet]:
    """Every run to report, in the order given (sweep points in alpha order).

    ``names`` renames the inputs one for one; duplicate display names get ``#2``, ``#3``.
    """
    if names and len(names) != len(paths):
        raise InputError(
            f"--names gives {len(names)} names for {len(paths)} inputs", hint="one name per input"
        )
    sets: list[EvalSet] = []
    for index, path in enumerate(paths):
        name = names[index] if names else None
        sets.extend(_load_one(Path(path), name, several=len(paths) > 1))
    _dedupe_names(sets)
    return sets


def _default_name(path: Path) -> str:
    resolved = path.resolve()
    return resolved.parent.name if resolved.name == "eval" else resolved.name


def _load_one(path: Path, name: str | None, *, several: bool) -> list[EvalSet]:
    if not path.is_dir():
        raise InputError("input folder not found", path=path)
    if (path / "sweep.json").is_file():
        return _load_sweep(path, name, several=several)
    if (path / "eval").is_dir():
        tasks = read_eval_folder(path / "eval")
        if not tasks:
            raise InputError("run folder has no eval/<task>/results.json", path=path)
        log = path / "train_log.jsonl"
        return [
            EvalSet(
                name=name or _default_name(path),
                path=path,
                kind="run",
                tasks=tasks,
                train_log=log if log.is_file() else None,
            )
        ]
    tasks = read_eval_folder(path)
    if not tasks:
        raise InputError(
            "not a run, eval or sweep folder (no eval/, <task>/results.json or sweep.json)",
            path=path,
        )
    log = path.parent / "train_log.jsonl" if path.name == "eval" else None
    return [
        EvalSet(
            name=name or _default_name(path),
            path=path,
            kind="eval",
            tasks=tasks,
            train_log=log if log is not None and log.is_file() else None,
        )
    ]


def _format_alpha(alpha: float) -> str:
    return f"{alpha:g}"


def _load_sweep(path: Path, name: str | None, *, several: bool) -> list[EvalSet]:
    """Each point of ``sweep.json`` (or each ``points/alpha_X/eval`` folder) as one run."""
    try:
        doc = json.loads((path / "sweep.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"malformed JSON ({exc})", path=path / "sweep.json") from None
    folders: dict[float, Path] = {}
    points = doc.get("points") if isinstance(doc, dict) else None
    for point in points if isinstance(points, list) else []:
        if not isinstance(point, dict) or not _finite(point.get("alpha")):
            continue
        alpha = float(point["alpha"])
        given = point.get("eval") or point.get("eval_dir")
        candidates = [path / str(given)] if isinstance(given, str) else []
        candidates += [path / "points" / f"alpha_{point['alpha']}" / "eval"]
        candidates += [path / "points" / f"alpha_{_format_alpha(alpha)}" / "eval"]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is not None:
            folders[alpha] = found
    for folder in sorted((path / "points").glob("alpha_*/eval")):
        match = re.fullmatch(r"alpha_([-+0-9.eE]+)", folder.parent.name)
        if match:
            try:
                folders.setdefault(float(match.group(1)), folder)
            except ValueError:
                continue
    if not folders:
        raise InputError(
            "sweep has no evaluated points (points/alpha_X/eval/<task>/results.json)", path=path
        )
    prefix = name or path.resolve().name
    sets = []
    for alpha in sorted(folders):
        tasks = read_eval_folder(folders[alpha])
        if not tasks:
            continue
        label = f"alpha={_format_alpha(alpha)}"
        sets.append(
            EvalSet(
                name=f"{prefix} {label}" if several or name else label,
                path=folders[alpha],
                kind="sweep-point",
                tasks=tasks,
                alpha=alpha,
                sweep=prefix,
            )
        )
    if not sets:
        raise InputError("no sweep point has results.json files", path=path)
    return sets


def _dedupe_names(sets: list[EvalSet]) -> None:
    seen: dict[str, int] = {}
    for item in sets:
        count = seen.get(item.name, 0) + 1
        seen[item.name] = count
        if count > 1:
            item.name = f"{item.name} #{count}"
