"""``vlm-retain train CONFIG.yaml``: fine-tune with retention strategies (docs/training.md).

The command checks the config (every error names its key; exit 2) before anything heavy is
imported, then hands it to :func:`vlm_retain.train.trainer.train`. It also plugs in the pieces
of the evaluate layer the trainer may not import itself (ARCHITECTURE.md: ``train`` does not
import ``evaluate``): the probe's tasks, greedy generation and VQA scoring, and generation for
self-replay. Multi-GPU: ``accelerate launch --config_file configs/accelerate/ddp.yaml -m
vlm_retain train CONFIG.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vlm_retain.errors import InputError

console = Console(markup=False, highlight=False)

CONFIG = typer.Argument(..., help="Run config (YAML); see configs/ and docs/training.md.")
SET = typer.Option(
    None, "--set", help="Override a key: --set train.lr=2e-4 (repeatable; value parsed as YAML)."
)
RESUME = typer.Option(False, "--resume", help="Continue the run in train.output_dir.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing run in train.output_dir.")
QUIET = typer.Option(False, "--quiet", "-q", help="Only errors and the final line.")


def train(
    config: Path = CONFIG,
    set_: list[str] | None = SET,
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
) -> None:
    """Fine-tune a model as CONFIG says; writes RUN/final, train_log.jsonl, train_summary.json."""
    from vlm_retain.train.config import load_config

    cfg = load_config(config, set_ or [])  # before torch is even imported
    from vlm_retain.train.trainer import TrainHooks
    from vlm_retain.train.trainer import train as run

    quiet_console = Console(markup=False, highlight=False, quiet=True)
    outcome = run(
        cfg,
        resume=resume,
        overwrite=overwrite,
        hooks=TrainHooks(
            probe_suite=probe_suite,
            generator=generator,
            console=quiet_console if quiet else console,
        ),
    )
    if quiet:
        console.print(f"{outcome.summary['final_kind']} in {outcome.final}")


# --- the evaluate layer, plugged into the trainer ---------------------------------------------


def generator(loaded: Any, *, max_new_tokens: int = 64, batch_size: int = 16) -> Any:
    """Greedy ``generate(images, prompts) -> answers`` with the HF backend on ``loaded``."""
    from vlm_retain.evaluate.generate.base import GenerationConfig, Request
    from vlm_retain.evaluate.generate.hf import HFBackend

    backend = HFBackend(
        loaded, GenerationConfig(batch_size=batch_size, max_new_tokens=max_new_tokens)
    )

    def generate(images: list[Any], prompts: list[str]) -> list[str]:
        requests = [
            Request(id=str(i), image=image, prompt=prompt)
            for i, (image, prompt) in enumerate(zip(images, prompts, strict=True))
        ]
        answers = {r.id: (r.text if r.ok else "") for r in backend.generate(requests)}
        return [answers.get(str(i), "") for i in range(len(requests))]

    return generate


def probe_suite(probe: Any, loaded: Any) -> Any:
    """The probe: ``probe.limit`` items of the VQA-scored tasks under ``probe.data``.

    Items are spread evenly over the tasks found (the synthetic world has ``vqav2`` and
    ``world-signs``), each task's default split, a deterministic subset (seed 0). Caption tasks
    are not probed: their metrics need a Java tokenizer, too slow to run every few steps.
    """
    from vlm_retain.evaluate.metrics.vqa import vqa_accuracy
    from vlm_retain.evaluate.tasks import find_tasks, get_task
    from vlm_retain.train.probe import ProbeItem, ProbeSuite

    data = Path(probe.data)
    found = find_tasks(data, group="general")
    tasks = {
        name: sources
        for name, sources in found.items()
        if get_task(name).kind == "generate" and get_task(name).metric == "vqa"
    }
    loaded_items: dict[str, list[Any]] = {}
    for name, sources in tasks.items():
        items = get_task(name).load(sources)
        if items:
            loaded_items[name] = items
    if not loaded_items:
        raise InputError(
            "probe.data holds no VQA task (VQAv2 layout, a synthetic world...)",
            path=data,
            field="probe.data",
            hint="point it at a 'data synth world' folder or a VQAv2 folder (docs/evaluation.md)",
        )
    per_task = math.ceil(probe.limit / len(loaded_items))
    chosen: list[ProbeItem] = []
    max_new = 16
    for name, items in loaded_items.items():
        task = get_task(name)
        max_new = max(max_new, task.max_new_tokens)
        for item in task.select(items, per_task, 0):
            ref = item.image
            image = ref.path if ref.path is not None and not ref.in_parquet else ref.load()
            chosen.append(
                ProbeItem(
                    id=f"{name}/{item.id}",
                    task=name,
                    image=image,
                    prompt=task.render_prompt(item),
                    answers=tuple(item.answers or ()),
                )
            )
    chosen = chosen[: probe.limit]
    return ProbeSuite(
        items=chosen,
        generator=lambda live: generator(live, max_new_tokens=max_new),
        score=lambda prediction, answers: vqa_accuracy(prediction, list(answers)),
    )
