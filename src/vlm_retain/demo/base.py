"""``vlm-retain demo build-base``: pretrain the demo's tiny base and record how it was made.

The base is a real Qwen2.5-VL (model S of research/demo-feasibility.md, 0.66 M parameters)
trained from random weights on the synthetic world's VQA and captions and on printed lines, by
our own ``train`` command. Pretraining takes longer than the demo should, so its result ships
with the package (``SHIPPED_BASE``): the model folder, ``recipe.json`` (every option of the data
and the resolved training config) and ``scores.json`` (what it reached, measured by ``eval``).
Rebuild it with ``vlm-retain demo build-base --out src/vlm_retain/demo/base --overwrite``.

Layout of ``--out``::

    model files (config.json, model.safetensors, tokenizer, processor)   the base itself
    recipe.json     the data options, the training config, versions, duration
    scores.json     VQA, captions, retrieval on the world's test split; CER on print and hands
    work/           data, fresh model, reading phase (read/), main training run (run/),
                    evaluations (removed unless --keep-work)
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.demo import recipe
from vlm_retain.demo.evaluation import DemoEval, evaluate_model, headline
from vlm_retain.demo.training import run_train_config
from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json, staged_output_dir, write_marker

SHIPPED_BASE = Path(__file__).parent / "base"
RECIPE_FILE, SCORES_FILE = "recipe.json", "scores.json"
_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "chat_template.jinja",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def shipped_base() -> Path:
    """The packaged base model folder, checked to be complete."""
    missing = [name for name in (*_MODEL_FILES, SCORES_FILE) if not (SHIPPED_BASE / name).is_file()]
    if missing:
        raise InputError(
            f"the packaged demo base is incomplete (missing {', '.join(missing)})",
            path=SHIPPED_BASE,
            hint="rebuild it: vlm-retain demo build-base --out src/vlm_retain/demo/base "
            "--overwrite",
        )
    return SHIPPED_BASE


def build_base(
    out: Path,
    *,
    scale: str = "shipped",
    overwrite: bool = False,
    keep_work: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Synthesize, pretrain, evaluate; write the base, its recipe and its scores to ``out``."""
    from vlm_retain.data.synthetic.htr import synth_htr
    from vlm_retain.data.synthetic.world import synth_world
    from vlm_retain.models.tiny import build_tiny

    console = console or Console()
    if scale not in recipe.BASE_SCALES:
        raise InputError(f"unknown --scale {scale!r}", hint=f"use {', '.join(recipe.BASE_SCALES)}")
    plan = recipe.BASE_SCALES[scale]
    started = time.perf_counter()
    with staged_output_dir(Path(out), overwrite=overwrite) as stage:
        work = stage / "work"
        world, printed, hands = work / "world", work / "print", work / "manuscripts"
        with console.status("synthesizing the world, printed lines and manuscript lines"):
            synth_world(world, recipe.world_options(plan), progress=False)
            synth_htr(printed, recipe.print_options(plan), progress=False)
            synth_htr(hands, recipe.manuscript_options(plan.eval_lines_per_lang), progress=False)
        start = build_tiny(
            recipe.MODEL_FAMILY,
            work / "init",
            seed=recipe.MODEL_SEED,
            size=plan.model_size,
            init_std=recipe.INIT_STD,
        )
        if plan.read_steps:
            console.print(f"reading phase: {plan.read_steps} steps on printed lines alone")
            reading = recipe.read_train_config(start, printed, work / "read", plan)
            start = run_train_config(reading, console).final
        config = recipe.base_train_config(start, world, printed, work / "run", plan)
        final = run_train_config(config, console).final
        for name in _MODEL_FILES:
            shutil.copy2(final / name, stage / name)
        scores = _score(stage, world, printed, hands, work / "eval", plan, console)
        seconds = time.perf_counter() - started
        atomic_write_json(stage / RECIPE_FILE, _recipe_record(scale, plan, work, seconds))
        atomic_write_json(stage / SCORES_FILE, scores)
        if not keep_work:
            shutil.rmtree(work)
        write_marker(stage, "demo-base")
    console.print(f"demo base written to {out} ({seconds / 60:.1f} min)")
    return scores


def _score(
    model: Path,
    world: Path,
    printed: Path,
    hands: Path,
    out: Path,
    plan: recipe.BaseScale,
    console: Console,
) -> dict[str, Any]:
    """The base's scores, each measured by the evaluation runner on held-out data."""
    spec = DemoEval(world=world, manuscripts=hands, printed=printed, limit=plan.eval_limit)
    with console.status("evaluating the base"):
        folders = evaluate_model(model, None, spec, out)
    return {"scale": plan.name, **headline(folders)}


def _recipe_record(scale: str, plan: recipe.BaseScale, work: Path, seconds: float) -> dict:
    from vlm_retain.evaluate.results import package_versions

    resolved = (work / "run" / "config.yaml").read_text(encoding="utf-8")
    reading = {}
    if plan.read_steps:
        reading = {
            "read_config_yaml": (work / "read" / "config.yaml").read_text(encoding="utf-8"),
            "read_log_tail": _log_tail(work / "read" / "train_log.jsonl"),
        }
    return {
        "scale": scale,
        "plan": asdict(plan),
        "model": {
            "family": recipe.MODEL_FAMILY,
            "size": plan.model_size,
            "seed": recipe.MODEL_SEED,
            "init_std": recipe.INIT_STD,
        },
        "data": {
            "world": _options(recipe.world_options(plan)),
            "print": _options(recipe.print_options(plan)),
            "manuscripts_for_scores": _options(recipe.manuscript_options(plan.eval_lines_per_lang)),
        },
        **reading,
        "train_config_yaml": resolved,
        "train_log_tail": _log_tail(work / "run" / "train_log.jsonl"),
        "seconds": round(seconds, 1),
        "versions": package_versions(),
        "machine": {"cpus": _cpus(), "platform": platform.platform()},
    }


def _options(options: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(options)))


def _log_tail(path: Path, lines: int = 5) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = path.read_text(encoding="utf-8").splitlines()[-lines:]
    return [json.loads(row) for row in rows]


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
