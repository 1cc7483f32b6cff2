"""The WiSE-FT sweep: build each alpha's model, evaluate it, pick the point to deploy.

Layout of ``SWEEP/``::

    sweep.json                     every point's metrics, retention, verdict, and the choice
    pareto.png                     OCR metric against mean retention, floor and choice marked
    points/alpha_0.30/model|adapter   the merged point (alpha 0 and 1 reuse the inputs)
    points/alpha_0.30/eval/<task>/    the evaluation runner's outputs (cached per settings)
    points/alpha_0.30/inputs.json     the inputs (paths and sha256 of their weights) of eval/

Why this shape: every step is resumable on its own. A point folder is reused when its
``merge.json`` says it is the same merge (same alpha, same input paths and weight hashes); the
runner skips tasks whose results exist with the same settings; and a point whose tasks all have
results is not even rebuilt. So a rerun with more alphas, or after an interruption, costs only
what is new. The runner's settings name the model by path only, so each point's ``eval/`` is
cleared when ``inputs.json`` differs from the current inputs (an adapter or model replaced at
the same path) or when the point is rebuilt: stale results are never reused.

Alpha 0 is the base model itself (the baseline every retention is divided by), so it is always
evaluated, added to the list when missing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json, write_marker
from vlm_retain.merge import methods
from vlm_retain.merge.select import check_floor, choose_point, gate, mean_retention, retention_ratio

SWEEP_SCHEMA = "vlm-retain/sweep/1"
#: OCR metrics and their direction (results.json ``metrics`` of an OCR task).
OCR_METRICS = {
    "cer": True,
    "wer": True,
    "cer_macro": True,
    "wer_macro": True,
    "line_accuracy": False,
}


def parse_alphas(text: str) -> list[float]:
    """``"0,0.25,0.5"`` or ``"0:1:0.1"`` (start:stop:step, both ends included) -> sorted alphas,
    each in [0, 1], with 0 added (the base is the baseline)."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            count = round((stop - start) / step)
            values = [round(start + i * step, 6) for i in range(count + 1)]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(
            f"cannot read --alphas {text!r}", hint="use a list (0,0.5,1) or start:stop:step"
        ) from None
    if not values:
        raise InputError("--alphas is empty")
    for value in values:
        methods.check_alpha(value)
    return sorted({0.0, *values})


