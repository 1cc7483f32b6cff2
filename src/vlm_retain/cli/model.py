"""``vlm-retain model``: build tiny offline models and describe any supported model folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Build tiny models and inspect model folders.", no_args_is_help=True)
console = Console()


def _quiet_transformers() -> None:
    """No per-shard progress bars: this command prints its own one-line summary."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


@app.command("tiny")
def tiny(
    family: str = typer.Option(..., "--family", "-f", help="qwen2_5_vl, qwen2_vl, qwen3_vl, ..."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    size: str = typer.Option("s", "--size", help="xs (smallest), s (demo 'model S'), m."),
    init_std: float = typer.Option(0.1, "--init-std", help="Initializer std of the weights."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing folder written by vlm-retain."
    ),
) -> None:
    """Build a small random model of a real architecture with a local tokenizer (offline)."""
    from vlm_retain.models.registry import get_family
    from vlm_retain.models.tiny import build_tiny, tiny_info

    get_family(family)  # the unknown-family error lists the supported ones
    _quiet_transformers()
    path = build_tiny(family, out, seed=seed, size=size, init_std=init_std, overwrite=overwrite)
    info = tiny_info(path)
    console.print(
        f"built {family} size {size} seed {seed}: {info.get('parameters', 0):,} parameters,"
        f" vocab {info.get('vocab_size')} -> {path}"
    )


@app.command("info")
def info(
    path: str = typer.Argument(..., help="Model folder or hub id (local cache only)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="PEFT adapter folder."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Accept pickle (.bin) weights from a trusted source."
    ),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N."),
    ignore_adapter_base: bool = typer.Option(
        False,
        "--ignore-adapter-base",
        help="Accept an adapter whose recorded base names another model (its shapes still "
        "have to fit).",
    ),
) -> None:
    """Family, parameters per component, dtype, processor type and image backend of a model."""
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.registry import module_groups

    _quiet_transformers()
    loaded = load_model(
        path,
        adapter=adapter,
        allow_pickle=allow_pickle,
        device=device,
        strict_adapter_base=not ignore_adapter_base,
    )
    params = dict(loaded.model.named_parameters())
    groups = module_groups(loaded.model, loaded.family)
    table = Table(title=f"{loaded.family.title} ({loaded.family.name}) - {loaded.path}")
    table.add_column("component")
    table.add_column("module")
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    for component, names in groups.items():
        if component == "other" and not names:
            continue
        total = sum(params[n].numel() for n in names)
        trainable = sum(params[n].numel() for n in names if params[n].requires_grad)
        module = loaded.family.module_paths.get(component, "-")
        table.add_row(component, module, f"{total:,}", f"{trainable:,}")
    table.add_row("total", "", f"{sum(p.numel() for p in params.values()):,}", "")
    console.print(table)
    facts = loaded.describe()
    for key in ("dtype", "device", "attn_implementation", "image_backend", "adapter"):
        console.print(f"{key}: {facts[key]}")
    console.print(f"processor: {type(loaded.processor).__name__}")
    console.print(f"model class: {type(loaded.model).__name__}")
