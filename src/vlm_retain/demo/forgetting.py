"""The demo's model path: forgetting and its cure, from the shipped base to the gated report.

1. synthesize held-out world scenes, printed lines and manuscript lines (other seeds than the
   base's pretraining data);
2. evaluate the base (manuscript OCR, print OCR, VQA, captions, retrieval);
3. fine-tune it on the manuscripts with every recipe of :data:`recipe.RECIPES` (full fine-tuning,
   LoRA, LoRA with replay and KL, a selective preset, L2-SP), two at a time on one thread each
   (two single-thread runs get nearly twice the work of one two-thread run on two cores);
4. run a WiSE-FT sweep on the full fine-tune (on the first worker free once it is done; its
   ends reuse the evaluations of the base and of the full fine-tune);
5. evaluate everything and write the report with the 95 % gate; print and save the summary.

Every number printed is one the code produced on this machine.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.demo import recipe
from vlm_retain.demo.evaluation import GENERAL_TASKS, MAX_NEW_TOKENS, DemoEval, evaluate_model
from vlm_retain.demo.summary import print_summary, summary_rows, write_summary
from vlm_retain.demo.training import run_train_config
from vlm_retain.merge.sweep import point_name

FLOOR = 0.95


def run_forgetting(
    out: Path, base: Path, *, scale: str = "full", workers: int = 2, console: Console
) -> dict[str, Any]:
    """Run every step under ``out`` starting from the model folder ``base``."""
    from vlm_retain.data.synthetic.htr import synth_htr
    from vlm_retain.data.synthetic.world import synth_world

    plan = recipe.DEMO_SCALES[scale]
    started = time.perf_counter()
    data = out / "data"
    world, printed, hands = data / "world", data / "print", data / "manuscripts"
    with console.status("synthesizing manuscript lines, printed lines and world scenes"):
        synth_htr(hands, recipe.manuscript_options(plan.manuscript_per_lang), progress=False)
        synth_htr(printed, recipe.demo_print(plan), progress=False)
        synth_world(world, recipe.demo_world(plan), progress=False)
    spec = DemoEval(world=world, manuscripts=hands, printed=printed, limit=plan.eval_limit)
    with console.status("evaluating the base"):
        base_eval = evaluate_model(base, None, spec, out / "eval" / "base")
    console.print("evaluated the base")

    jobs = [
        (
            chosen,
            recipe.finetune_config(chosen, base, hands, world, out / "runs" / chosen.slug, plan),
        )
        for chosen in recipe.RECIPES
    ]
    evals: dict[str, dict[str, Path]] = {}
    status = console.status(f"fine-tuning {len(jobs)} recipes, {plan.steps} steps each")
    queue: deque[tuple[str, Callable[..., Any], tuple[Any, ...]]] = deque(
        (chosen.slug, _finetune_and_evaluate, (config, spec, out / "eval" / chosen.slug))
        for chosen, config in sorted(jobs, key=lambda job: _start_rank(job[0].slug))
    )
    done: dict[str, Any] = {}
    with status, _pool(workers) as pool:
        running: dict[Future, str] = {}
        while queue or running:
            while queue and len(running) < max(1, workers):
                slug, job, args = queue.popleft()
                running[pool.submit(job, *args)] = slug
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                slug = running.pop(future)
                done[slug] = future.result()
                if slug == SWEEP:
                    continue
                evals[slug] = done[slug]["eval"]
                console.print(_trained_line(slug, done[slug]))
                if slug == recipe.FULL_FT:
                    # next on the first free worker: the ends of the sweep are the base and
                    # the full fine-tune, both evaluated already
                    ends = {0.0: base_eval["main"], 1.0: done[slug]["eval"]["main"]}
                    sweep_args = (base, done[slug]["final"], spec, plan, out / "sweep", ends)
                    queue.appendleft((SWEEP, _sweep, sweep_args))
    sweep_doc = done[SWEEP]
    console.print("WiSE-FT sweep on the full fine-tune: done")

    inputs, names = [], []
    for chosen in recipe.RECIPES:
        inputs.append(evals[chosen.slug]["main"])
        names.append(chosen.name)
    for alpha in plan.alphas:
        inputs.append(out / "sweep" / "points" / point_name(alpha) / "eval")
        names.append(f"WiSE-FT {alpha:g}")

    from vlm_retain.report import build_report, write_report

    doc = build_report(inputs, base_eval["main"], names=names, floor=FLOOR, resamples=200)
    write_report(doc, out / "report")
    prints = {chosen.name: evals[chosen.slug].get("print") for chosen in recipe.RECIPES}
    rows = summary_rows(doc, base_eval.get("print"), prints)
    seconds = time.perf_counter() - started
    write_summary(rows, doc, out / "report", seconds=seconds, scale=plan.name)
    print_summary(rows, doc, console, seconds=seconds)
    console.print(f"report: {out / 'report' / 'report.html'}")
    return {"report": doc, "rows": rows, "sweep": sweep_doc, "seconds": seconds}


#: The order recipes start in: with two workers, the full fine-tune first (the sweep waits for it
#: and then goes next), the shortest recipe last, so both workers finish together (about a
#: minute sooner than in the order of the report, as measured on the shipped base).
START_ORDER = ("full", "full-l2sp", "lora", "lora-replay-kl", "selective")
SWEEP = "wise-ft sweep"


def _start_rank(slug: str) -> int:
    """Position in :data:`START_ORDER`; a recipe not listed there starts last."""
    return START_ORDER.index(slug) if slug in START_ORDER else len(START_ORDER)


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes on one thread each; spawned, so no torch state is forked."""
    return ProcessPoolExecutor(
        max_workers=max(1, workers),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_one_thread,
    )


