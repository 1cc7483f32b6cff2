"""Retention of general skills: fine-tuned score / base score, with paired bootstrap CIs.

Definition (stated in every report, because papers mostly report absolute drops instead):
for a higher-is-better metric, retention = fine-tuned / base; for a lower-is-better one (none
of today's general headlines) it is base / fine-tuned, so that above 1 always means "better than
the base". Each general task contributes its headline metric (``evaluate.runner.HEADLINE``);
the mean retention is the plain mean over those tasks.

The CI is a *paired* percentile bootstrap over items: both models' per-item scores are joined by
item id and one set of resampled indices serves both, so item difficulty cancels out and the
interval is much tighter than two independent CIs would suggest. Each resample's retention is a
ratio of means (= ratio of sums). When per-item scores cannot be recomputed (no predictions, a
corpus-only metric, no Java for CIDEr) the retention is the ratio of the two point values
without a CI, and the reason is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlm_retain.evaluate.metrics.bootstrap import percentile_ci, resample_sums
from vlm_retain.report.items import item_scores, paired_caption_scores
from vlm_retain.report.load import EvalSet, TaskResult


@dataclass
class Retention:
    """One general task's headline retention and absolute change, as the report shows it."""

    task: str
    metric: str
    higher_is_better: bool
    base: float | None
    finetuned: float | None
    ratio: float | None
    ci95: list[float] | None = None
    delta: float | None = None
    delta_ci95: list[float] | None = None
    method: str = "point-ratio"  # paired-bootstrap | point-ratio
    n_paired: int = 0
    note: str | None = None
    samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "base": self.base,
            "finetuned": self.finetuned,
            "ratio": self.ratio,
            "ci95": self.ci95,
            "delta": self.delta,
            "delta_ci95": self.delta_ci95,
            "method": self.method,
            "n_paired": self.n_paired,
            "note": self.note,
        }


def _ratio(base: float, tuned: float, higher: bool) -> float | None:
    numerator, denominator = (tuned, base) if higher else (base, tuned)
    return numerator / denominator if denominator else None


def _ratio_samples(base: np.ndarray, tuned: np.ndarray, higher: bool) -> np.ndarray:
    numerator, denominator = (tuned, base) if higher else (base, tuned)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator != 0, numerator / np.where(denominator != 0, denominator, 1), np.nan
        )


def _joined(base_task: TaskResult, tuned_task: TaskResult, metric: str) -> Any:
    """(ids, base scores, tuned scores) over common ids, or the reason there are none."""
    if base_task.family == "caption":
        return paired_caption_scores(base_task, tuned_task, metric)
    base_items, tuned_items = item_scores(base_task, metric), item_scores(tuned_task, metric)
    for items in (base_items, tuned_items):
        if not items.available:
            return items.reason or "no per-item scores"
    tuned_index = {item: k for k, item in enumerate(tuned_items.ids)}
    pairs = [(k, tuned_index[item]) for k, item in enumerate(base_items.ids) if item in tuned_index]
    if not pairs:
        return "no item ids in common"
    b_index = np.array([a for a, _ in pairs])
    t_index = np.array([b for _, b in pairs])
    return (
        [base_items.ids[k] for k in b_index],
        base_items.scores[b_index],
        tuned_items.scores[t_index],
    )


def task_retention(
    name: str, base_task: TaskResult, tuned_task: TaskResult, *, resamples: int, seed: int
) -> Retention:
    """Retention of one task's headline metric, paired-bootstrapped when items allow it."""
    headline = base_task.headline
    assert headline is not None, "only general tasks with a headline metric have a retention"
    metric, higher = headline
    base_value, tuned_value = base_task.metric(metric), tuned_task.metric(metric)
    result = Retention(
        task=name,
        metric=metric,
        higher_is_better=higher,
        base=base_value,
        finetuned=tuned_value,
        ratio=None,
    )
    if base_value is not None and tuned_value is not None:
        result.delta = tuned_value - base_value
        result.ratio = _ratio(base_value, tuned_value, higher)
    joined = _joined(base_task, tuned_task, metric)
    if isinstance(joined, str):
        result.note = f"no CI: {joined}; retention is the ratio of the point values"
    else:
        ids, base_scores, tuned_scores = joined
        n = len(ids)
        result.method = "paired-bootstrap"
        result.n_paired = n
        result.ratio = _ratio(float(base_scores.mean()), float(tuned_scores.mean()), higher)
        sums = resample_sums({"b": base_scores, "t": tuned_scores}, resamples=resamples, seed=seed)
        samples = _ratio_samples(sums["b"], sums["t"], higher)
        if np.isfinite(samples).any():
            result.samples = samples
            result.ci95 = percentile_ci(samples)
        result.delta_ci95 = percentile_ci((sums["t"] - sums["b"]) / n)
        counts = (base_task.results.get("n"), tuned_task.results.get("n"))
        if n not in counts or counts[0] != counts[1]:
            result.note = (
                f"paired over the {n} items both runs scored (results n: {counts[0]} base, "
                f"{counts[1]} fine-tuned); point values on all items differ slightly"
            )
    if result.ratio is None:
        extra = "base scored 0: nothing to lose, not counted in the mean or the gate"
        result.note = f"{result.note}; {extra}" if result.note else extra
    return result


def run_retention(
    base: EvalSet, run: EvalSet, *, resamples: int, seed: int
) -> dict[str, Retention]:
    """``{task/metric: Retention}`` for every general task the run shares with the base."""
    out: dict[str, Retention] = {}
    common = [name for name in base.general_tasks if name in run.general_tasks]
    for offset, name in enumerate(common):
        # A seed per task keeps the tasks' resamples independent (they are different items).
        value = task_retention(
            name, base.tasks[name], run.tasks[name], resamples=resamples, seed=seed + offset
        )
        out[value.key] = value
    return out


def mean_retention(values: dict[str, Retention]) -> tuple[float | None, list[float] | None]:
    """Mean over tasks of the headline retention, and its CI when every task has samples.

    The tasks' items are independent, so the k-th resample of the mean is the mean of each
    task's k-th resample.
    """
    defined = [v for v in values.values() if v.ratio is not None]
    if not defined:
        return None, None
    mean = float(np.mean([v.ratio for v in defined]))
    if all(v.samples is not None for v in defined):
        stacked = np.vstack([v.samples for v in defined if v.samples is not None])
        return mean, percentile_ci(stacked.mean(axis=0))
    return mean, None


def metric_deltas(base: EvalSet, run: EvalSet) -> dict[str, dict[str, float | None]]:
    """Absolute change of every numeric metric of every general task both runs have."""
    out: dict[str, dict[str, float | None]] = {}
    for name, base_task in base.general_tasks.items():
        if name not in run.general_tasks:
            continue
        tuned_task = run.tasks[name]
        for metric in base_task.results.get("metrics", {}):
            b, t = base_task.metric(metric), tuned_task.metric(metric)
            if b is None or t is None:
                continue
            out[f"{name}/{metric}"] = {
                "base": b,
                "finetuned": t,
                "delta": t - b,
                "relative_change": (t - b) / b if b else None,
            }
    return out
