"""``vlm-retain merge``: WiSE-FT points and merges of several adapters or fine-tunes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Merge models in weight space: WiSE-FT, task arithmetic (linear), TIES, DARE.",
    no_args_is_help=True,
)
console = Console(markup=False, highlight=False)

BASE = typer.Option(..., "--base", "-b", help="Base model folder (or a hub id in the cache).")
FINETUNED = typer.Option(None, "--finetuned", help="Fully fine-tuned model folder.")
ADAPTER = typer.Option(None, "--adapter", help="PEFT LoRA adapter trained on --base.")
OUT = typer.Option(..., "--out", "-o", help="Output folder (written atomically).")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier output of this tool.")
INTO_BASE = typer.Option(
    False, "--merge-into-base", help="Write a full merged model instead of an adapter."
)
STRICT = typer.Option(
    True,
    "--strict-base/--no-strict-base",
    help="Refuse adapters whose recorded base names another model (off: renamed folders).",
)


@app.command("wise-ft")
def wise_ft(
    base: str = BASE,
    out: Path = OUT,
    alpha: float = typer.Option(..., "--alpha", help="0 = base, 1 = fine-tuned."),
    finetuned: Path | None = FINETUNED,
    adapter: Path | None = ADAPTER,
    merge_into_base: bool = INTO_BASE,
    strict_base: bool = STRICT,
    overwrite: bool = OVERWRITE,
) -> None:
    """(1 - alpha) * base + alpha * fine-tuned; for an adapter, the adapter scaled by alpha."""
    from vlm_retain.errors import InputError
    from vlm_retain.merge.wise_ft import wise_ft_adapter, wise_ft_models

    if (finetuned is None) == (adapter is None):
        raise InputError("give exactly one of --finetuned and --adapter")
    if finetuned is not None:
        if merge_into_base:
            raise InputError("--merge-into-base applies to --adapter only")
        wise_ft_models(base, finetuned, alpha, out, overwrite=overwrite)
    else:
        assert adapter is not None
        wise_ft_adapter(
            base,
            adapter,
            alpha,
            out,
            merge_into_base=merge_into_base,
            strict_base=strict_base,
            overwrite=overwrite,
        )
    console.print(f"wrote {out} (alpha {alpha:g})")


def _parse_weights(values: list[str] | None) -> list[float] | None:
    """``--weights 0.6,0.4`` or ``--weights 0.6 --weights 0.4``."""
    from vlm_retain.errors import InputError

    if not values:
        return None
    try:
        return [float(x) for value in values for x in value.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"cannot read --weights {' '.join(values)!r}") from None


def _inputs(positional: list[Path] | None, option: list[Path] | None) -> list[Path]:
    """Inputs given as arguments and/or ``--adapters`` (``--adapters A B C`` works: the
    values after the first land in the arguments). A number among them is a misplaced
    weight, which gets its own message."""
    from vlm_retain.errors import InputError

    inputs = [*(option or []), *(positional or [])]
    for path in inputs:
        if not path.exists():
            try:
                float(str(path))
            except ValueError:
                continue
            raise InputError(
                f"{path} looks like a weight, not an input folder",
                hint="give the weights as one list: --weights 0.6,0.4",
            )
    return inputs


def _merge(
    method: str,
    positional: list[Path] | None,
    adapters: list[Path] | None,
    out: Path,
    base: str | None,
    weights: list[str] | None,
    density: float | None,
    seed: int,
    combine: str,
    scale: float,
    rank: int | None,
    merge_into_base: bool,
    strict_base: bool,
    overwrite: bool,
) -> None:
    from vlm_retain.merge.combine import check_options, merge_inputs

    inputs = _inputs(positional, adapters)
    parsed = _parse_weights(weights)
    check_options(method, len(inputs), parsed, density)
    merge_inputs(
        method,
        inputs,
        out,
        base=base,
        weights=parsed,
        density=density,
        seed=seed,
        combine=combine,
        scale=scale,
        rank=rank,
        merge_into_base=merge_into_base,
        strict_base=strict_base,
        overwrite=overwrite,
    )
    console.print(f"wrote {out} ({method} of {len(inputs)} inputs)")


INPUTS = typer.Argument(None, help="Adapter folders, or full fine-tunes (with --base).")
ADAPTERS = typer.Option(None, "--adapters", help="Inputs (repeatable; same as the arguments).")
MERGE_BASE = typer.Option(
    None, "--base", "-b", help="Base model: needed for full fine-tunes and --merge-into-base."
)
WEIGHTS = typer.Option(None, "--weights", help="One weight per input: 0.6,0.4 (default 1 each).")
SCALE = typer.Option(1.0, "--scale", help="Lambda: multiplies the merged task vector.")
RANK = typer.Option(
    None,
    "--rank",
    min=1,
    help=(
        "Rank of the merged adapter (default: linear, the sum of the input ranks, exact; "
        "ties/dare, the largest input rank, approximate)."
    ),
)


@app.command("linear")
def linear(
    inputs: list[Path] | None = INPUTS,
    out: Path = OUT,
    adapters: list[Path] | None = ADAPTERS,
    base: str | None = MERGE_BASE,
    weights: list[str] | None = WEIGHTS,
    scale: float = SCALE,
    rank: int | None = RANK,
    merge_into_base: bool = INTO_BASE,
    strict_base: bool = STRICT,
    overwrite: bool = OVERWRITE,
) -> None:
    """Task arithmetic: scale * sum of weight_i * delta_i."""
    _merge(
        "linear", inputs, adapters, out, base, weights, None, 0, "linear", scale, rank,
        merge_into_base, strict_base, overwrite,
    )  # fmt: skip


@app.command("ties")
def ties(
    inputs: list[Path] | None = INPUTS,
    out: Path = OUT,
    adapters: list[Path] | None = ADAPTERS,
    base: str | None = MERGE_BASE,
    weights: list[str] | None = WEIGHTS,
    density: float | None = typer.Option(
        None, "--density", help="Share of each delta kept by magnitude (default 0.2)."
    ),
    scale: float = SCALE,
    rank: int | None = RANK,
    merge_into_base: bool = INTO_BASE,
    strict_base: bool = STRICT,
    overwrite: bool = OVERWRITE,
) -> None:
    """TIES: trim to the top --density by magnitude, elect signs, average the agreeing."""
    _merge(
        "ties", inputs, adapters, out, base, weights, density, 0, "ties", scale, rank,
        merge_into_base, strict_base, overwrite,
    )  # fmt: skip


@app.command("dare")
def dare(
    inputs: list[Path] | None = INPUTS,
    out: Path = OUT,
    adapters: list[Path] | None = ADAPTERS,
    base: str | None = MERGE_BASE,
    weights: list[str] | None = WEIGHTS,
    density: float | None = typer.Option(
        None, "--density", help="Share of each delta kept at random, rescaled (default 0.5)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random drop."),
    combine: str = typer.Option("linear", "--combine", help="linear | ties (DARE-TIES)."),
    scale: float = SCALE,
    rank: int | None = RANK,
    merge_into_base: bool = INTO_BASE,
    strict_base: bool = STRICT,
    overwrite: bool = OVERWRITE,
) -> None:
    """DARE: drop entries at random, rescale by 1/density, then combine linearly or by TIES."""
    from vlm_retain.errors import InputError

    if combine not in ("linear", "ties"):
        raise InputError(f"--combine must be linear or ties, got {combine!r}")
    _merge(
        "dare", inputs, adapters, out, base, weights, density, seed, combine, scale, rank,
        merge_into_base, strict_base, overwrite,
    )  # fmt: skip
