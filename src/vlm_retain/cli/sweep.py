"""``vlm-retain sweep``: evaluate merge points and pick the one to deploy."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Sweep a merge parameter, evaluate every point, choose the best one within the floor.",
    no_args_is_help=True,
)
console = Console(markup=False, highlight=False)


@app.command("wise-ft")
def sweep_wise_ft(
    base: str = typer.Option(..., "--base", "-b", help="Base model folder (or cached hub id)."),
    eval_data: list[Path] = typer.Option(
        ..., "--eval-data", help="OCR manifest and general benchmark folders (repeatable)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder (resumable)."),
    finetuned: Path | None = typer.Option(None, "--finetuned", help="Full fine-tune folder."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter on --base."),
    alphas: str = typer.Option(
        "0:1:0.1", "--alphas", help="0,0.3,0.6,1 or start:stop:step; 0 (the base) is added."
    ),
    min_retention: float = typer.Option(
        0.95, "--min-retention", help="Floor: every general metric must keep this share, in (0, 1]."
    ),
    ocr_metric: str = typer.Option("cer", "--ocr-metric", help="cer | wer | line_accuracy ..."),
    task: list[str] | None = typer.Option(
        None, "--task", help="Only these general tasks (repeatable; default: all found)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="N items per task."),
    split: str | None = typer.Option(None, "--split", help="Split (default: each task's)."),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Lines per generate call (default: 16 on CPU, 256 on a GPU).",
        show_default=False,
    ),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed for --limit subsets and bootstrap CIs."),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    merge_into_base: bool = typer.Option(
        False, "--merge-into-base", help="Adapter points as full merged models (DoRA: always)."
    ),
    prune_models: bool = typer.Option(
        False, "--prune-models", help="Delete each merged point once it is evaluated."
    ),
    strict_base: bool = typer.Option(True, "--strict-base/--no-strict-base"),
    ocr_prompt: str | None = typer.Option(
        None, "--ocr-prompt", help="OCR prompt the model was fine-tuned with (default: ours)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """WiSE-FT sweep: sweep.json (metrics, retention, verdict per alpha, the choice) + plot."""
    from vlm_retain.merge.sweep import SweepSpec, parse_alphas, run_sweep

    spec = SweepSpec(
        base=base,
        finetuned=finetuned,
        adapter=adapter,
        alphas=parse_alphas(alphas),
        eval_data=list(eval_data),
        out=out,
        floor=min_retention,
        ocr_metric=ocr_metric,
        limit=limit,
        split=split,
        seed=seed,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        resamples=resamples,
        device=device,
        merge_into_base=merge_into_base,
        prune_models=prune_models,
        strict_base=strict_base,
        tasks=tuple(task or ()),
        ocr_prompt=ocr_prompt or None,
    )
    doc = run_sweep(spec, progress=not quiet)
    table = Table(title=f"WiSE-FT sweep (floor {min_retention:g})")
    for column in ("alpha", ocr_metric, "mean retention", "verdict", "failing"):
        table.add_column(column, justify="right" if column != "failing" else "left")
    for point in doc["points"]:
        score, mean = point["ocr_score"], point["mean_retention"]
        table.add_row(
            f"{point['alpha']:g}",
            "" if score is None else f"{score:.4f}",
            "" if mean is None else f"{mean:.3f}",
            "PASS" if point["passes"] else "FAIL",
            ", ".join(point["failing"]),
        )
    console.print(table)
    console.print(f"chosen: {doc['chosen']['reason']}")
    console.print(f"wrote {out / 'sweep.json'} and {out / doc['plot']}")
