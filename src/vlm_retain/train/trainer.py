"""The training loop: one readable function from a config to ``RUN/final``, on accelerate.

Why a plain accelerate loop and not the HF ``Trainer``: the two things that must be exactly
right here are awkward inside ``Trainer``. (1) The mixture is *re-drawn every epoch* with a
token budget and batches are planned by modality and length (``plan_batches``); ``Trainer``
wants one dataset and one sampler, and its resume skips batches of a sampler it rebuilds. Here
the data position is just ``(epoch, batch index)`` and every epoch's batch list is a pure
function of ``(seed, epoch)``, so resume recomputes it and starts at the index. (2) Exact
resume needs the trainable weights, AdamW state, scheduler, every RNG state and that position,
in safetensors (no pickles): :mod:`~vlm_retain.train.checkpoint` writes exactly that.
``accelerate`` still does what a framework should: device placement, autocast, gradient
accumulation (``accelerator.accumulate``), DDP / DeepSpeed ZeRO / FSDP under
``accelerate launch`` (configs/accelerate/), gradient clipping, trackers. The loop reads top to
bottom like a torchtune recipe::

    setup: config -> model -> mixture -> probe baseline -> tuning -> objectives -> optimizer
    loop:  draw micro-batches -> forward -> combine(objectives) -> backward -> clip -> step
           -> log -> probe (floor?) -> checkpoint
    end:   final adapter/model -> train_summary.json

Micro-batches form one continuous stream across epochs: an optimizer step always consumes
``grad_accum`` micro-batches, even across an epoch boundary, so accumulation never sees a short
group (which would break accelerate's and DeepSpeed's accumulation counters on resume).

Nothing is written before every input has been checked and the model, data, probe baseline and
Fisher are ready: the run folder is created just before the first step, and removed again if
the run fails before its first checkpoint (bad input found late, out of memory).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json, read_marker, write_marker
from vlm_retain.models.checkpointing import set_checkpointing
from vlm_retain.models.loading import is_oom, release_accelerator_memory
from vlm_retain.train.callbacks import ParamDistance, TrainLog, check_trackers, step_line
from vlm_retain.train.checkpoint import (
    Position,
    check_compatible,
    checkpoint_dir,
    list_checkpoints,
    load_checkpoint,
    load_weights_only,
    read_state,
    rotate,
    save_checkpoint,
    save_final,
)
from vlm_retain.train.config import CONFIG_NAME, RunConfig, config_hash, save_resolved
from vlm_retain.train.memory_plan import (
    ChunkTrials,
    MemoryGauge,
    MemoryPlan,
    longest_by_modality,
    step_reserve,
)
from vlm_retain.train.prefetch import Prefetched, own_processor, wants_prefetch
from vlm_retain.train.probe import Probe, ProbeResult, ProbeSuite, RetentionWatch, eval_loss

FINAL = "final"
SUMMARY = "train_summary.json"
RUN_MARKER = "train-run"


@dataclass
class TrainHooks:
    """What the caller plugs in (the CLI: the evaluate layer; tests: fakes).

    ``probe_suite(config.probe, loaded)`` builds the probe's items, generation and scoring;
    ``generator(loaded)`` builds greedy generation for self-replay; ``on_step(step)`` runs after
    every optimizer step (tests raise there to simulate a crash); ``memory_gauge`` measures the
    trials of ``train.chunk_rows: auto``.
    """

    probe_suite: Callable[[Any, Any], ProbeSuite] | None = None
    generator: Callable[[Any], Callable[[list[Path | None], list[str]], list[str]]] | None = None
    on_step: Callable[[int], None] | None = None
    #: measures trials for ``train.chunk_rows: auto`` (default: the CUDA allocator with a GPU,
    #: none on CPU; tests plug in a gauge of a simulated device)
    memory_gauge: MemoryGauge | None = None
    console: Console | None = field(default_factory=lambda: Console(markup=False, highlight=False))


@dataclass
class TrainOutcome:
    run_dir: Path
    final: Path | None
    summary: dict[str, Any]


# --- the run folder --------------------------------------------------------------------------


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Decide what to do with ``train.output_dir`` before anything loads.

    Returns the checkpoint to resume from (None: start fresh). A non-empty folder is refused
    unless ``resume`` (continue it) or ``overwrite`` (replace it, only if it is a run folder).
    """
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other; pick one")
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("train.output_dir exists and is not a folder", path=run_dir)
    if resume:
        if not (run_dir / CONFIG_NAME).is_file():
            raise InputError(
                "nothing to resume: no run here", path=run_dir, hint="drop --resume to start it"
            )
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    if exists:
        if not overwrite:
            raise InputError(
                "train.output_dir already holds a run",
                path=run_dir,
                hint="pass --resume to continue it, --overwrite to replace it, or choose "
                "another train.output_dir",
            )
        marker = read_marker(run_dir) or {}
        if marker.get("kind") != RUN_MARKER and not (run_dir / CONFIG_NAME).is_file():
            raise InputError(
                "train.output_dir is not empty and was not written by vlm-retain train",
                path=run_dir,
                hint="refusing to replace it; choose another train.output_dir",
            )
    return None


# --- precision, memory -----------------------------------------------------------------------


