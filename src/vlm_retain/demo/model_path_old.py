"""The demo's model path: synthetic data, a tiny base, evaluation, retention-aware training,
WiSE-FT and the report with its gate, end to end on a laptop CPU.

The tiny base here is a freshly initialised model, not yet one pretrained on the synthetic
world (that comes with the full forgetting demo), so its scores are near zero and the numbers
show that every stage runs and writes its files, not that forgetting is cured. Every number
printed is one the code produced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

#: The general tasks the demo evaluates (captioning is left out to keep the demo fast:
#: METEOR starts a Java VM per evaluation).
DEMO_GENERAL_TASKS = ("vqav2", "world-signs", "coco-retrieval")
DEMO_LIMIT = 16


def run_model_path(out: Path, console: Console) -> dict[str, Any]:
    """Run every model stage under ``out``; return what the summary prints."""
    from vlm_retain.data.synthetic.htr import HtrOptions, synth_htr
    from vlm_retain.data.synthetic.world import WorldOptions, synth_world
    from vlm_retain.models.tiny import build_tiny

    started = time.perf_counter()
    htr, world = out / "data" / "synth-htr", out / "data" / "synth-world"
    with console.status("synthesizing manuscript lines and the general-skills world"):
        synth_htr(htr, HtrOptions(per_lang=24, workers=2), progress=False)
        synth_world(world, WorldOptions(n=80, workers=2), progress=False)
    base = build_tiny("qwen2_5_vl", out / "models" / "base", size="s")
    console.print(f"built a tiny Qwen2.5-VL at {base}")

    base_eval = _evaluate(base, None, htr, world, out / "eval" / "base", console)
    run = _train(base, htr, world, out / "runs" / "lora-replay-kl", console)
    tuned_eval = _evaluate(base, run / "final", htr, world, out / "eval" / "lora", console)

    from vlm_retain.merge.wise_ft import wise_ft_adapter

    half = wise_ft_adapter(base, run / "final", 0.5, out / "models" / "lora-wise-ft-0.5")
    half_eval = _evaluate(base, half, htr, world, out / "eval" / "lora-wise-ft-0.5", console)

    from vlm_retain.report import build_report, write_report

    doc = build_report(
        [tuned_eval, half_eval], base_eval, names=["lora+replay+kl", "wise-ft 0.5"], floor=0.95
    )
    write_report(doc, out / "report")
    _print_summary(doc, console, time.perf_counter() - started)
    console.print(f"report: {out / 'report' / 'report.html'}")
    return doc


def _evaluate(
    model: Path, adapter: Path | None, htr: Path, world: Path, out: Path, console: Console
) -> Path:
    from vlm_retain.evaluate.runner import EvalSettings, Runner, discover

    tasks = discover("ocr", [htr])
    general = discover("general", [world])
    tasks.update({name: general[name] for name in DEMO_GENERAL_TASKS if name in general})
    settings = EvalSettings(
        model=str(model),
        adapter=str(adapter) if adapter else None,
        limit=DEMO_LIMIT,
        max_new_tokens=24,
        batch_size=8,
        resamples=200,
    )
    with console.status(f"evaluating {out.name}"):
        Runner(settings, out, console=console, progress=False).run(tasks)
    return out


def _train(base: Path, htr: Path, world: Path, run: Path, console: Console) -> Path:
    from vlm_retain.cli.train import generator, probe_suite
    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import TrainHooks, train

    config = config_from_dict(
        {
            "name": "demo-lora-replay-kl",
            "model": {"path": str(base)},
            "tuning": {"mode": "lora", "lora": {"r": 8}},
            "data": {
                "target": [{"manifest": str(htr)}],
                "replay": [{"world": str(world), "tasks": ["vqa", "caption"]}],
                "replay_share": 0.25,
            },
            "objectives": {"kl_to_base": {"weight": 1.0, "scope": "replay"}},
            "probe": {"data": str(world), "every_steps": 20, "limit": 16},
            "train": {
                "max_steps": 40,
                "batch_size": 8,
                "lr": 2.0e-3,
                "precision": "fp32",
                "gradient_checkpointing": "off",
                "save_every_steps": 20,
                "output_dir": str(run),
            },
        },
        source="demo",
    )
    quiet = Console(markup=False, highlight=False, quiet=True)
    with console.status("training LoRA with 25% world replay and KL to the base"):
        outcome = train(
            config, hooks=TrainHooks(probe_suite=probe_suite, generator=generator, console=quiet)
        )
    console.print(f"trained {outcome.summary.get('steps', '?')} steps -> {outcome.final}")
    return run


def _print_summary(doc: dict[str, Any], console: Console, seconds: float) -> None:
    table = Table(title=f"vlm-retain demo: model path ({seconds:.0f} s)")
    for column in ("run", "OCR CER", "CER vs base", "mean retention", "verdict"):
        table.add_column(column, justify="left" if column in ("run", "verdict") else "right")
    base_cer = doc["baseline"].get("ocr", {}).get("cer")
    if isinstance(base_cer, dict):
        base_cer = base_cer.get("value")
    table.add_row("base", _fmt(base_cer), "", "", "")
    for run in doc["runs"]:
        cer = run["ocr"].get("cer", {})
        mean = run["retention"].get("mean")
        table.add_row(
            run["name"],
            _fmt(cer.get("value")),
            _fmt(cer.get("relative_change")),
            _fmt(mean),
            f"{run['verdict']} {', '.join(run.get('failing', []))}".strip(),
        )
    console.print(table)
    console.print(
        "The tiny base is freshly initialised (not yet pretrained on the world), so "
        "these numbers show the pipeline running, not a cure for forgetting."
    )


def _fmt(value: Any) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value:.3f}"
