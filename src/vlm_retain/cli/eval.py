"""``vlm-retain eval``: run a model on OCR and general tasks, resumably, and compare runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Evaluate a model on OCR manifests and general benchmarks (VQA, captions, retrieval).",
    no_args_is_help=True,
)
console = Console(markup=False, highlight=False)

MODEL = typer.Option(..., "--model", "-m", help="Model folder or a hub id in the local cache.")
ADAPTER = typer.Option(None, "--adapter", help="PEFT adapter folder on top of the model.")
DATA = typer.Option(..., "--data", help="Manifest folder or benchmark folder (repeatable).")
OUT = typer.Option(..., "--out", "-o", help="Folder for <task>/predictions.jsonl and results.json.")
SPLIT = typer.Option(None, "--split", help="Split to evaluate (default: each task's own).")
LIMIT = typer.Option(None, "--limit", min=1, help="Deterministic subset of N items per task.")
BATCH = typer.Option(
    None,
    "--batch-size",
    min=1,
    help="Lines per generate call (default: 16 on CPU, 256 on a GPU).",
    show_default=False,
)
KV_CACHE = typer.Option(
    "dynamic",
    "--kv-cache",
    help="dynamic | static (hf backend): static preallocates the cache and lets transformers "
    "compile decoding on CUDA; the same tokens.",
)
MAX_NEW = typer.Option(None, "--max-new-tokens", min=1, help="Override each task's token budget.")
BACKEND = typer.Option("hf", "--backend", help="hf | vllm.")
COST = typer.Option(None, "--gpu-cost-per-hour", min=0.0, help="Estimate cost at this rate.")
SEED = typer.Option(0, "--seed", help="Seed for --limit subsets, galleries and bootstrap CIs.")
RESAMPLES = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for 95% CIs.")
OVERWRITE = typer.Option(False, "--overwrite", help="Evaluate again over earlier outputs.")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N.")
DTYPE = typer.Option("auto", "--dtype", help="auto | bf16 | fp16 | fp32 (recorded).")
ALLOW_PICKLE = typer.Option(
    False, "--allow-pickle", help="Accept pickle (.bin) weights from a trusted source."
)
TRUST_REMOTE = typer.Option(
    False, "--trust-remote-code", help="Run the model folder's own Python code (trusted only)."
)
IGNORE_BASE = typer.Option(
    False,
    "--ignore-adapter-base",
    help="Accept an adapter whose recorded base model differs (e.g. a renamed folder).",
)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
TASKS = typer.Option(
    None, "--task", help="Only these tasks among those found (repeatable), e.g. --task vqav2."
)
OCR_PROMPT = typer.Option(
    None,
    "--ocr-prompt",
    help="Ask OCR lines this instead of the default prompt (the data.prompt the model was "
    "fine-tuned with).",
)
DTYPES = ("auto", "bf16", "fp16", "fp32")


def _run(
    group: str,
    model: str,
    adapter: str | None,
    data: list[Path],
    out: Path,
    split: str | None,
    limit: int | None,
    batch_size: int | None,
    max_new_tokens: int | None,
    backend: str,
    gpu_cost_per_hour: float | None,
    seed: int,
    resamples: int,
    overwrite: bool,
    device: str,
    quiet: bool,
    dtype: str = "auto",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    ignore_adapter_base: bool = False,
    only: list[str] | None = None,
    ocr_prompt: str | None = None,
    kv_cache: str = "dynamic",
) -> None:
    from vlm_retain.errors import InputError
    from vlm_retain.evaluate.generate.base import KV_CACHES
    from vlm_retain.evaluate.runner import EvalSettings, Runner, discover

    if backend not in ("hf", "vllm"):
        raise InputError(f"--backend must be hf or vllm for eval, got {backend!r}")
    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if kv_cache not in KV_CACHES:
        raise InputError(f"--kv-cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
    if kv_cache != "dynamic" and backend != "hf":
        raise InputError(f"--kv-cache {kv_cache} is for --backend hf (vLLM manages its cache)")
    settings = EvalSettings(
        model=model,
        adapter=adapter,
        backend=backend,
        split=split,
        limit=limit,
        seed=seed,
        batch_size=batch_size,
        kv_cache=kv_cache,
        max_new_tokens=max_new_tokens,
        resamples=resamples,
        gpu_cost_per_hour=gpu_cost_per_hour,
        overwrite=overwrite,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        strict_adapter_base=not ignore_adapter_base,
        ocr_prompt=ocr_prompt or None,
    )
    groups = ("ocr", "general") if group == "all" else (group,)
    tasks: dict[str, list[Path]] = {}
    for name in groups:
        tasks.update(discover(name, data))
    if only:
        unknown = sorted(set(only) - set(tasks))
        if unknown:
            raise InputError(
                f"--task {', '.join(unknown)}: not found under --data",
                hint=f"tasks found: {', '.join(tasks)}",
            )
        tasks = {name: sources for name, sources in tasks.items() if name in only}
    outcomes = Runner(settings, out, console=console, progress=not quiet).run(tasks)
    print_summary(outcomes, with_cost=gpu_cost_per_hour is not None)
    console.print(f"results under {out}")


def print_summary(outcomes: list, *, with_cost: bool) -> None:
    """One row per task: its headline metric with CI, size, time and throughput."""
    from vlm_retain.evaluate.runner import HEADLINE
    from vlm_retain.evaluate.tasks import get_task

    table = Table(title="evaluation")
    for column in ("task", "n", "metric", "value", "95% CI", "seconds", "items/s", "status"):
        table.add_column(
            column, justify="left" if column in ("task", "metric", "status") else "right"
        )
    if with_cost:
        table.add_column("cost", justify="right")
    for outcome in outcomes:
        metric = HEADLINE[get_task(outcome.task).metric][0] if outcome.metrics else ""
        value = outcome.metrics.get(metric)
        ci = outcome.ci95.get(metric) or []
        row = [
            outcome.task,
            str(outcome.n),
            metric,
            "" if value is None else f"{value:.4f}",
            f"[{ci[0]:.4f}, {ci[1]:.4f}]" if len(ci) == 2 and None not in ci else "",
            f"{outcome.seconds:.1f}",
            f"{outcome.items_per_s:.2f}",
            outcome.status + (f", {outcome.errors} errors" if outcome.errors else ""),
        ]
        if with_cost:
            row.append("" if outcome.cost is None else f"{outcome.cost:.4f}")
        table.add_row(*row)
    console.print(table)


def evaluate(
    ctx: typer.Context,
    model: str = MODEL,
    data: list[Path] = DATA,
    out: Path = OUT,
    adapter: str | None = ADAPTER,
    split: str | None = SPLIT,
    limit: int | None = LIMIT,
    batch_size: int | None = BATCH,
    kv_cache: str = KV_CACHE,
    max_new_tokens: int | None = MAX_NEW,
    backend: str = BACKEND,
    gpu_cost_per_hour: float | None = COST,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    overwrite: bool = OVERWRITE,
    device: str = DEVICE,
    dtype: str = DTYPE,
    allow_pickle: bool = ALLOW_PICKLE,
    trust_remote_code: bool = TRUST_REMOTE,
    ignore_adapter_base: bool = IGNORE_BASE,
    task: list[str] | None = TASKS,
    ocr_prompt: str | None = OCR_PROMPT,
    quiet: bool = QUIET,
) -> None:
    """One function behind ``eval ocr``, ``eval general`` and ``eval all``: the command name
    (``ctx.info_name``) is the task group."""
    _run(
        ctx.info_name or "all",
        model,
        adapter,
        data,
        out,
        split,
        limit,
        batch_size,
        max_new_tokens,
        backend,
        gpu_cost_per_hour,
        seed,
        resamples,
        overwrite,
        device,
        quiet,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        ignore_adapter_base=ignore_adapter_base,
        only=task,
        ocr_prompt=ocr_prompt,
        kv_cache=kv_cache,
    )


app.command("ocr", help="OCR on manifests: CER, WER, line accuracy (e.g. --data data/peter).")(
    evaluate
)
app.command(
    "general",
    help="Every general task found under --data: VQA, captions, retrieval, signs, TextVQA, DocVQA.",
)(evaluate)
app.command("all", help="OCR and general tasks in one run.")(evaluate)


@app.command("compare")
def eval_compare(
    base: Path = typer.Argument(..., help="Eval folder of the base model."),
    other: Path = typer.Argument(..., help="Eval folder of the other model."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse tasks whose two runs evaluated different items."
    ),
) -> None:
    """Per-metric values of two eval folders and their differences.

    Tasks whose runs evaluated different items (selection.json ids, limit or seed) get a
    one-line warning and a ``*`` in the table; ``--strict`` makes them an error instead.
    """
    from vlm_retain.evaluate.runner import compare_runs

    rows = compare_runs(base, other, strict=strict)
    warned: set[str] = set()
    for row in rows:
        if not row["same_items"] and row["task"] not in warned:
            warned.add(row["task"])
            console.print(
                f"warning: {row['task']}: the two runs evaluated different items "
                f"({row['item_note']}); its deltas are not like for like"
            )
    table = Table(title=f"{other} vs {base}")
    for column in ("task", "metric", "base", "other", "delta", "other/base"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for row in rows:
        table.add_row(
            row["task"] + ("" if row["same_items"] else " *"),
            row["metric"],
            f"{row['base']:.4f}",
            f"{row['other']:.4f}",
            f"{row['delta']:+.4f}",
            "" if row["relative"] is None else f"{row['relative']:.3f}",
        )
    console.print(table)
    if warned:
        console.print("* different items in the two runs (see the warnings above)")
