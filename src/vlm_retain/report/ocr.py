"""The OCR side of the report: CER, WER and line accuracy, change against the base, by group.

Overall values and their CIs are taken from ``results.json`` as scored (micro CER/WER, the
normalization profile recorded there). Relative change is (fine-tuned - base) / base, so a CER
change of -0.40 means 40 % fewer character errors than the base model.

Per language and per source: from the results' ``breakdown`` when the eval was scored with
``--by lang``/``--by source``, otherwise recomputed from ``predictions.jsonl`` (fields
``lang``/``source`` or ``meta.lang``/``meta.source``) with the same metric function and
profile, so both routes give the same numbers.
"""

from __future__ import annotations

from typing import Any

from vlm_retain.errors import VlmRetainError
from vlm_retain.evaluate.predictions import field_values, read_predictions
from vlm_retain.report.load import EvalSet, TaskResult

#: OCR metrics the report shows, in order (all fractions; CER/WER lower is better).
OCR_METRICS = ("cer", "wer", "line_accuracy")
#: Fields the OCR table is broken down by.
GROUP_FIELDS = ("lang", "source")


def primary_ocr(evalset: EvalSet) -> TaskResult | None:
    """The OCR task that stands for a run: the one named ``ocr``, else the first OCR task."""
    tasks = evalset.ocr_tasks
    return tasks.get("ocr") or next(iter(tasks.values()), None)


def _relative(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or not base:
        return None
    return (value - base) / base


def ocr_metrics(run: TaskResult, base: TaskResult | None) -> dict[str, dict[str, Any]]:
    """metric -> value, ci95, base, base_ci95, delta, relative_change."""
    out = {}
    for metric in OCR_METRICS:
        value = run.metric(metric)
        base_value = base.metric(metric) if base is not None else None
        out[metric] = {
            "value": value,
            "ci95": run.ci(metric),
            "base": base_value,
            "base_ci95": base.ci(metric) if base is not None else None,
            "delta": value - base_value if value is not None and base_value is not None else None,
            "relative_change": _relative(value, base_value),
        }
    return out


def group_metrics(task: TaskResult, name: str) -> dict[str, dict[str, Any]] | None:
    """value -> {n, cer, wer, line_accuracy} for field ``name``, or None when not available."""
    breakdown = task.results.get("breakdown") or {}
    for key in (name, f"meta.{name}"):
        if isinstance(breakdown.get(key), dict) and breakdown[key]:
            return {
                str(value): {
                    "n": row.get("n"),
                    **{m: (row.get("metrics") or row).get(m) for m in OCR_METRICS},
                }
                for value, row in breakdown[key].items()
                if isinstance(row, dict)
            }
    return _recompute_groups(task, name)


def _recompute_groups(task: TaskResult, name: str) -> dict[str, dict[str, Any]] | None:
    path = task.folder / "predictions.jsonl"
    if not path.is_file():
        return None
    from vlm_retain.evaluate.metrics.common import MISSING
    from vlm_retain.evaluate.metrics.ocr import score_ocr

    try:
        records = read_predictions(path, "ocr")
        labels = field_values(records, name)
        if all(label == MISSING for label in labels):
            return None
        profile = str(task.results.get("conventions", {}).get("profile", "raw"))
        report = score_ocr(
            [str(r.target) for r in records],
            [r.prediction for r in records],
            ids=[r.id for r in records],
            groups={name: labels},
            profile=profile,
            resamples=1,
            top_errors=0,
        )
    except (VlmRetainError, ValueError, TypeError):
        return None
    return {
        value: {"n": row["n"], **{m: row["metrics"].get(m) for m in OCR_METRICS}}
        for value, row in report.breakdown.get(name, {}).items()
    }


def ocr_groups(run: TaskResult, base: TaskResult | None) -> dict[str, list[dict[str, Any]]]:
    """field -> rows {value, n, cer, wer, line_accuracy, base_cer, cer_relative_change}."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in GROUP_FIELDS:
        groups = group_metrics(run, name)
        if not groups:
            continue
        base_groups = (group_metrics(base, name) if base is not None else None) or {}
        rows = []
        for value in sorted(groups):
            row = groups[value]
            base_cer = base_groups.get(value, {}).get("cer")
            rows.append(
                {
                    "value": value,
                    **row,
                    "base_cer": base_cer,
                    "cer_relative_change": _relative(row.get("cer"), base_cer),
                }
            )
        out[name] = rows
    return out


def ocr_summary(base: EvalSet, run: EvalSet) -> dict[str, Any]:
    """The run's OCR block of report.json (empty metrics when the run has no OCR task)."""
    task = primary_ocr(run)
    if task is None:
        return {"task": None, "n": None, "metrics": {}, "by": {}}
    base_task = base.tasks.get(task.name)
    if base_task is not None and not base_task.is_ocr:
        base_task = None
    return {
        "task": task.name,
        "n": task.results.get("n"),
        "profile": task.results.get("conventions", {}).get("profile"),
        "metrics": ocr_metrics(task, base_task),
        "by": ocr_groups(task, base_task),
        "base_missing": base_task is None,
    }