def mixed_precision(precision: str, device_type: str) -> str:
    """accelerate's ``mixed_precision`` for ``train.precision`` (auto: bf16 on a capable GPU)."""
    import torch

    if precision == "auto":
        if device_type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if precision != "fp32" and device_type == "cpu":
        raise InputError(
            f"train.precision is {precision} but there is no GPU", hint="use auto or fp32 on CPU"
        )
    return {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]


def weights_dtype(model_dtype: str, precision: str) -> str:
    """fp16 autocast needs fp32 master weights; otherwise the model's own setting."""
    if precision == "fp16" and model_dtype == "auto":
        return "fp32"
    return model_dtype


def oom_error(config: RunConfig, checkpointing: bool, chunk_rows: int | None = None) -> InputError:
    rows = chunk_rows or config.train.batch_size
    tips = [
        f"train.chunk_rows (now {rows}; the same step in smaller forward passes)"
        if rows > 1
        else f"train.batch_size (now {config.train.batch_size}; raise train.grad_accum to "
        "keep the effective batch)"
    ]
    tips.append(f"data.max_pixels (now {config.data.max_pixels or 'the processor limit'})")
    if not checkpointing:
        tips.append("train.gradient_checkpointing: on")
    if not config.tuning.uses_lora:
        tips.append("tuning.mode: lora (or a selective preset)")
    if config.objectives.kl_to_base.weight > 0 and config.objectives.kl_to_base.top_k is None:
        tips.append("objectives.kl_to_base.top_k (e.g. 100)")
    return InputError("out of memory during training", hint="lower " + "; ".join(tips))


def configure_deepspeed(plugin: Any, config: RunConfig, num_processes: int) -> dict[str, Any]:
    """Fill the DeepSpeed config's batch, accumulation and clipping from the run config.

    The loop prepares only the model and optimizer (its batches come from :class:`BatchStream`,
    not a DataLoader), so accelerate cannot infer ``train_micro_batch_size_per_gpu`` from a
    dataloader and refuses an ``"auto"`` value; and it fills an ``"auto"``
    ``gradient_clipping`` with 1.0 whatever ``train.max_grad_norm`` says. Call this before
    ``accelerator.prepare`` with ``accelerator.state.deepspeed_plugin`` (None when DeepSpeed is
    not in use: nothing happens). ``train.max_grad_norm: null`` becomes 0.0 (DeepSpeed: off).
    Returns the values written (empty without a plugin).
    """
    if plugin is None:
        return {}
    ds = plugin.deepspeed_config
    tc = config.train
    values: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": tc.batch_size,
        "gradient_accumulation_steps": tc.grad_accum,
        "train_batch_size": tc.batch_size * tc.grad_accum * num_processes,
        "gradient_clipping": float(tc.max_grad_norm) if tc.max_grad_norm is not None else 0.0,
    }
    ds.update(values)
    return values


# --- the data stream -------------------------------------------------------------------------


class BatchStream:
    """This process's micro-batches, epoch after epoch, from any ``Position``.

    Epoch ``e`` is ``mixture.epoch(e)`` planned by :func:`~vlm_retain.train.collate.plan_batches`
    for all processes, of which process ``r`` takes batches ``r, r + W, ...`` (the modality
    blocks keep every rank on the same path through the model in each micro-step).
    """

    def __init__(self, mixture: Any, collator: Any, config: RunConfig, rank: int, world: int):
        self.mixture = mixture
        self.collator = collator
        self.config = config
        self.rank = rank
        self.world = world
        #: the last two epochs planned (the prefetch thread may be one epoch ahead of the loop)
        self._cache: dict[int, tuple[list[Any], list[list[int]]]] = {}
        self._lock = threading.Lock()  # the prefetch thread and the loop both ask

    def epoch(self, e: int) -> tuple[list[Any], list[list[int]]]:
        from vlm_retain.train.collate import plan_batches

        with self._lock:
            if e not in self._cache:
                samples = self.mixture.epoch(e)
                batches = plan_batches(
                    samples,
                    self.config.train.batch_size,
                    num_replicas=self.world,
                    seed=self.config.train.seed,
                    epoch=e,
                    group_by_length=self.config.train.group_by_length,
                )
                self._cache[e] = (samples, batches[self.rank :: self.world])
                for old in sorted(self._cache)[:-2]:
                    del self._cache[old]
            return self._cache[e]

    def from_position(
        self, pos: Position, chunk_rows: int | None = None
    ) -> Iterator[tuple[int, int, list[dict[str, Any]]]]:
        """``(epoch, batch index, collated chunks)`` from ``pos`` on, forever: each micro-batch
        collated in chunks of at most ``chunk_rows`` samples (None: one chunk)."""
        from vlm_retain.train.chunks import split_rows

        epoch, index = pos.epoch, pos.batch
        while True:
            samples, batches = self.epoch(epoch)
            if index >= len(batches):
                epoch, index = epoch + 1, 0
                continue
            rows = [samples[i] for i in batches[index]]
            yield epoch, index, [self.collator(chunk) for chunk in split_rows(rows, chunk_rows)]
            index += 1


def total_steps(config: RunConfig, batches_per_epoch: int) -> int:
    if config.train.max_steps is not None:
        return config.train.max_steps
    return max(1, math.ceil(config.train.epochs * batches_per_epoch / config.train.grad_accum))


