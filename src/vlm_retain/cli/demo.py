"""``vlm-retain demo``: the longest real end-to-end path that exists, on built-in sample data."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(
        Path("demo-out"), "--out", help="Folder for everything the demo writes."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous demo folder."),
) -> None:
    """Write sample datasets in the real layouts, import, check, describe and export them."""
    from vlm_retain.demo import run_demo

    run_demo(out, overwrite=overwrite)
