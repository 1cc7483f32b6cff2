"""``vlm-retain report``: retention tables, plots and the gate, as Markdown, HTML and JSON.

Exit codes: 0 every run passes the gate, 1 some run fails it (the report is still written, so
a pipeline can stop and a person can read why), 2 bad input (nothing is written).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from vlm_retain.errors import EXIT_PROBLEMS

console = Console(markup=False, highlight=False)

INPUTS = typer.Argument(
    ..., help="Run folders (with eval/), eval folders (<task>/results.json) or sweep folders."
)
BASELINE = typer.Option(..., "--baseline", "-b", help="The base model's eval folder.")
FLOOR = typer.Option(
    0.95, "--min-retention", help="Gate: every general metric keeps at least this ratio, in (0, 1]."
)
OUT = typer.Option(..., "--out", "-o", help="Folder for report.md, report.html, report.json.")
NAMES = typer.Option(
    None,
    "--names",
    help="Display names, one per input: --names a,b or --names a --names b.",
)
RESAMPLES = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for the CIs.")
SEED = typer.Option(0, "--seed", help="Bootstrap seed.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier report folder.")


def report(
    inputs: list[Path] = INPUTS,
    baseline: Path = BASELINE,
    min_retention: float = FLOOR,
    out: Path = OUT,
    names: list[str] | None = NAMES,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    overwrite: bool = OVERWRITE,
) -> None:
    """Compare runs with the base model: OCR gain, retention with CIs, and a PASS/FAIL gate."""
    from vlm_retain.report import build_report, write_report
    from vlm_retain.report.tables import num, percent, with_ci

    # Options take one value each in click, so "a,b" and repeated flags both give the list.
    given = [part.strip() for value in names or [] for part in value.split(",") if part.strip()]
    doc = build_report(
        inputs, baseline, floor=min_retention, names=given or None, resamples=resamples, seed=seed
    )
    write_report(doc, out, overwrite=overwrite)
    table = Table(title=f"retention gate (floor {min_retention:g})")
    for column in ("run", "verdict", "mean retention", "OCR CER", "CER vs base", "failing"):
        table.add_column(column)
    for run in doc["runs"]:
        cer = run["ocr"].get("cer", {})
        table.add_row(
            run["name"],
            run["verdict"],
            with_ci(run["retention"].get("mean"), run.get("retention_mean_ci95"), 3),
            num(cer.get("value")),
            percent(cer.get("relative_change")),
            ", ".join(run["failing"]) or "-",
        )
    console.print(table)
    console.print(f"wrote {out}/report.md, report.html, report.json")
    if doc["summary"]["failed"]:
        console.print(f"gate FAILED for: {', '.join(doc['summary']['failed'])}")
        raise typer.Exit(EXIT_PROBLEMS)
