"""The report's tables as plain rows of strings, shared by the Markdown and HTML renderers.

Building each table once means both outputs show the same numbers formatted the same way; the
renderers only decide the markup (and the HTML one escapes every cell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vlm_retain.report.ocr import OCR_METRICS


@dataclass(frozen=True)
class Table:
    """A titled table: header cells and rows of already formatted cells."""

    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


def num(value: Any, digits: int = 4) -> str:
    """A value in the metric's own units, ``–`` when absent."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def signed(value: Any, digits: int = 4) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}"


def percent(value: Any) -> str:
    """A relative change as a signed percentage."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value * 100:+.1f}%"


def with_ci(value: Any, ci: Any, digits: int = 4, sign: bool = False) -> str:
    show = signed if sign else num
    text = show(value, digits)
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        text += f" [{show(ci[0], digits)}, {show(ci[1], digits)}]"
    return text


def verdict_table(doc: dict[str, Any]) -> Table:
    rows = []
    for run in doc["runs"]:
        cer = run["ocr"].get("cer", {})
        rows.append(
            [
                run["name"],
                run["verdict"],
                with_ci(run["retention"].get("mean"), run.get("retention_mean_ci95"), 3),
                num(cer.get("value")),
                percent(cer.get("relative_change")),
                ", ".join(run["failing"]) or "–",
                ", ".join(run["uncertain"]) or "–",
            ]
        )
    return Table(
        "verdicts",
        "Verdicts",
        [
            "run",
            "verdict",
            "mean retention [95% CI]",
            "OCR CER",
            "CER vs base",
            "failing",
            "CI below floor",
        ],
        rows,
        f"Gate: every general metric's retention (point estimate) >= {doc['floor']:g}.",
    )


def retention_table(doc: dict[str, Any]) -> Table:
    rows = []
    for run in doc["runs"]:
        for key, value in run["retention"].items():
            if key == "mean":
                continue
            method = value["method"]
            if method == "paired-bootstrap":
                method += f" (n={value['n_paired']})"
            rows.append(
                [
                    run["name"],
                    key,
                    num(value["base"]),
                    num(value["finetuned"]),
                    with_ci(value["delta"], value.get("delta_ci95"), 4, sign=True),
                    with_ci(value["ratio"], value.get("ci95"), 3),
                    method,
                ]
            )
    return Table(
        "retention",
        "Retention per benchmark",
        ["run", "task/metric", "base", "fine-tuned", "Δ [95% CI]", "retention [95% CI]", "CI"],
        rows,
        "Retention = fine-tuned / base of each task's headline metric; Δ = fine-tuned - base.",
    )


def ocr_table(doc: dict[str, Any]) -> Table:
    rows = []
    base = doc["baseline"].get("ocr") or {}
    if base:
        rows.append(
            ["base"]
            + [with_ci(base[m]["value"], base[m]["ci95"]) for m in OCR_METRICS]
            + ["–"] * len(OCR_METRICS)
        )
    for run in doc["runs"]:
        if not run["ocr"]:
            continue
        rows.append(
            [run["name"]]
            + [with_ci(run["ocr"][m]["value"], run["ocr"][m]["ci95"]) for m in OCR_METRICS]
            + [percent(run["ocr"][m]["relative_change"]) for m in OCR_METRICS]
        )
    return Table(
        "ocr",
        "OCR",
        [
            "run",
            "CER [95% CI]",
            "WER [95% CI]",
            "line accuracy [95% CI]",
            "CER vs base",
            "WER vs base",
            "line acc. vs base",
        ],
        rows,
        "Micro CER/WER and exact-line accuracy as fractions; 'vs base' = (run - base) / base.",
    )


def ocr_group_table(doc: dict[str, Any]) -> Table:
    rows = []
    for run in doc["runs"]:
        for name, groups in run.get("ocr_by", {}).items():
            for row in groups:
                rows.append(
                    [
                        run["name"],
                        name,
                        str(row["value"]),
                        str(row.get("n", "–")),
                        num(row.get("cer")),
                        num(row.get("base_cer")),
                        percent(row.get("cer_relative_change")),
                        num(row.get("wer")),
                        num(row.get("line_accuracy")),
                    ]
                )
    return Table(
        "ocr_by",
        "OCR by language and source",
        ["run", "by", "value", "n", "CER", "base CER", "CER vs base", "WER", "line accuracy"],
        rows,
        "From the results' breakdowns, or recomputed from predictions.jsonl (lang, source).",
    )


def deltas_table(doc: dict[str, Any]) -> Table:
    rows = []
    for run in doc["runs"]:
        for key, value in run["deltas"].items():
            rows.append(
                [
                    run["name"],
                    key,
                    num(value["base"]),
                    num(value["finetuned"]),
                    signed(value["delta"]),
                    percent(value["relative_change"]),
                ]
            )
    return Table(
        "deltas",
        "Every general metric",
        ["run", "task/metric", "base", "fine-tuned", "Δ", "relative"],
        rows,
        "Absolute deltas in each metric's own units (fractions; CIDEr on pycocoevalcap's scale).",
    )


def all_tables(doc: dict[str, Any]) -> list[Table]:
    """Every table in display order (empty tables are kept: renderers say 'none')."""
    return [
        verdict_table(doc),
        retention_table(doc),
        ocr_table(doc),
        ocr_group_table(doc),
        deltas_table(doc),
    ]
