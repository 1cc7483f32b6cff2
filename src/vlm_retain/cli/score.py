"""``vlm-retain score``: metrics from saved predictions, written as ``results.json``.

Every command computes everything first, checks its output paths, and writes the per-line CSV and
then the results file atomically at the very end, so an error never leaves a results file behind.
User text (ids, field values, paths) is printed verbatim: the consoles do not interpret markup.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.report import MetricReport

app = typer.Typer(
    help="Score saved predictions (ours or LLaMA-Factory's) into results.json.",
    no_args_is_help=True,
)
console = Console(markup=False, highlight=False)

PREDICTIONS = typer.Argument(..., help="predictions.jsonl (id, prediction, reference field, meta).")
OUT = typer.Option(..., "--out", "-o", help="results.json to write.")
BY = typer.Option(
    [], "--by", help="Break down by a field: lang, source, meta.decade_id... (repeatable)."
)
MANIFEST = typer.Option(None, "--manifest", help="Manifest folder to join breakdown fields by id.")
SPLIT = typer.Option(
    None, "--split", help="Split name recorded in the results (default: from the items)."
)
RESAMPLES = typer.Option(
    1000, "--resamples", min=1, help="Bootstrap resamples for the 95% CIs (at least 1)."
)
SEED = typer.Option(0, "--seed", help="Bootstrap seed.")


def _warn(message: str) -> None:
    """One warning, one line on stderr, whatever the terminal width."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)


def _check_outputs(inputs: list[Path], outputs: list[Path | None]) -> None:
    """Refuse outputs that would overwrite an input or that name a folder, before any writing."""
    sources = {p.resolve() for p in inputs}
    for output in outputs:
        if output is None:
            continue
        if output.resolve() in sources:
            raise InputError(
                "output would overwrite an input file",
                path=output,
                hint="choose another --out/--per-line",
            )
        if output.is_dir():
            raise InputError("is a folder, expected a file path", path=output)


def _finish(
    report: MetricReport,
    out: Path,
    *,
    inputs: list[Path],
    split: str,
    seed: int,
    resamples: int,
    options: dict[str, Any],
    per_line: Path | None = None,
) -> None:
    from vlm_retain.evaluate.results import build_results, write_results

    _check_outputs(inputs, [out, per_line])
    for warning in report.warnings:
        _warn(warning)
    results = build_results(
        report, split=split, inputs=inputs, seed=seed, resamples=resamples, config=options
    )
    print_report(report, console)
    if per_line is not None:
        from vlm_retain.evaluate.metrics.ocr import write_per_line_csv

        write_per_line_csv(report, per_line)
        console.print(f"wrote {per_line}")
    write_results(out, results)
    console.print(f"wrote {out}")


def _compute(function: Any, source: Path, *args: Any, **kwargs: Any) -> MetricReport:
    """Run a metric; its ValueErrors (inconsistent items) become input errors naming the file."""
    try:
        return function(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc), path=source) from None


def print_report(report: MetricReport, target: Console) -> None:
    """The metrics with their CIs, then one table per breakdown field."""
    table = Table(title=f"{report.task}: {report.n} items")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, value in report.metrics.items():
        ci = report.ci95.get(name)
        table.add_row(
            name,
            "n/a" if value is None else f"{value:.4f}",
            "" if not ci or ci[0] is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]",
        )
    target.print(table)
    for field_name, groups in report.breakdown.items():
        names = list(next(iter(groups.values()))["metrics"]) if groups else []
        sub = Table(title=f"by {field_name}")
        sub.add_column(field_name)
        sub.add_column("n", justify="right")
        for name in names:
            sub.add_column(name, justify="right")
        for value, group in groups.items():
            sub.add_row(
                value,
                str(group["n"]),
                *(
                    "n/a" if group["metrics"].get(n) is None else f"{group['metrics'][n]:.4f}"
                    for n in names
                ),
            )
        target.print(sub)