# --- setup pieces ----------------------------------------------------------------------------


def learning_rates(config: RunConfig) -> dict[str, float]:
    lrs = {"default": config.train.lr}
    for component in ("llm", "projector", "vision"):
        value = getattr(config.tuning.lr, component)
        if value is not None:
            lrs[component] = value
    return lrs


def fisher_batches(config: RunConfig, loaded: Any, counter: Any, collator_for: Any) -> tuple:
    """One-sample batches of general data for EWC's Fisher, and a hash naming them.

    The data is ``objectives.ewc.data`` (split train; a manifest, world or benchmark folder),
    else the first replay source with its own split and tasks, else ``probe.data``. The hash is
    the content of the encoded batches (:func:`~vlm_retain.train.fisher.hash_batches`): it
    changes with anything that changes what the model sees (the samples drawn, prompts,
    ``data.max_pixels``, split, tasks, the processor), so a cached Fisher is never stale. Cost:
    encoding ``objectives.ewc.samples`` samples, even when the Fisher is then read from cache.
    """
    import numpy as np

    from vlm_retain.models.loading import batch_to
    from vlm_retain.train.config import ReplaySource
    from vlm_retain.train.fisher import hash_batches
    from vlm_retain.train.mixture import replay_source_samples

    ewc = config.objectives.ewc
    if ewc.data is not None:
        src = ReplaySource(benchmark=ewc.data)
    elif config.data.replay:
        src = config.data.replay[0]
    else:
        src = ReplaySource(benchmark=config.probe.data)
    samples = replay_source_samples(
        src,
        counter=counter,
        prompt=config.data.prompt,
        caption_prompt=config.data.caption_prompt,
        seed=config.train.seed,
        what="EWC Fisher data (objectives.ewc.data)",
    )
    rng = np.random.default_rng([config.train.seed, 0xF15])
    chosen = [samples[int(i)] for i in rng.permutation(len(samples))[: ewc.samples]]
    collator = collator_for(sorted({s.source for s in chosen}))
    encoded = [collator([s]) for s in chosen]
    data_hash = hash_batches(encoded)
    return (batch_to(b, loaded) for b in encoded), data_hash, len(chosen)


def build_objectives(config: RunConfig, tuned: Any, sources: list[str], fisher: Any) -> list[Any]:
    """CE always; KL, L2-SP and EWC when their weight is above 0 (all before step 1)."""
    from vlm_retain.train.objectives import EWC, L2SP, CrossEntropy, KLToBase
    from vlm_retain.train.reference import ReferenceModel

    obj = config.objectives
    objectives: list[Any] = [CrossEntropy(weight=obj.ce.weight, source_names=sources)]
    if obj.kl_to_base.weight > 0:
        kl = obj.kl_to_base
        objectives.append(
            KLToBase(
                ReferenceModel(tuned.model),
                weight=kl.weight,
                direction=kl.direction,
                temperature=kl.temperature,
                top_k=kl.top_k,
                on=kl.scope,
            )
        )
    if obj.l2sp.weight > 0:
        objectives.append(L2SP(tuned.model, weight=obj.l2sp.weight))
    if obj.ewc.weight > 0:
        objectives.append(EWC(tuned.model, fisher, weight=obj.ewc.weight))
    return objectives


