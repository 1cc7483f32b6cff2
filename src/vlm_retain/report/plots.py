"""The report's figures as PNG bytes (matplotlib, Agg backend: no display, no fonts fetched).

Three figures, each answering one question:

- ``frontier``: what did the OCR gain cost? OCR CER (x, lower is better) against mean
  retention (y), one point per run or sweep alpha, the base model as a star at (CER, 1.0), the
  gate floor as a dashed line; sweep points are joined in alpha order;
- ``retention_bars``: which benchmark forgot? per-benchmark retention with its paired CI;
- ``training_curves``: when did it happen? the losses (total, each objective term, CE per data
  source, held-out ``eval/`` losses) and the probe metrics (``probe/...``) per step.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

#: Train-log columns drawn on the loss axis: the objective terms the trainer logs (unweighted)
#: and their weighted sum. Everything else the log holds (``step``, ``epoch``, ``lr`` and
#: ``lr/<group>``, ``grad_norm``, the cumulative ``tokens``, ``seconds``, ``dist/<component>``,
#: objective extras such as ``kl/positions``) is bookkeeping on other scales, not a loss.
LOSS_COLUMNS = ("total", "ce", "kl", "l2sp", "ewc")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def frontier(doc: dict[str, Any]) -> bytes | None:
    """OCR CER against mean retention; None when no run has both numbers."""
    points = [
        (run, run["ocr"].get("cer", {}).get("value"), run["retention"].get("mean"))
        for run in doc["runs"]
    ]
    points = [(run, x, y) for run, x, y in points if _finite(x) and _finite(y)]
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    floor = doc["floor"]
    axes.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label=f"gate ({floor:g})")
    base_cer = doc["baseline"].get("ocr", {}).get("cer", {}).get("value")
    if _finite(base_cer):
        axes.scatter([base_cer], [1.0], marker="*", s=180, color="black", label="base", zorder=3)
    sweeps: dict[str, list[tuple[float, float, float]]] = {}
    for run, x, y in points:
        passed = run["verdict"] == "PASS"
        color = "tab:green" if passed else "tab:red"
        axes.scatter([x], [y], color=color, s=40, zorder=3)
        label = f"α={run['alpha']:g}" if run.get("alpha") is not None else run["name"]
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if run.get("sweep") is not None and run.get("alpha") is not None:
            sweeps.setdefault(run["sweep"], []).append((run["alpha"], x, y))
    for name, line in sweeps.items():
        line.sort()
        axes.plot(
            [p[1] for p in line],
            [p[2] for p in line],
            color="tab:blue",
            alpha=0.5,
            linewidth=1,
            label=f"sweep {name}",
        )
    axes.scatter([], [], color="tab:green", label="PASS")
    axes.scatter([], [], color="tab:red", label="FAIL")
    axes.set_xlabel("OCR CER (lower is better)")
    axes.set_ylabel("mean retention of general skills")
    axes.set_title("OCR gain vs general-skill retention")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _png(figure)


def retention_bars(doc: dict[str, Any]) -> bytes | None:
    """Grouped bars: per benchmark (x), one bar per run, whiskers = paired 95% CI."""
    keys: list[str] = []
    for run in doc["runs"]:
        keys += [k for k in run["retention"] if k != "mean" and k not in keys]
    if not keys:
        return None
    runs = doc["runs"]
    width = 0.8 / max(1, len(runs))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(keys) * max(1, len(runs)) ** 0.5), 4))
    for k, run in enumerate(runs):
        xs, heights, low, high = [], [], [], []
        for j, key in enumerate(keys):
            value = run["retention"].get(key)
            if not isinstance(value, dict) or not _finite(value.get("ratio")):
                continue
            ratio = value["ratio"]
            ci = value.get("ci95") or [ratio, ratio]
            xs.append(j - 0.4 + width * (k + 0.5))
            heights.append(ratio)
            low.append(max(0.0, ratio - ci[0]))
            high.append(max(0.0, ci[1] - ratio))
        axes.bar(xs, heights, width=width, yerr=[low, high], capsize=3, label=run["name"])
    axes.axhline(doc["floor"], color="tab:red", linestyle="--", linewidth=1, label="gate")
    axes.axhline(1.0, color="black", linewidth=0.6)
    axes.set_xticks(range(len(keys)))
    axes.set_xticklabels(keys, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("retention (fine-tuned / base)")
    axes.set_title("Retention per benchmark (95% paired bootstrap CI)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    return _png(figure)


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a train_log.jsonl (malformed lines skipped: logs may be live)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and _finite(row.get("step")):
            rows.append(row)
    return rows


def is_loss_column(name: str) -> bool:
    """``total``, ``ce``, ``kl``, ``l2sp``, ``ewc``, per-source ``ce/<source>``, and held-out
    losses ``eval/<loss>`` (e.g. ``eval/ce``)."""
    if name in LOSS_COLUMNS or name.startswith("ce/"):
        return True
    head, _, tail = name.partition("/")
    return head == "eval" and (tail in LOSS_COLUMNS or tail.startswith("ce/"))


def curve_names(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(loss curves: total, each term and per-source CE; probe curves) found in a train log."""
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k not in names and _finite(v)]
    losses = [n for n in names if is_loss_column(n)]
    probes = [n for n in names if n.startswith("probe/")]
    return losses, probes


def training_curves(path: Path, title: str) -> bytes | None:
    """Losses (left) and probe metrics (right) against the optimizer step."""
    rows = read_train_log(path)
    losses, probes = curve_names(rows)
    if not losses and not probes:
        return None
    panels = [p for p in ((losses, "loss"), (probes, "probe")) if p[0]]
    figure, axes_list = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.5))
    axes_list = axes_list if len(panels) > 1 else [axes_list]
    for axes, (names, label) in zip(axes_list, panels, strict=True):
        for name in names:
            points = [(r["step"], r[name]) for r in rows if _finite(r.get(name))]
            style = "-" if "/" in name or label == "probe" else "--"
            axes.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                style,
                label=name,
                marker="o" if len(points) < 30 else None,
                markersize=3,
            )
        if label == "probe" and any("retention" in n for n in names):
            axes.axhline(1.0, color="black", linewidth=0.6)
        axes.set_xlabel("step")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(f"Training: {title}", fontsize=10)
    return _png(figure)


@dataclass(frozen=True)
class Figure:
    """One rendered figure: ``section`` places it, ``filename`` is its PNG beside report.md."""

    section: str
    title: str
    filename: str
    png: bytes


def make_figures(doc: dict[str, Any]) -> list[Figure]:
    """Every figure the document supports, in display order (absent data: no figure)."""
    figures = []
    main = frontier(doc)
    if main is not None:
        figures.append(Figure("frontier", "OCR CER vs mean retention", "frontier.png", main))
    bars = retention_bars(doc)
    if bars is not None:
        figures.append(Figure("retention", "Retention per benchmark", "retention.png", bars))
    for index, run in enumerate(doc["runs"], start=1):
        if run.get("train_log"):
            png = training_curves(Path(run["train_log"]), run["name"])
            if png is not None:
                figures.append(
                    Figure("training", f"Training: {run['name']}", f"training-{index}.png", png)
                )
    return figures