def _one_thread() -> None:
    import torch

    from vlm_retain.quiet import silence_known_warnings

    torch.set_num_threads(1)
    silence_known_warnings()


def _finetune_and_evaluate(config: dict[str, Any], spec: DemoEval, out: Path) -> dict[str, Any]:
    """Train one recipe and evaluate its result (runs in a worker process)."""
    started = time.perf_counter()
    outcome = run_train_config(config, Console(quiet=True))
    is_adapter = (outcome.final / "adapter_config.json").is_file()
    base = Path(config["model"]["path"])
    model, adapter = (base, outcome.final) if is_adapter else (outcome.final, None)
    folders = evaluate_model(model, adapter, spec, out)
    return {
        "final": outcome.final,
        "eval": folders,
        "steps": outcome.summary.get("steps"),
        "seconds": time.perf_counter() - started,
    }


def _sweep(
    base: Path,
    finetuned: Path,
    spec: DemoEval,
    plan: recipe.DemoScale,
    out: Path,
    ends: dict[float, Path],
) -> dict[str, Any]:
    """The WiSE-FT sweep on the full fine-tune (runs in a worker process)."""
    from vlm_retain.merge.sweep import SweepSpec, run_sweep

    sweep = SweepSpec(
        base=str(base),
        finetuned=finetuned,
        adapter=None,
        alphas=[0.0, *plan.alphas, 1.0],  # both ends: the plot shows the whole trade-off
        eval_data=[spec.manuscripts, spec.world],
        out=out,
        floor=FLOOR,
        limit=spec.limit,
        batch_size=spec.batch_size,
        max_new_tokens=MAX_NEW_TOKENS,
        resamples=spec.resamples,
        tasks=GENERAL_TASKS,
        ocr_prompt=recipe.OCR_PROMPT,
        prune_models=True,
        reuse_eval=ends,
    )
    return run_sweep(sweep, console=Console(quiet=True), progress=False)


def _trained_line(slug: str, done: dict[str, Any]) -> str:
    name = next(r.name for r in recipe.RECIPES if r.slug == slug)
    return f"trained and evaluated {name}: {done['steps']} steps, {done['seconds']:.0f} s"
