"""``vlm-retain demo`` and ``vlm-retain demo build-base``."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="The demo: real forgetting and its cure on a laptop CPU (docs/demo.md).",
    invoke_without_command=True,
)


@app.callback()
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(
        Path("demo-out"), "--out", help="Folder for everything the demo writes."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous demo folder."),
    quick: bool = typer.Option(
        False, "--quick", help="A smaller, faster run (a smoke test; targets not expected)."
    ),
    data_only: bool = typer.Option(
        False, "--data-only", help="Only the data path (importers, checks, exports): seconds."
    ),
    base: Path | None = typer.Option(
        None, "--base", help="Start from this base (default: the one shipped with the package)."
    ),
    workers: int = typer.Option(
        2, "--workers", min=1, help="Recipes trained at once (one thread each)."
    ),
) -> None:
    """Sample data in the real layouts through every data command; then the shipped tiny base
    is fine-tuned on synthetic manuscripts with five recipes, swept with WiSE-FT, evaluated and
    reported with the 95% gate."""
    if ctx.invoked_subcommand is not None:
        return
    from vlm_retain.demo.run import run_demo

    run_demo(out, overwrite=overwrite, data_only=data_only, quick=quick, base=base, workers=workers)


@app.command("build-base")
def build_base(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the base and its records."),
    scale: str = typer.Option(
        "shipped", "--scale", help="shipped (the recipe of the packaged base) or test (minutes)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous base folder."),
    keep_work: bool = typer.Option(
        False, "--keep-work", help="Keep the data, training run and evaluations under work/."
    ),
) -> None:
    """Pretrain the demo's tiny base from random weights on the synthetic world (VQA, captions)
    and printed lines; write the model, recipe.json and scores.json."""
    from vlm_retain.demo.base import build_base as run

    run(out, scale=scale, overwrite=overwrite, keep_work=keep_work)