def _score(
    metric: str,
    predictions: Path,
    out: Path,
    *,
    by: list[str],
    manifest: Path | None,
    split: str | None,
    resamples: int,
    seed: int,
    options: dict[str, Any] | None = None,
    per_line: Path | None = None,
) -> None:
    from vlm_retain.evaluate.predictions import MISSING
    from vlm_retain.evaluate.scoring import score_file, split_of

    report, records = score_file(
        metric,
        predictions,
        by=by,
        manifest=manifest,
        resamples=resamples,
        seed=seed,
        options=options,
    )
    for name, groups in report.breakdown.items():
        if name in by and set(groups) == {MISSING}:
            _warn(f"--by {name}: no item has this field (check the name, or pass --manifest)")
    _finish(
        report,
        out,
        inputs=[predictions],
        split=split_of(records, split),
        seed=seed,
        resamples=resamples,
        options={"task": metric, "by": by, **(options or {})},
        per_line=per_line,
    )


@app.command("ocr")
def score_ocr(
    predictions: Path = PREDICTIONS,
    out: Path = OUT,
    profile: str = typer.Option("raw", "--profile", help="raw | casefold | nopunct | peter."),
    by: list[str] = BY,
    manifest: Path | None = MANIFEST,
    per_line: Path | None = typer.Option(
        None, "--per-line", help="Also write per-line rates as CSV."
    ),
    top_errors: int = typer.Option(20, "--top-errors", help="Most frequent confusions to list."),
    split: str | None = SPLIT,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> None:
    """CER, WER, line accuracy (micro and macro) with CIs; accepts LLaMA-Factory predictions."""
    from vlm_retain.text.profiles import PROFILES

    if profile not in PROFILES:
        raise InputError(f"--profile {profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    _score(
        "ocr",
        predictions,
        out,
        by=by,
        manifest=manifest,
        split=split,
        resamples=resamples,
        seed=seed,
        options={"profile": profile, "top_errors": top_errors},
        per_line=per_line,
    )


@app.command("vqa")
def score_vqa(
    predictions: Path = PREDICTIONS,
    out: Path = OUT,
    by: list[str] = BY,
    manifest: Path | None = MANIFEST,
    split: str | None = SPLIT,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> None:
    """VQAv2 accuracy (also TextVQA), per answer type when items carry answer_type."""
    _score(
        "vqa",
        predictions,
        out,
        by=by,
        manifest=manifest,
        split=split,
        resamples=resamples,
        seed=seed,
    )


@app.command("anls")
def score_anls(
    predictions: Path = PREDICTIONS,
    out: Path = OUT,
    threshold: float = typer.Option(
        0.5, "--threshold", help="Normalized distance above which a match scores 0."
    ),
    by: list[str] = BY,
    manifest: Path | None = MANIFEST,
    split: str | None = SPLIT,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> None:
    """ANLS (DocVQA-style answers): best normalized Levenshtein similarity over the answers."""
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"--threshold must be in (0, 1], got {threshold}")
    _score(
        "anls",
        predictions,
        out,
        by=by,
        manifest=manifest,
        split=split,
        resamples=resamples,
        seed=seed,
        options={"threshold": threshold},
    )


@app.command("caption")
def score_caption(
    predictions: Path = PREDICTIONS,
    out: Path = OUT,
    by: list[str] = BY,
    manifest: Path | None = MANIFEST,
    split: str | None = SPLIT,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap, PTB tokenizer); SPICE when installed."""
    _score(
        "caption",
        predictions,
        out,
        by=by,
        manifest=manifest,
        split=split,
        resamples=resamples,
        seed=seed,
    )


@app.command("retrieval")
def score_retrieval(
    scores: Path = typer.Argument(
        ...,
        help="SCORES.npy (images x texts) with SCORES.images.txt and SCORES.texts.jsonl beside it.",
    ),
    out: Path = OUT,
    split: str = typer.Option("unspecified", "--split", help="Split name recorded in the results."),
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> None:
    """Recall@1/5/10 both ways (image->text, text->image), the Flickr30k/COCO protocol."""
    from vlm_retain.evaluate.metrics.retrieval import load_score_matrix, sidecar_paths
    from vlm_retain.evaluate.metrics.retrieval import score_retrieval as compute

    matrix, image_ids, text_ids, text_image = load_score_matrix(scores)
    report = _compute(
        compute,
        scores,
        matrix,
        text_image,
        image_ids=image_ids,
        text_ids=text_ids,
        resamples=resamples,
        seed=seed,
    )
    inputs = [scores, *sidecar_paths(scores)]
    _finish(
        report,
        out,
        inputs=inputs,
        split=split,
        seed=seed,
        resamples=resamples,
        options={"task": "retrieval"},
    )
