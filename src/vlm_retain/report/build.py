"""All of the report as one JSON-ready document: what ``report.json`` holds and what the
Markdown and HTML renderers draw from, so the three outputs can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.merge.select import check_floor
from vlm_retain.report.gate import DEFAULT_FLOOR, RULE, judge
from vlm_retain.report.load import EvalSet, load_baseline, load_inputs
from vlm_retain.report.ocr import ocr_summary
from vlm_retain.report.retention import mean_retention, metric_deltas, run_retention

REPORT_SCHEMA = "vlm-retain/report/1"

DEFINITIONS = {
    "retention": "per general task, its headline metric (vqa accuracy, anls, caption cider, "
    "retrieval t2i_r1): fine-tuned / base for higher-is-better metrics, base / fine-tuned for "
    "lower-is-better ones, so 1.0 = as good as the base and above 1 = better",
    "retention_mean": "plain mean over the general tasks of their headline retention",
    "ci95": "paired percentile bootstrap over items: both runs' per-item scores joined by id, "
    "the same resampled items for both, ratio of means per resample; caption CIDEr from "
    "per-image CIDEr with IDF from the joined references (its mean equals corpus CIDEr); "
    "retrieval from per-query hits@K; 'point-ratio' = no predictions to pair, no CI",
    "deltas": "absolute change (fine-tuned - base) of every metric, in the metric's own units "
    "(fractions; CIDEr on pycocoevalcap's scale)",
    "ocr_relative_change": "(fine-tuned - base) / base; -0.40 on CER = 40% fewer errors",
    "gate": RULE,
}


def _baseline_block(base: EvalSet) -> dict[str, Any]:
    return {
        "path": str(base.path),
        "tasks": {
            name: {
                "family": task.family,
                "n": task.results.get("n"),
                "metrics": task.results.get("metrics", {}),
                "ci95": task.results.get("ci95", {}),
                "headline": task.headline[0] if task.headline else None,
            }
            for name, task in base.tasks.items()
        },
    }


def run_block(
    base: EvalSet, run: EvalSet, *, floor: float, resamples: int, seed: int
) -> dict[str, Any]:
    """One run's entry in ``runs``; raises InputError when it shares no general task."""
    retention = run_retention(base, run, resamples=resamples, seed=seed)
    if not retention:
        raise InputError(
            "no general task in common with the baseline "
            f"(run: {', '.join(sorted(run.general_tasks)) or 'none'}; "
            f"baseline: {', '.join(sorted(base.general_tasks)) or 'none'})",
            path=run.path,
            hint="evaluate both models with 'vlm-retain eval general' on the same data",
        )
    mean, mean_ci = mean_retention(retention)
    verdict = judge(retention, floor)
    ocr = ocr_summary(base, run)
    retention_json: dict[str, Any] = {key: value.to_json() for key, value in retention.items()}
    retention_json["mean"] = mean
    return {
        "name": run.name,
        "path": str(run.path),
        "kind": run.kind,
        "alpha": run.alpha,
        "sweep": run.sweep,
        "ocr": ocr["metrics"],
        "ocr_task": ocr["task"],
        "ocr_n": ocr["n"],
        "ocr_profile": ocr.get("profile"),
        "ocr_by": ocr["by"],
        "retention": retention_json,
        "retention_mean_ci95": mean_ci,
        "deltas": metric_deltas(base, run),
        **verdict.to_json(),
        "train_log": str(run.train_log) if run.train_log else None,
        "notes": [f"{key}: {value.note}" for key, value in retention.items() if value.note],
        "ungated_tasks": sorted(set(run.general_tasks) - set(base.general_tasks)),
    }


def build_report(
    inputs: Sequence[Path],
    baseline: Path,
    *,
    floor: float = DEFAULT_FLOOR,
    names: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Read every input and the baseline; return the report document (report.json)."""
    if not inputs:
        raise InputError("give at least one run, eval or sweep folder")
    check_floor(floor)
    base = load_baseline(Path(baseline))
    runs = load_inputs([Path(p) for p in inputs], names)
    blocks = [run_block(base, run, floor=floor, resamples=resamples, seed=seed) for run in runs]
    base_ocr = ocr_summary(base, base)
    return {
        "schema": REPORT_SCHEMA,
        "floor": floor,
        "resamples": resamples,
        "seed": seed,
        "definitions": DEFINITIONS,
        "baseline": {**_baseline_block(base), "ocr": base_ocr["metrics"], "ocr_by": base_ocr["by"]},
        "runs": blocks,
        "summary": {
            "passed": [b["name"] for b in blocks if b["verdict"] == "PASS"],
            "failed": [b["name"] for b in blocks if b["verdict"] == "FAIL"],
        },
    }
