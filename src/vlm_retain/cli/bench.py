"""``vlm-retain bench``: throughput benchmarks (docs/performance.md).

``bench gpu`` is :func:`vlm_retain.bench.gpu.run_benchmark`; ``benchmarks/bench_gpu.py`` runs
the same function as a plain script on machines where the package is not installed.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vlm_retain.cli.options import comma_list
from vlm_retain.errors import InputError

app = typer.Typer(help="Throughput benchmarks.", no_args_is_help=True)


def _ints(text: str | None, name: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        values = tuple(int(x) for x in comma_list(text))
    except ValueError:
        raise InputError(f"{name} must be integers separated by commas, not {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{name} must be positive integers, not {text!r}")
    return values


@app.command("gpu")
def gpu(
    shape: str = typer.Option("7b", "--shape", help="7b, 3b, tiny (CPU check) or a config JSON."),
    device: str = typer.Option("auto", "--device", help="auto, cuda, cuda:N, cpu."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="JSON to write (default: benchmarks/results/gpu-DEVICE-DATE.json).",
    ),
    steps: int | None = typer.Option(
        None, "--steps", min=1, help="Timed training steps [5 GPU / 2 CPU]."
    ),
    warmup: int | None = typer.Option(
        None, "--warmup", min=0, help="Untimed warm-up steps [2 / 1]."
    ),
    iters: int | None = typer.Option(
        None, "--iters", min=1, help="Timed generate calls per batch size [2 / 1]."
    ),
    baseline_lines: int | None = typer.Option(
        None, "--baseline-lines", min=1, help="Lines for the batch-1 sampling baseline [6 / 2]."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Training batch of the baseline cases [16 / 2]."
    ),
    eval_batch_sizes: str | None = typer.Option(
        None, "--eval-batch-sizes", help="Our generation batch sizes [32,64,128,256 / 2,4]."
    ),
    static_batch_sizes: str | None = typer.Option(
        None,
        "--static-batch-sizes",
        help="Generation batch sizes with a static KV cache (compiled on CUDA) [256 / 2].",
    ),
    ours_batch_sizes: str | None = typer.Option(
        None, "--ours-batch-sizes", help="Our training micro-batches [B,4B / B,2B]."
    ),
    planned_batch_sizes: str | None = typer.Option(
        None,
        "--planned-batch-sizes",
        help="Micro-batches run as train.chunk_rows: auto runs them (memory plan) [256 / 4].",
    ),
    memory_cap_gib: float | None = typer.Option(
        None,
        "--memory-cap-gib",
        min=0.001,
        help="Plan the planned cases as on a card with this much memory.",
    ),
    full_shape: str = typer.Option(
        "auto", "--full-shape", help="Shape of the full fine-tuning case: auto (3b; tiny), none."
    ),
    only: str | None = typer.Option(None, "--only", help="Cases to run: names or prefixes*."),
    skip: str | None = typer.Option(None, "--skip", help="Cases to skip: names or prefixes*."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", help="Seconds; later cases are recorded as skipped."
    ),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table, progress lines only."),
) -> None:
    """Evaluation lines/s and training tokens/s, MFU and memory of real Qwen2.5-VL shapes."""
    from vlm_retain.bench.gpu import SHAPES, BenchOptions, run_benchmark

    if shape not in SHAPES and not Path(shape).is_file():
        raise InputError(f"unknown shape {shape!r}", hint=f"use {', '.join(SHAPES)} or a JSON")
    if full_shape not in ("auto", "none", *SHAPES) and not Path(full_shape).is_file():
        raise InputError(f"unknown full-fine-tuning shape {full_shape!r}")
    options = BenchOptions(
        shape=shape,
        device=device,
        out=out,
        steps=steps,
        warmup=warmup,
        iters=iters,
        baseline_lines=baseline_lines,
        batch_size=batch_size,
        eval_batch_sizes=_ints(eval_batch_sizes, "--eval-batch-sizes"),
        static_batch_sizes=_ints(static_batch_sizes, "--static-batch-sizes"),
        ours_batch_sizes=_ints(ours_batch_sizes, "--ours-batch-sizes"),
        planned_batch_sizes=_ints(planned_batch_sizes, "--planned-batch-sizes"),
        memory_cap_gib=memory_cap_gib,
        full_shape=full_shape,
        only=comma_list(only),
        skip=comma_list(skip),
        time_budget=time_budget,
        seed=seed,
        quiet=quiet,
    )
    run_benchmark(options)
