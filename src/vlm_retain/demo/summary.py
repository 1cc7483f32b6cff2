"""The demo's summary: one row per model, the issue's targets checked, as a table and files.

``summary.json`` (rows and targets, for tests and tools) and ``summary.md`` (the table the
README shows) sit beside the report. The targets are those the demo exists to show; each is
computed from the numbers in the rows, never typed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vlm_retain.demo.evaluation import headline
from vlm_retain.fsutil import atomic_write_json, atomic_write_text

#: (key, title): CER and exact-line share on manuscripts and print, the world's VQA accuracy,
#: caption CIDEr, text-to-image R@1, the report's mean retention and its 95% gate.
COLUMNS = (
    ("model", "model"),
    ("manuscript_cer", "CER hand"),
    ("manuscript_exact", "exact"),
    ("print_cer", "CER print"),
    ("vqa_accuracy", "VQA"),
    ("caption_cider", "CIDEr"),
    ("retrieval_r1", "R@1"),
    ("retention", "retention"),
    ("verdict", "gate"),
)


def summary_rows(
    doc: dict[str, Any], base_print: Path | None, prints: dict[str, Path | None]
) -> list[dict[str, Any]]:
    """Rows for the base and every run of the report ``doc`` (in its order)."""
    base_folders = {"main": Path(doc["baseline"]["path"])}
    if base_print is not None:
        base_folders["print"] = base_print
    rows = [{"model": "base", **headline(base_folders), "retention": 1.0, "verdict": ""}]
    for run in doc["runs"]:
        folders = {"main": Path(run["path"])}
        if prints.get(run["name"]) is not None:
            folders["print"] = prints[run["name"]]  # type: ignore[assignment]
        rows.append(
            {
                "model": run["name"],
                **headline(folders),
                "retention": run["retention"].get("mean"),
                "verdict": run["verdict"],
            }
        )
    return rows


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The demo's targets, each with the numbers it was decided on."""
    base = rows[0]
    full = next(row for row in rows if row["model"] == "full FT")
    full_cer = full["manuscript_cer"]
    keepers = [
        row["model"]
        for row in rows[1:]
        if _ge(row["retention"], 0.95)
        and _num(row["manuscript_cer"])
        and _num(full_cer)
        and row["manuscript_cer"] <= 1.5 * full_cer
    ]
    return [
        _target("base VQA accuracy >= 0.85", _ge(base["vqa_accuracy"], 0.85),
                f"{_fmt(base['vqa_accuracy'])}"),
        _target(
            "base reads print, not hands: manuscript CER >= 2x print CER",
            _num(base.get("print_cer"))
            and _num(base["manuscript_cer"])
            and base["manuscript_cer"] >= 2 * base["print_cer"],
            f"{_fmt(base['manuscript_cer'])} vs {_fmt(base.get('print_cer'))}",
        ),
        _target(
            "full FT learns: CER <= half the base's and <= 0.5, some lines exact",
            _num(full_cer)
            and _num(base["manuscript_cer"])
            and full_cer <= 0.5 * base["manuscript_cer"]
            and full_cer <= 0.5
            and (full["manuscript_exact"] or 0) > 0,
            f"CER {_fmt(full_cer)} (base {_fmt(base['manuscript_cer'])}), "
            f"exact {_fmt(full['manuscript_exact'])}",
        ),
        _target(
            "full FT forgets: mean retention < 0.85",
            _num(full["retention"]) and full["retention"] < 0.85,
            _fmt(full["retention"]),
        ),
        _target(
            "a recipe keeps >= 0.95 with CER within 1.5x of full FT",
            bool(keepers),
            ", ".join(keepers) or "none",
        ),
    ]  # fmt: skip


def write_summary(
    rows: list[dict[str, Any]], doc: dict[str, Any], folder: Path, *, seconds: float, scale: str
) -> None:
    """``summary.json`` and ``summary.md`` beside the report."""
    targets = check_targets(rows)
    atomic_write_json(
        folder / "summary.json",
        {"scale": scale, "seconds": round(seconds, 1), "rows": rows, "targets": targets},
    )
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|"
        + "|".join("---" if key in ("model", "verdict") else "---:" for key, _ in COLUMNS)
        + "|",
    ]
    lines += ["| " + " | ".join(_cell(row, key) for key, _ in COLUMNS) + " |" for row in rows]
    lines += ["", f"Targets ({scale} demo, {seconds / 60:.1f} min):", ""]
    lines += [
        f"- {'met' if t['met'] else 'NOT met'}: {t['target']} ({t['measured']})" for t in targets
    ]
    atomic_write_text(folder / "summary.md", "\n".join(lines) + "\n")


def print_summary(
    rows: list[dict[str, Any]], doc: dict[str, Any], console: Console, *, seconds: float
) -> None:
    table = Table(title=f"vlm-retain demo: forgetting and its cure ({seconds / 60:.1f} min)")
    for key, title in COLUMNS:
        table.add_column(title, justify="left" if key in ("model", "verdict") else "right")
    for row in rows:
        table.add_row(*(_cell(row, key) for key, _ in COLUMNS))
    console.print(table)
    for target in check_targets(rows):
        mark = "met" if target["met"] else "NOT met"
        console.print(f"{mark:>7}: {target['target']} ({target['measured']})")


def _target(text: str, met: Any, measured: str) -> dict[str, Any]:
    return {"target": text, "met": bool(met), "measured": measured}


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return value if isinstance(value, str) else _fmt(value)


def _num(value: Any) -> bool:
    return isinstance(value, int | float)


def _ge(value: Any, floor: float) -> bool:
    return _num(value) and value >= floor


def _fmt(value: Any) -> str:
    return "n/a" if not _num(value) else f"{value:.3f}"