def point_name(alpha: float) -> str:
    """``alpha_0.30``: two decimals when exact, else as many as needed."""
    return f"alpha_{alpha:.2f}" if round(alpha, 2) == alpha else f"alpha_{alpha:g}"


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep and how to evaluate it."""

    base: str
    finetuned: Path | None
    adapter: Path | None
    alphas: list[float]
    eval_data: list[Path]
    out: Path
    floor: float = 0.95
    ocr_metric: str = "cer"
    limit: int | None = None
    split: str | None = None
    seed: int = 0
    batch_size: int | None = None  # None: by device (evaluate.runner.AUTO_BATCH_SIZE)
    max_new_tokens: int | None = None
    resamples: int = 1000
    device: str = "auto"
    merge_into_base: bool = False
    prune_models: bool = False
    strict_base: bool = True
    tasks: tuple[str, ...] = ()  # general tasks to keep (empty: every one found)
    ocr_prompt: str | None = None  # the prompt the model was fine-tuned with (None: default)
    #: evaluation folders already made for a point's model (alpha 0: the base; alpha 1: the
    #: fine-tuned model), reused task by task where their settings are this sweep's
    reuse_eval: dict[float, Path] = field(default_factory=dict)

    def check(self) -> None:
        if (self.finetuned is None) == (self.adapter is None):
            raise InputError("give exactly one of --finetuned and --adapter")
        if self.ocr_metric not in OCR_METRICS:
            raise InputError(
                f"unknown --ocr-metric {self.ocr_metric!r}", hint=f"use {', '.join(OCR_METRICS)}"
            )
        check_floor(self.floor)
        for alpha in self.alphas:
            methods.check_alpha(alpha)


def discover_tasks(
    eval_data: Sequence[Path],
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """OCR and general tasks under ``eval_data``; a sweep needs both sides to trade off."""
    from vlm_retain.evaluate.runner import discover

    try:
        ocr = discover("ocr", eval_data)
    except InputError:
        raise InputError(
            "the sweep needs an OCR manifest under --eval-data (it picks the best OCR score)"
        ) from None
    try:
        general = discover("general", eval_data)
    except InputError:
        raise InputError(
            "the sweep needs general benchmarks under --eval-data (retention is measured there)"
        ) from None
    return ocr, general


def run_sweep(spec: SweepSpec, *, console: Console | None = None, progress: bool = True) -> dict:
    """Build, evaluate and choose; write ``sweep.json`` and the plot; return the document."""
    from vlm_retain.merge.plot import pareto_plot

    spec.check()
    console = console or Console(markup=False, highlight=False, stderr=True)
    _check_inputs(spec)
    ocr_tasks, general_tasks = discover_tasks(spec.eval_data)
    if spec.tasks:
        unknown = sorted(set(spec.tasks) - set(general_tasks))
        if unknown:
            raise InputError(
                f"no general task {unknown[0]!r} under --eval-data",
                hint=f"found {', '.join(general_tasks)}",
            )
        general_tasks = {k: v for k, v in general_tasks.items() if k in spec.tasks}
    tasks = {**ocr_tasks, **general_tasks}
    alphas = sorted({0.0, *spec.alphas})
    spec.out.mkdir(parents=True, exist_ok=True)
    write_marker(spec.out, "sweep", method="wise-ft")
    raw: list[dict[str, Any]] = []
    for alpha in alphas:
        console.print(f"alpha {alpha:g}: building and evaluating")
        raw.append(_evaluate_point(spec, alpha, tasks, console, progress))
    doc = summarize(spec, raw, list(general_tasks))
    plot = spec.out / "pareto.png"
    pareto_plot(doc, plot)
    doc["plot"] = plot.name
    atomic_write_json(spec.out / "sweep.json", doc)
    return doc


def _check_inputs(spec: SweepSpec) -> None:
    """Fail before any evaluation when the inputs cannot be merged."""
    from vlm_retain.merge.checkpoint import check_compatible
    from vlm_retain.merge.inputs import check_adapter_base, require_folder, resolve_base

    if spec.adapter is not None:
        check_adapter_base(
            require_folder(spec.adapter, "adapter"), spec.base, strict=spec.strict_base
        )
    else:
        assert spec.finetuned is not None
        check_compatible(
            [resolve_base(spec.base), require_folder(spec.finetuned, "fine-tuned model")]
        )


def _point_model(
    spec: SweepSpec, alpha: float, folder: Path
) -> tuple[str, str | None, Path | None]:
    """``(model, adapter, built folder)`` to evaluate at ``alpha``; the endpoints need no
    build (alpha 0 is the base, alpha 1 the fine-tuned model or base + adapter)."""
    if alpha == 0.0:
        return spec.base, None, None
    if spec.adapter is not None:
        needs_full = spec.merge_into_base or _is_dora(spec.adapter)
        if alpha == 1.0 and not spec.merge_into_base:
            return spec.base, str(spec.adapter), None
        target = folder / ("model" if needs_full else "adapter")
        if needs_full:
            return str(target), None, target
        return spec.base, str(target), target
    assert spec.finetuned is not None
    if alpha == 1.0:
        return str(spec.finetuned), None, None
    target = folder / "model"
    return str(target), None, target


def _is_dora(adapter: Path) -> bool:
    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    return bool(config.get("use_dora"))


def _current_inputs(spec: SweepSpec, alpha: float) -> list[dict[str, Any]]:
    """``[{"role", "path", "weights": {file: sha256}}]`` of the inputs the point at ``alpha``
    is made from, exactly as ``merge.json`` records them (alpha 0 reads only the base, alpha 1
    of a full fine-tune only the fine-tuned model). Hashed once per process per file state."""
    from vlm_retain.merge.inputs import input_record, require_folder, resolve_base

    records = []
    if alpha != 1.0 or spec.adapter is not None:
        records.append(input_record("base", resolve_base(spec.base)))
    if alpha != 0.0:
        if spec.adapter is not None:
            records.append(input_record("adapter", require_folder(spec.adapter, "adapter")))
        else:
            assert spec.finetuned is not None
            records.append(
                input_record("finetuned", require_folder(spec.finetuned, "fine-tuned model"))
            )
    return records


def _same_inputs(recorded: Any, current: list[dict[str, Any]]) -> bool:
    def key(items: Any) -> list[tuple[Any, Any, Any]]:
        return [(i.get("role"), i.get("path"), i.get("weights")) for i in items or []]

    return isinstance(recorded, list) and key(recorded) == key(current)


def _build(spec: SweepSpec, alpha: float, target: Path, inputs: list[dict[str, Any]]) -> bool:
    """Write the merged point at ``target`` unless the same merge (same alpha, same input
    paths and same input weight hashes) is already there; True when it was (re)built."""
    from vlm_retain.merge.wise_ft import wise_ft_adapter, wise_ft_models

    record_file = target / "merge.json"
    if record_file.is_file():
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if (
            record.get("alpha") == alpha
            and record.get("output") == target.name
            and _same_inputs(record.get("inputs"), inputs)
        ):
            return False
    if spec.adapter is not None:
        wise_ft_adapter(
            spec.base,
            spec.adapter,
            alpha,
            target,
            merge_into_base=target.name == "model",
            strict_base=spec.strict_base,
            overwrite=True,
        )
    else:
        assert spec.finetuned is not None
        wise_ft_models(spec.base, spec.finetuned, alpha, target, overwrite=True)
    return True


#: Beside each point's ``eval/``: the inputs (with weight hashes) its results were made from.
INPUTS_FILE = "inputs.json"


def _evaluate_point(
    spec: SweepSpec,
    alpha: float,
    tasks: dict[str, list[Path]],
    console: Console,
    progress: bool,
) -> dict[str, Any]:
    from vlm_retain.evaluate.runner import EvalSettings, Runner

    folder = spec.out / "points" / point_name(alpha)
    model, adapter, built = _point_model(spec, alpha, folder)
    eval_dir = folder / "eval"
    inputs = _current_inputs(spec, alpha)
    stamp = {"alpha": alpha, "model": model, "adapter": adapter, "inputs": inputs}
    stamp_file = folder / INPUTS_FILE
    try:
        recorded = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if recorded != json.loads(json.dumps(stamp)) and eval_dir.exists():
        # the inputs changed at the same path (or the results' inputs are unknown): the
        # runner would reuse these results by its settings alone, which name only paths
        console.print(f"alpha {alpha:g}: inputs changed since the last evaluation; re-evaluating")
        shutil.rmtree(eval_dir)
    complete = all((eval_dir / name / "results.json").is_file() for name in tasks)
    rebuilt = built is not None and not complete and _build(spec, alpha, built, inputs)
    if rebuilt and eval_dir.exists():
        shutil.rmtree(eval_dir)  # a rebuilt point never reuses its old results
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp_file, stamp)
    settings = EvalSettings(
        model=model,
        adapter=adapter,
        split=spec.split,
        limit=spec.limit,
        seed=spec.seed,
        batch_size=spec.batch_size,
        max_new_tokens=spec.max_new_tokens,
        resamples=spec.resamples,
        device=spec.device,
        ocr_prompt=spec.ocr_prompt,
    )
    reuse = [spec.reuse_eval[alpha]] if alpha in spec.reuse_eval else []
    runner = Runner(settings, eval_dir, console=console, progress=progress, reuse=reuse)
    outcomes = runner.run(tasks)
    if built is not None and spec.prune_models and built.exists():
        shutil.rmtree(built)
    return {
        "alpha": alpha,
        "model": model,
        "adapter": adapter,
        "eval": str(eval_dir.relative_to(spec.out)),
        "metrics": {o.task: dict(o.metrics) for o in outcomes},
    }


def summarize(spec: SweepSpec, raw: list[dict[str, Any]], general: Sequence[str]) -> dict[str, Any]:
    """The sweep.json document from each point's metrics (retention, gate, choice)."""
    from vlm_retain.evaluate.runner import HEADLINE
    from vlm_retain.evaluate.tasks import get_task

    lower = OCR_METRICS[spec.ocr_metric]
    headline = {name: HEADLINE[get_task(name).metric] for name in general}
    base = next(p for p in raw if p["alpha"] == 0.0)
    points = []
    for point in raw:
        ocr = {k: v for k, v in point["metrics"].get("ocr", {}).items() if _number(v)}
        general_values: dict[str, float | None] = {}
        retention: dict[str, float | None] = {}
        for task, (metric, higher) in headline.items():
            key = f"{task}/{metric}"
            value = _value(point["metrics"].get(task, {}).get(metric))
            general_values[key] = value
            retention[key] = retention_ratio(
                value, _value(base["metrics"].get(task, {}).get(metric)), higher
            )
        passes, failing = gate(retention, spec.floor)
        points.append(
            {
                "alpha": point["alpha"],
                "model": point["model"],
                "adapter": point["adapter"],
                "eval": point["eval"],
                "ocr": ocr,
                "ocr_score": ocr.get(spec.ocr_metric),
                "general": general_values,
                "retention": retention,
                "mean_retention": mean_retention(retention),
                "passes": passes,
                "failing": failing,
            }
        )
    choice = choose_point(points, spec.floor, lower_is_better=lower)
    ungated = sorted(k for k, v in points[0]["retention"].items() if v is None)
    return {
        "schema": SWEEP_SCHEMA,
        "method": "wise-ft",
        "base": spec.base,
        "finetuned": str(spec.finetuned) if spec.finetuned else None,
        "adapter": str(spec.adapter) if spec.adapter else None,
        "alphas": [p["alpha"] for p in points],
        "eval_data": [str(d) for d in spec.eval_data],
        "limit": spec.limit,
        "tasks": sorted(general),
        "floor": spec.floor,
        "ocr_metric": spec.ocr_metric,
        "ocr_lower_is_better": lower,
        "gate_rule": (
            "PASS when every general task's headline metric keeps >= floor of the base "
            "(point / base); metrics where the base scores 0 are ungated"
        ),
        "ungated": ungated,
        "points": points,
        "chosen": {"alpha": choice.alpha, "reason": choice.reason, "passing": choice.passing},
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value(value: Any) -> float | None:
    return float(value) if _number(value) else None