# --- the run ---------------------------------------------------------------------------------


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    hooks: TrainHooks | None = None,
) -> TrainOutcome:
    """Train as ``config`` says; see the module docstring for the order of things."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import get_scheduler

    from vlm_retain.models.loading import batch_to, load_model
    from vlm_retain.models.registry import COMPONENTS
    from vlm_retain.train.collate import Collator
    from vlm_retain.train.groups import param_groups, trainable_summary
    from vlm_retain.train.mixture import TokenCounter, build_mixture, model_fingerprint
    from vlm_retain.train.objectives import combine, model_inputs
    from vlm_retain.train.positions import forward_kept
    from vlm_retain.train.presets import apply_tuning

    hooks = hooks or TrainHooks()
    tc = config.train
    run_dir = Path(tc.output_dir)
    started = time.perf_counter()

    # -- checks that need nothing loaded ------------------------------------------------------
    resume_from = check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    trackers = check_trackers(tc.report_to)
    if config.model.adapter is not None:
        raise InputError(
            "model.adapter: continuing an adapter is not supported by train yet",
            field="model.adapter",
            hint="merge it into the base first (vlm-retain merge wise-ft --base B --adapter A "
            "--alpha 1 --merge-into-base --out M) and set model.path to M, or remove "
            "model.adapter to train a new adapter",
        )
    # DDP: no buffer broadcast at each forward (the models' buffers, rotary frequencies, are
    # the same on every rank), so the memory plan's trials make no collective call until they
    # agree, even when one rank runs out of memory mid-forward
    kwargs = [
        DistributedDataParallelKwargs(
            broadcast_buffers=False,
            find_unused_parameters=config.tuning.trains("vision")
            or config.tuning.trains("projector"),
        )
    ]
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = Accelerator(
        mixed_precision=mixed_precision(tc.precision, device_type),
        gradient_accumulation_steps=tc.grad_accum,
        log_with=trackers or None,
        project_dir=str(run_dir) if trackers else None,
        kwargs_handlers=kwargs,
    )
    if resume_from is not None:
        check_compatible(read_state(resume_from), config, resume_from, accelerator.num_processes)
    console = hooks.console if accelerator.is_main_process else None

    def say(text: str) -> None:
        if console is not None:
            console.print(text, soft_wrap=True)

    set_seed(tc.seed)

    # -- model, data, probe baseline ----------------------------------------------------------
    loaded = load_model(
        config.model.path,
        dtype=weights_dtype(config.model.dtype, tc.precision),
        device=accelerator.device,
        attn=config.model.attn,
        allow_pickle=config.model.allow_pickle,
        trust_remote_code=config.model.trust_remote_code,
    )
    counter = TokenCounter.for_model(loaded, max_pixels=config.data.max_pixels)
    generate_fn = None
    if config.data.self_replay.enabled:
        if hooks.generator is None:
            raise InputError("data.self_replay needs a generation backend (run it from the CLI)")
        make = hooks.generator
        backend: list[Any] = []  # built on first use: a cached self-replay never needs it

        def generate_fn(images: list[Path | None], prompts: list[str]) -> list[str]:
            if not backend:
                backend.append(make(loaded))
            return backend[0](images, prompts)

    with accelerator.main_process_first():
        mixture = build_mixture(
            config.data,
            counter=counter,
            seed=tc.seed,
            generate_fn=generate_fn,
            model_key=model_fingerprint(loaded.path),
        )
    sources = sorted(set(mixture.target) | set(mixture.replay))
    prefetch = wants_prefetch(tc.prefetch, loaded.device)
    collator = Collator(
        own_processor(loaded) if prefetch else loaded,  # the thread must not share a tokenizer
        sources,
        max_pixels=config.data.max_pixels,
        cache_mib=tc.sample_cache_mib,
    )
    stream = BatchStream(
        mixture, collator, config, accelerator.process_index, accelerator.num_processes
    )
    steps = total_steps(config, len(stream.epoch(0)[1]))
    first = mixture.epoch(0)
    say(
        f"mixture: {len(first)} samples in epoch 0, replay share {mixture.share(first):.3f} of "
        f"tokens ({', '.join(f'{k} {v}' for k, v in mixture.stats(first).items())})"
    )

    probe: Probe | None = None
    watch = RetentionWatch(config.probe.retention_floor)
    base_probe: ProbeResult | None = None
    if config.probe.data:
        if hooks.probe_suite is None:
            raise InputError("probe.data needs a probe backend (run it from the CLI)")
        suite = hooks.probe_suite(config.probe, loaded)
        probe = Probe(
            suite, loaded, batch_size=min(16, tc.batch_size * 2), max_pixels=config.data.max_pixels
        )
        base_probe = probe.baseline(loaded.model)
        say(f"base model {base_probe.line().removeprefix('probe step 0: ')}")
    eval_batches: list[dict[str, Any]] = []
    if config.data.eval is not None:
        eval_batches = _eval_batches(config, counter, loaded)

    # -- what trains, what it is trained for --------------------------------------------------
    tuned = apply_tuning(loaded.model, loaded.family, config.tuning.spec())
    model = tuned.model
    checkpointing = tc.gradient_checkpointing == "on"
    if checkpointing:
        set_checkpointing(model, True)
    fisher = None
    fisher_info: dict[str, Any] = {}
    if config.objectives.ewc.weight > 0:
        from vlm_retain.train.fisher import fisher_for

        batches, data_hash, n = fisher_batches(
            config,
            loaded,
            counter,
            lambda names: Collator(loaded, names, max_pixels=config.data.max_pixels),
        )
        with accelerator.main_process_first():
            result = fisher_for(
                model,
                batches,
                cache_dir=config.objectives.ewc.cache_dir,
                n=n,
                seed=tc.seed,
                data_hash=data_hash,
                model_id=str(loaded.path),
            )
        fisher = result.fisher
        fisher_info = {"path": str(result.path), "cached": result.loaded, "samples": n}
        say(f"EWC Fisher: {'read from' if result.loaded else 'estimated, saved to'} {result.path}")
    objectives = build_objectives(config, tuned, sources, fisher)
    vision_cache = _vision_cache(config, model, loaded.family, objectives)
    if vision_cache is not None:
        say("vision cache: on (frozen vision tower; each image is encoded once)")
    answer_only = _answer_only(tc.answer_only_logits, model)
    from vlm_retain.train.compile import compile_for_run

    compiled = compile_for_run(tc.compile, model, loaded.family, loaded.device)
    if compiled:
        say(f"compile: {compiled} decoder layers (first steps slower)")
    prepare = _batch_preparer(config, model, loaded)
    if prepare is not batch_to:
        say(f"packing: on (rows of up to {tc.packing_row_tokens} tokens, no padding)")

    def forward(module: Any, batch: dict[str, Any]) -> Any:
        if answer_only:
            return forward_kept(module, model_inputs(batch), objectives, batch)
        return module(**model_inputs(batch))

    distance = ParamDistance(model, loaded.family)
    groups = param_groups(model, loaded.family, learning_rates(config), tc.weight_decay)
    if not groups:
        raise InputError("nothing trains", field="tuning.mode", hint="check the tuning spec")
    summary_counts = trainable_summary(model, loaded.family)
    optimizer = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = get_scheduler(
        tc.scheduler,
        optimizer,
        num_warmup_steps=math.ceil(tc.warmup_ratio * steps),
        num_training_steps=steps,
    )
    configure_deepspeed(accelerator.state.deepspeed_plugin, config, accelerator.num_processes)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # -- resume --------------------------------------------------------------------------------
    pos = Position()
    tokens = 0
    state: dict[str, Any] = {}
    if resume_from is not None:
        state = load_checkpoint(
            resume_from,
            accelerator=accelerator,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
        )
        pos = Position(state["step"], state["epoch"], state["batch"])
        tokens = int(state.get("tokens", 0))
        watch.restore(state.get("retention", {}))
        say(f"resumed from {resume_from} (step {pos.step})")

    # -- how many samples one forward holds (train.chunk_rows) ----------------------------------
    def step_loss(module: Any, batch: dict[str, Any]) -> Any:
        return combine(objectives, batch, forward(module, batch))[0]

    model.train()
    chunk_rows, checkpointing, memory_plan = choose_chunk_rows(
        config,
        accelerator,
        state,
        checkpointing,
        lambda gauge: ChunkTrials(
            accelerator=accelerator,
            model=model,
            groups=longest_by_modality(first),
            collate=lambda samples: _as_replay(collator(samples)),
            prepare=lambda batch: prepare(batch, loaded),
            loss=step_loss,
            set_checkpointing=lambda on: set_checkpointing(model, on),
            gauge=gauge,
            reserve_bytes=step_reserve(
                optimizer,
                trainable,
                batch_size=tc.batch_size,
                grad_accum=tc.grad_accum,
                extra_bytes=_cache_room(vision_cache),
            ),
        ),
        hooks.memory_gauge,
    )
    set_checkpointing(model, checkpointing)
    if memory_plan is not None:
        say(
            f"memory plan: chunks of {chunk_rows} of {tc.batch_size} samples, gradient "
            f"checkpointing {'on' if checkpointing else 'off'} ({memory_plan.reason}; "
            f"{len(memory_plan.trials)} trials)"
        )

    # -- the run folder: created only now -------------------------------------------------------
    # created: this run owns the folder, so a failure before its first checkpoint removes it.
    # An overwritten folder counts as created: the old run is deleted right below, and what
    # would be left after an early crash is only this run's half-written start.
    created = not run_dir.exists() or not any(run_dir.iterdir()) or overwrite
    if accelerator.is_main_process:
        if overwrite and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_marker(run_dir, RUN_MARKER)
        save_resolved(config, run_dir)
    accelerator.wait_for_everyone()
    log = TrainLog(run_dir, console=console, accelerator=accelerator, trackers=bool(trackers))
    log.truncate_after(pos.step)
    if trackers:
        accelerator.init_trackers(config.name or run_dir.name, config=_flat(config))
    say(
        f"training {steps} steps: {tuned.spec}, trainable "
        + ", ".join(f"{k} {t:,}/{n:,}" for k, (t, n) in summary_counts.items() if t)
        + f"; objectives {', '.join(o.name for o in objectives)}"
    )

    def checkpoint(step_pos: Position) -> None:
        extra = {
            "tokens": tokens,
            "retention": watch.state(),
            "config_hash": config_hash(config),
            "chunk_rows": chunk_rows,
            "chunk_rows_auto": tc.chunk_rows == "auto",
            "gradient_checkpointing": checkpointing,
        }
        save_checkpoint(
            run_dir,
            accelerator=accelerator,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            position=step_pos,
            extra=extra,
            config=config,
        )
        protect = [watch.last_good_step] if watch.floor is not None else []
        if accelerator.is_main_process:
            rotate(run_dir, tc.keep_checkpoints, protect)

    stopped: dict[str, Any] | None = None
    last_probe: ProbeResult | None = None
    prefetched: Prefetched | None = None
    try:
        if watch.floor is not None and pos.step == 0:
            checkpoint(pos)  # the base state: what is kept if the first probe already fails
        # out of memory on this process's first step: smaller chunks (chunk_rows auto), then
        # gradient checkpointing (auto), and the step again
        first_step = pos.step
        can_split = tc.chunk_rows == "auto" and not _is_deepspeed(accelerator)

        def batches_from(start: Position) -> Iterator[tuple[int, int, list[dict[str, Any]]]]:
            nonlocal prefetched
            if prefetched is not None:
                prefetched.close()
                prefetched = None
            batches = stream.from_position(start, chunk_rows)
            if prefetch:
                batches = prefetched = Prefetched(batches)
            return batches

        stream_iter = batches_from(pos)
        while pos.step < steps:
            step_start = time.perf_counter()
            micro: list[tuple[int, int, list[dict[str, Any]]]] = []
            while True:
                if not micro:
                    micro = [next(stream_iter) for _ in range(tc.grad_accum)]
                try:
                    parts_sum, step_tokens, grad_norm = _optimizer_step(
                        accelerator,
                        model,
                        optimizer,
                        objectives,
                        micro,
                        loaded,
                        trainable,
                        tc.max_grad_norm,
                        combine,
                        forward,
                        prepare,
                    )
                    break
                except Exception as exc:  # only out-of-memory is handled here
                    if not is_oom(exc):
                        raise
                    _forget_step(accelerator, trainable)
                    release_accelerator_memory()
                    accelerator.step = 0
                    # no retry: after the first step; with several processes (the others wait
                    # in a collective call, DDP's reducer is mid-reduction); under DeepSpeed
                    # (its own gradient buffers keep the failed attempt's); or when the update
                    # itself ran out (part of the weights and moments are already changed)
                    if (
                        pos.step != first_step
                        or accelerator.num_processes > 1
                        or _is_deepspeed(accelerator)
                        or isinstance(exc, UpdateOutOfMemory)
                    ):
                        raise oom_error(config, checkpointing, chunk_rows) from None
                    if can_split and chunk_rows > 1:
                        chunk_rows = math.ceil(chunk_rows / 2)
                        say(f"out of memory: chunks of {chunk_rows} samples, retrying the step")
                        stream_iter, micro = batches_from(pos), []
                    elif tc.gradient_checkpointing == "auto" and not checkpointing:
                        say("out of memory: gradient checkpointing on, retrying the step")
                        set_checkpointing(model, True)
                        checkpointing = True
                    else:
                        raise oom_error(config, checkpointing, chunk_rows) from None
            lrs = {f"lr/{g.get('component', 'default')}": g["lr"] for g in optimizer.param_groups}
            scheduler.step()  # the lrs logged are those this step used
            last_epoch, last_index, _ = micro[-1]
            pos = Position(pos.step + 1, last_epoch, last_index + 1)
            tokens += step_tokens
            _, epoch_batches = stream.epoch(last_epoch)
            record: dict[str, Any] = {
                "step": pos.step,
                "epoch": round(last_epoch + (last_index + 1) / len(epoch_batches), 4),
                "lr": next(iter(lrs.values())),
                **lrs,
            }
            record.update({k: sum(v) / len(v) for k, v in parts_sum.items()})
            record.update(
                {
                    "grad_norm": grad_norm,
                    "tokens": tokens,
                    "seconds": round(time.perf_counter() - step_start, 4),
                }
            )
            probe_due = probe is not None and (
                pos.step % config.probe.every_steps == 0 or pos.step == steps
            )
            save_due = pos.step % tc.save_every_steps == 0 and pos.step < steps
            if probe_due or save_due or pos.step == steps:
                record.update(distance.measure())
            eval_due = bool(eval_batches) and (
                pos.step % config.probe.every_steps == 0 or pos.step == steps
            )
            if eval_due:
                record["eval/ce"] = eval_loss(model, eval_batches, loaded)
                say(f"eval step {pos.step}: held-out CE {record['eval/ce']:.4f}")
            breached = False
            if probe_due:
                assert probe is not None
                last_probe = probe.run(accelerator.unwrap_model(model), pos.step)
                record.update(last_probe.log_fields())
                breached = watch.observe(last_probe)
                say(last_probe.line())
            log.write(record)
            if pos.step % 10 == 0 or pos.step == 1 or pos.step == steps:
                say(step_line(record, steps))
            if breached:
                stopped = {
                    "reason": "retention_floor",
                    "step": pos.step,
                    "retention": watch.breach_retention,
                    "floor": watch.floor,
                    "kept_step": watch.last_good_step,
                    "kept_retention": watch.last_good_retention,
                }
                say(
                    f"probe retention {watch.breach_retention:.3f} fell below the floor "
                    f"{watch.floor}: stopping; keeping step {watch.last_good_step} "
                    f"(retention {watch.last_good_retention:.3f})"
                )
                break
            good = last_probe is not None and probe_due and watch.is_good(last_probe)
            if save_due or (good and pos.step < steps):
                checkpoint(pos)
            if hooks.on_step is not None:
                hooks.on_step(pos.step)
    except BaseException:
        if created and accelerator.is_main_process and not list_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping was written
        raise
    finally:
        if prefetched is not None:
            prefetched.close()

    # -- the result ----------------------------------------------------------------------------
    if stopped is not None:
        load_weights_only(
            checkpoint_dir(run_dir, watch.last_good_step), accelerator=accelerator, model=model
        )
    final = save_final(
        run_dir / FINAL, accelerator=accelerator, model=model, loaded=loaded, peft=tuned.peft
    )
    summary = {
        "config_hash": config_hash(config),
        "steps": pos.step,
        "planned_steps": steps,
        "stopped_early": stopped,
        "final": str(final),
        "final_kind": "adapter" if tuned.peft else "model",
        "final_step": stopped["kept_step"] if stopped else pos.step,
        "tokens": tokens,
        "seconds": round(time.perf_counter() - started, 2),
        "tuning": str(tuned.spec),
        "trainable": {k: list(v) for k, v in summary_counts.items()},
        "components": [c for c in COMPONENTS if summary_counts.get(c, (0, 0))[0]],
        "objectives": [o.name for o in objectives],
        "sources": sources,
        "precision": accelerator.mixed_precision,
        "gradient_checkpointing": checkpointing,
        "chunk_rows": chunk_rows,
        "memory_plan": memory_plan.summary() if memory_plan is not None else None,
        "processes": accelerator.num_processes,
        "probe": {
            "base": base_probe.log_fields() if base_probe else None,
            "last": last_probe.log_fields() if last_probe else None,
            "retention_floor": watch.floor,
        },
        "fisher": fisher_info or None,
        "vision_cache": _cache_stats(vision_cache),
        "packing": getattr(prepare, "stats", None),
        "sample_cache": _cache_stats(collator.cache),
        "resumed_from": str(resume_from) if resume_from else None,
    }
    if accelerator.is_main_process:
        atomic_write_json(run_dir / SUMMARY, summary)
    if trackers:
        accelerator.end_training()
    say(
        f"done: {pos.step} steps, {tokens:,} tokens, {summary['seconds']:.0f}s; "
        f"{summary['final_kind']} in {final}"
        + (f" (kept step {stopped['kept_step']}: retention floor)" if stopped else "")
    )
    return TrainOutcome(run_dir, final, summary)


def choose_chunk_rows(
    config: RunConfig,
    accelerator: Any,
    state: dict[str, Any],
    checkpointing: bool,
    trials_for: Callable[[MemoryGauge], Any],
    gauge: MemoryGauge | None,
) -> tuple[int, bool, MemoryPlan | None]:
    """``train.chunk_rows`` resolved: ``(rows, gradient checkpointing, plan)``.

    A number is taken as given (at most the micro-batch). ``auto``: the choice a resumed
    checkpoint recorded; else the memory plan (:mod:`~vlm_retain.train.memory_plan`) where a
    gauge measures it (the CUDA allocator, or a test's); else, on CPU, the whole micro-batch.
    Under DeepSpeed, whose engine counts every backward as a micro-step, a micro-batch is never
    split; under FSDP ``auto`` runs no trials (a rank out of memory mid-forward would leave the
    others in a layer's all-gather) and keeps the whole micro-batch.
    """
    from vlm_retain.train.memory_plan import GIB, CudaGauge, choose_plan

    tc = config.train
    deepspeed = _is_deepspeed(accelerator)
    if tc.chunk_rows != "auto":
        rows = min(tc.chunk_rows, tc.batch_size)
        if rows < tc.batch_size and deepspeed:
            raise InputError(
                f"train.chunk_rows {rows} splits micro-batches, which DeepSpeed cannot count",
                field="train.chunk_rows",
                hint="set it to auto, or lower train.batch_size and raise train.grad_accum",
            )
        return rows, checkpointing, None
    if deepspeed:
        return tc.batch_size, checkpointing, None
    if state.get("chunk_rows_auto") and "chunk_rows" in state:
        recorded = bool(state.get("gradient_checkpointing"))
        keep = checkpointing or (tc.gradient_checkpointing == "auto" and recorded)
        return min(int(state["chunk_rows"]), tc.batch_size), keep, None
    if gauge is None and accelerator.device.type == "cuda":
        gauge = CudaGauge(accelerator.device)
    if gauge is None or _is_fsdp(accelerator):
        return tc.batch_size, checkpointing, None
    trials = trials_for(gauge)
    plan = choose_plan(
        tc.batch_size, trials, tc.gradient_checkpointing, trials.capacity_bytes / GIB
    )
    return plan.rows, plan.checkpointing, plan


def _is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _is_fsdp(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def _is_ddp(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.MULTI_GPU


class UpdateOutOfMemory(RuntimeError):
    """Out of memory inside the optimizer's update (AdamW allocating its state or a
    temporary): unlike a forward or backward, it cannot be retried in smaller chunks."""


def _forget_step(accelerator: Any, trainable: list[Any]) -> None:
    """Drop what a failed step left: every gradient (the optimizer's ``zero_grad`` does
    nothing while accelerate accumulates) and an fp16 scaler's record of having unscaled
    (else the retried step's clipping refuses to unscale again)."""
    for param in trainable:
        param.grad = None
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and hasattr(scaler, "_per_optimizer_states"):
        from collections import defaultdict

        from torch.amp.grad_scaler import _refresh_per_optimizer_state

        scaler._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)


def _as_replay(batch: dict[str, Any]) -> dict[str, Any]:
    """A trial batch with every row flagged replay, so that a KL on replay rows runs its
    teacher pass on all of them: the most memory such a chunk can take."""
    if "replay" in batch:
        batch["replay"] = batch["replay"].new_ones(batch["replay"].shape)
    return batch


def _cache_room(cache: Any) -> int:
    """Device memory the vision cache may still fill after the trials."""
    return max(0, cache.limit_bytes - cache.bytes) if cache is not None else 0


def _optimizer_step(
    accelerator: Any,
    model: Any,
    optimizer: Any,
    objectives: list[Any],
    micro: list[tuple[int, int, dict[str, Any]]],
    loaded: Any,
    trainable: list[Any],
    max_grad_norm: float | None,
    combine: Any,
    forward: Any,
    prepare: Any,
) -> tuple[dict[str, list[float]], int, float | None]:
    """Forward/backward over the micro-batches (each in its chunks), clip, one optimizer
    step; the logged parts, as the unsplit micro-batches would log them."""
    from vlm_retain.train.chunks import ChunkParts, chunk_scales
    from vlm_retain.train.packing import count_tokens

    parts_sum: dict[str, list[float]] = {}
    tokens = 0
    grad_norm = None
    ddp = _is_ddp(accelerator)
    for _, _, chunks in micro:
        # the weights from the collated chunks (on the host); each goes to the device in turn
        scales = chunk_scales(objectives, chunks)
        merged = ChunkParts(objectives)
        with accelerator.accumulate(model):
            for i, (chunk, scale) in enumerate(zip(chunks, scales, strict=True)):
                chunk = prepare(chunk, loaded)
                tokens += count_tokens(chunk)
                # DDP reduces gradients once, on the micro-batch's last chunk (FSDP keeps
                # reducing each: its no_sync would hold whole, unsharded gradients)
                inner = ddp and accelerator.sync_gradients and i < len(chunks) - 1
                with accelerator.no_sync(model) if inner else contextlib.nullcontext():
                    outputs = forward(model, chunk)
                    loss, parts = combine(objectives, chunk, outputs, scale)
                    accelerator.backward(loss)
                merged.add(parts, scale)
                del outputs, loss, chunk
            if accelerator.sync_gradients and max_grad_norm is not None:
                # DeepSpeed clips inside its own step and may report no norm (None)
                norm = accelerator.clip_grad_norm_(trainable, max_grad_norm)
                grad_norm = float(norm) if norm is not None else None
            try:
                optimizer.step()
            except Exception as exc:
                if is_oom(exc):
                    raise UpdateOutOfMemory(str(exc)) from exc
                raise
            optimizer.zero_grad(set_to_none=True)
        for key, value in merged.merged().items():
            parts_sum.setdefault(key, []).append(value)
    return parts_sum, tokens, grad_norm


def _batch_preparer(config: RunConfig, model: Any, loaded: Any) -> Any:
    """``prepare(batch, loaded)``: the collated batch on the model's device, packed when
    ``train.packing`` is on (a :class:`~vlm_retain.train.packing.BatchPacker`, whose ``stats``
    count samples and rows, and the cells computed against those of the padded batches)."""
    from vlm_retain.models.loading import batch_to
    from vlm_retain.train.packing import BatchPacker, rope_index_fn, wants_packing

    if not wants_packing(config.train.packing, model, loaded.family):
        return batch_to
    # transformers finds packed lines for flash attention only in a batch of one row
    flash = str(getattr(loaded, "attn_implementation", "")).startswith("flash")
    return BatchPacker(
        rope_index_fn(model),
        row_tokens=None if flash else config.train.packing_row_tokens,
        pad_token_id=getattr(getattr(loaded, "tokenizer", None), "pad_token_id", None) or 0,
    )


def _cache_stats(cache: Any) -> dict[str, int] | None:
    """Hits, misses and bytes of a cache with those counters (None: no cache)."""
    if cache is None:
        return None
    return {"hits": cache.hits, "misses": cache.misses, "bytes": cache.bytes}


def _answer_only(setting: str, model: Any) -> bool:
    """Whether the forward computes logits only where a loss reads them (``answer_only_logits``)."""
    from vlm_retain.train.positions import supports_kept_logits

    if setting == "off":
        return False
    supported = supports_kept_logits(model)
    if setting == "on" and not supported:
        raise InputError(
            f"train.answer_only_logits: on, but {type(model).__name__} cannot compute logits "
            "at chosen positions (a boolean logits_to_keep)",
            field="train.answer_only_logits",
            hint="use auto or off, or a transformers version whose model has it",
        )
    return supported


def _vision_cache(config: RunConfig, model: Any, family: Any, objectives: list[Any]) -> Any:
    """Install :class:`~vlm_retain.train.vision_cache.VisionCache` when ``train.vision_cache``
    says so (auto: a Qwen family with a frozen vision tower and projector); it is shared with a
    KL reference copy (same frozen tower). Installed after the reference is built, so a deep
    copy never copies the cache. None: the plain path."""
    from vlm_retain.train.vision_cache import VisionCache, wants_cache

    if not wants_cache(config.train.vision_cache, model, family):
        return None
    cache = VisionCache().install(model)
    for objective in objectives:
        reference = getattr(objective, "reference", None)
        if reference is not None and reference.owns_copy:
            cache.install(reference.model)
    return cache


def _eval_batches(config: RunConfig, counter: Any, loaded: Any) -> list[dict[str, Any]]:
    from vlm_retain.train.collate import Collator
    from vlm_retain.train.mixture import load_samples

    ev = config.data.eval
    assert ev is not None
    samples = load_samples(
        ev.manifest,
        counter=counter,
        split=ev.split,
        prompt=config.data.prompt,
        caption_prompt=config.data.caption_prompt,
        what="data.eval manifest",
    )[: ev.limit]
    collator = Collator(
        loaded, sorted({s.source for s in samples}), max_pixels=config.data.max_pixels
    )
    size = config.train.batch_size
    return [collator(samples[i : i + size]) for i in range(0, len(samples), size)]


def _flat(config: RunConfig) -> dict[str, Any]:
    """The resolved config flattened for trackers (``train.lr``: 1e-4)."""
    from vlm_retain.train.config import resolve

    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            out[prefix.rstrip(".")] = (
                value if isinstance(value, int | float | str | bool) else (json.dumps(value))
            )

    walk("", resolve(config))
    return out
