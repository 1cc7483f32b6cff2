"""``vlm-retain demo``: the longest real end-to-end path that exists, on built-in sample data."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(
        Path("demo-out"), "--out", help="Folder for everything the demo writes."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous demo folder."),
    data_only: bool = typer.Option(
        False, "--data-only", help="Only the data path (importers, checks, exports): seconds."
    ),
) -> None:
    """Data path (sample datasets in the real layouts: import, check, export) and model path
    (synthetic data, tiny model, eval, LoRA with replay and KL, WiSE-FT, report with the gate)."""
    from vlm_retain.demo import run_demo

    run_demo(out, overwrite=overwrite, data_only=data_only)
