"""Micro-batches in chunks (``train.chunk_rows``) and the memory plan that chooses them.

A chunked micro-batch must give the unsplit batch's losses and gradients (float rounding
only): checked on a tiny Qwen2.5-VL with every objective kind, in whole runs, and with the
plan's trials measured on a simulated device (bytes autograd saves for backward, with an
allocator that fails past a budget) since this machine has no GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_json, read_jsonl
from tests.test_models_encoding import ANSWERS, PROMPTS
from tests.test_models_tiny import line_image
from tests.test_train_packing import _move_off_the_base, assert_same_step
from tests.test_train_packing import _tuned as tuned_model
from tests.test_train_trainer import base_config, make_data
from vlm_retain.errors import InputError
from vlm_retain.train.memory_plan import SavedTensorGauge

REPLAY = [True, False, False, True, False]
SOURCES = [0, 1, 1, 0, 1]
WIDTHS = [84, 112, 56, 140, 28]


def _encoded(lm, rows: list[int]) -> dict[str, Any]:
    """Rows ``rows`` of a five-line batch, collated on their own (own padding), as the
    trainer collates each chunk."""
    import torch

    from vlm_retain.models.encoding import encode

    images = [line_image(WIDTHS[i], 28) for i in rows]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in rows]
    answers = [ANSWERS[i % len(ANSWERS)] + " x" * i for i in rows]
    out = encode(lm, images, prompts, answers, padding_side="right")
    out["replay"] = torch.tensor([REPLAY[i] for i in rows])
    out["source_ids"] = torch.tensor([SOURCES[i] for i in rows])
    return out


def _objectives(model, *, ewc: bool):
    import torch

    from vlm_retain.train.anchors import EWC, L2SP
    from vlm_retain.train.deltas import WeightAnchor
    from vlm_retain.train.kl import KLToBase
    from vlm_retain.train.objectives import CrossEntropy
    from vlm_retain.train.reference import ReferenceModel

    objectives: list[Any] = [
        CrossEntropy(source_names=["htr", "world"]),
        KLToBase(ReferenceModel(model), weight=0.5, on="replay"),
        L2SP(model, weight=0.3),
    ]
    if ewc:
        anchor = WeightAnchor(model)
        fisher = {name: torch.rand_like(delta.detach()) for name, delta in anchor.deltas()}
        objectives.append(EWC(model, fisher, weight=0.2))
    return objectives


def _chunked(model, objectives, chunks):
    from vlm_retain.train.chunks import ChunkParts, chunk_scales
    from vlm_retain.train.objectives import combine, model_inputs

    model.zero_grad(set_to_none=True)
    scales = chunk_scales(objectives, chunks)
    merged = ChunkParts(objectives)
    for chunk, scale in zip(chunks, scales, strict=True):
        total, parts = combine(objectives, chunk, model(**model_inputs(chunk)), scale)
        total.backward()
        merged.add(parts, scale)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return merged.merged(), grads


@pytest.mark.parametrize(("spec", "ewc"), [("full", False), ("lora", True)])
def test_chunks_give_the_whole_batch_loss_and_gradients(qwen_folder, spec, ewc):
    import torch

    from vlm_retain.train.chunks import split_rows

    torch.manual_seed(0)
    lm, model = tuned_model(qwen_folder, spec)
    objectives = _objectives(model, ewc=ewc)
    _move_off_the_base(model)
    whole_parts, whole_grads = _chunked(model, objectives, [_encoded(lm, list(range(5)))])
    assert whole_parts["kl"] > 0 and whole_parts["l2sp"] > 0
    assert {"ce/htr", "ce/world", "kl/positions"} <= set(whole_parts)

    # 2 + 2 + 1 rows: the last chunk has no replay row (no KL there), L2-SP/EWC on chunk 1
    chunks = [_encoded(lm, rows) for rows in split_rows(list(range(5)), 2)]
    assert not chunks[-1]["replay"].any()
    assert_same_step(_chunked(model, objectives, chunks), (whole_parts, whole_grads))


def test_scales_and_parts_by_hand() -> None:
    import torch

    from vlm_retain.train.chunks import ChunkParts, chunk_scales, split_rows

    class Mean:
        name, weight = "ce", 1.0

        def __init__(self) -> None:
            self.extra: dict[str, float] = {}
            self.extra_counts: dict[str, float] = {}

        def normaliser(self, chunk):
            return int(chunk["n"])

    class PerStep:
        name, weight = "l2sp", 2.0

    class Off:
        name, weight = "ewc", 0.0

    chunks = [{"n": torch.tensor(3)}, {"n": torch.tensor(1)}, {"n": torch.tensor(0)}]
    scales = chunk_scales([Mean(), PerStep(), Off()], chunks)
    assert scales == [
        {"ce": 0.75, "l2sp": 1.0},
        {"ce": 0.25, "l2sp": 0.0},
        {"ce": 0.0, "l2sp": 0.0},
    ]
    assert chunk_scales([Mean(), PerStep()], chunks[:1]) == [None]  # the batch itself
    # nothing to average anywhere: computed once, as the unsplit batch would
    empty = [{"n": torch.tensor(0)}] * 2
    assert chunk_scales([Mean()], empty) == [{"ce": 1.0}, {"ce": 0.0}]

    mean = Mean()
    merged = ChunkParts([mean, PerStep()])
    mean.extra, mean.extra_counts = {"a": 2.0}, {"a": 3.0}
    merged.add({"ce": 2.0, "ce/a": 2.0, "l2sp": 5.0, "total": 11.5}, scales[0])
    mean.extra, mean.extra_counts = {"a": 6.0}, {"a": 1.0}
    merged.add({"ce": 6.0, "ce/a": 6.0, "total": 1.5}, scales[1])
    assert merged.merged() == {"ce": 3.0, "ce/a": 3.0, "l2sp": 5.0, "total": 13.0}

    assert split_rows([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert split_rows([1, 2], None) == split_rows([1, 2], 9) == [[1, 2]]


# --- the plan ----------------------------------------------------------------------------------


def _fake_trials(fits_plain: int, fits_ckpt: int, speed: dict[bool, float] | None = None):
    """``try_rows`` of a device where ``fits_plain`` rows fit without checkpointing and
    ``fits_ckpt`` with it; ``speed`` gives tokens/s of the timed passes."""
    from vlm_retain.train.memory_plan import Trial

    calls: list[tuple[int, bool, bool]] = []

    def try_rows(rows: int, ckpt: bool, timed: bool) -> Trial:
        calls.append((rows, ckpt, timed))
        fits = rows <= (fits_ckpt if ckpt else fits_plain)
        seconds = 1.0 if timed else None
        tokens = int(speed[ckpt]) if timed and speed else None
        return Trial(rows, ckpt, fits, 1.0 if fits else None, 1.0, seconds, tokens)

    return try_rows, calls


def test_plan_prefers_the_whole_batch_then_smaller_chunks_then_checkpointing() -> None:
    from vlm_retain.train.memory_plan import candidate_rows, choose_plan

    assert candidate_rows(64) == [64, 32, 16, 8, 4, 2, 1]
    assert candidate_rows(6) == [6, 3, 2, 1]
    assert candidate_rows(6, above=2) == [6, 3]

    try_rows, calls = _fake_trials(64, 64)
    plan = choose_plan(64, try_rows, "auto", 80.0)
    assert (plan.rows, plan.checkpointing, calls) == (64, False, [(64, False, False)])

    try_rows, calls = _fake_trials(20, 40, speed={False: 900.0, True: 500.0})
    plan = choose_plan(64, try_rows, "auto", 80.0)
    assert (plan.rows, plan.checkpointing) == (16, False)
    assert calls[-2:] == [(16, False, True), (32, True, True)]  # both timed
    assert "faster without" in plan.reason

    try_rows, _ = _fake_trials(2, 64, speed={False: 100.0, True: 700.0})
    plan = choose_plan(64, try_rows, "auto", 80.0)
    assert (plan.rows, plan.checkpointing) == (64, True)
    assert plan.summary()["trials"][-1]["tokens"] == 700

    try_rows, calls = _fake_trials(0, 8)
    plan = choose_plan(64, try_rows, "auto", 80.0)
    assert (plan.rows, plan.checkpointing) == (8, True)
    assert not any(timed for _, _, timed in calls)  # nothing to compare

    try_rows, calls = _fake_trials(16, 16)
    plan = choose_plan(64, try_rows, "auto", 80.0)  # checkpointing holds no more rows
    assert (plan.rows, plan.checkpointing) == (16, False)
    assert calls[-1] == (32, True, False)

    try_rows, calls = _fake_trials(20, 64)
    assert choose_plan(64, try_rows, "off", 80.0).rows == 16
    assert all(not ckpt for _, ckpt, _ in calls)
    try_rows, calls = _fake_trials(64, 20)
    plan = choose_plan(64, try_rows, "on", 80.0)
    assert (plan.rows, plan.checkpointing) == (16, True)
    assert all(ckpt for _, ckpt, _ in calls)

    for setting in ("auto", "off"):
        try_rows, _ = _fake_trials(0, 0)
        with pytest.raises(InputError, match="one sample per forward") as err:
            choose_plan(8, try_rows, setting, 80.0)
        assert err.value.field == "train.chunk_rows"


class SimulatedDevice(SavedTensorGauge):
    """A device for CPU tests: a trial's "memory" is the bytes autograd saves for backward (the
    activations, which grow with the rows), and the allocator fails past ``budget`` bytes by
    raising CUDA's out-of-memory error, as a GPU does mid-forward."""

    def __init__(self, budget: float = float("inf"), capacity: float = float("inf")) -> None:
        super().__init__(capacity)
        self.budget = budget

    def _pack(self, tensor):
        import torch

        tensor = super()._pack(tensor)
        if self.saved > self.budget:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 MiB")
        return tensor


def test_trials_measure_the_run_without_touching_its_rng(qwen_folder) -> None:
    import torch
    from accelerate import Accelerator

    from vlm_retain.train.collate import Collator
    from vlm_retain.train.memory_plan import ChunkTrials, choose_plan, longest_by_modality
    from vlm_retain.train.mixture import Sample
    from vlm_retain.train.objectives import combine, model_inputs

    lm, model = tuned_model(qwen_folder, "lora")
    model.train()
    objectives = _objectives(model, ewc=False)
    images = qwen_folder.parent / "trial-images"
    images.mkdir(exist_ok=True)
    samples = []
    for i, width in enumerate(WIDTHS):
        path = images / f"{i}.png"
        line_image(width, 28).save(path)
        samples.append(Sample("htr", path, PROMPTS[0], "ab" * (i + 1), tokens=width + i))
    samples.append(Sample("world", None, PROMPTS[0], "text only", tokens=10, replay=True))
    collator = Collator(lm, ["htr", "world"])
    device = SimulatedDevice()

    def trials(gauge: SimulatedDevice, reserve: int = 0) -> ChunkTrials:
        return ChunkTrials(
            accelerator=Accelerator(cpu=True),
            model=model,
            groups=longest_by_modality(samples),
            collate=collator,
            prepare=lambda batch: batch,
            loss=lambda m, b: combine(objectives, b, m(**model_inputs(b)))[0],
            set_checkpointing=lambda on: None,
            gauge=gauge,
            reserve_bytes=lambda rows: reserve,
        )

    state = torch.random.get_rng_state()
    probe = trials(device)
    assert [len(group) for group in probe.groups] == [1, 5]  # text-only, image rows
    assert [s.tokens for s in probe.groups[1]] == sorted(
        (s.tokens for s in samples[:5]), key=lambda t: -t
    )
    whole, half = probe(4, False, True), probe(2, False, False)
    assert torch.equal(torch.random.get_rng_state(), state)  # dropout draws do not leak
    assert all(p.grad is None for p in model.parameters())
    assert whole.fits and half.fits and whole.need_gib > half.need_gib > 0
    assert whole.tokens and whole.seconds and whole.tokens_per_s > 0

    # a device on which 4 rows do not fit but 2 do: by the budget (the allocator fails) and,
    # separately, by capacity (the peak plus the optimizer's reserve above 90% of it)
    # passes: text and image rows twice (timed), then once each at 2 rows
    assert len(device.peaks) == 6
    budget = (device.peaks[3] + device.peaks[5]) / 2
    plan = choose_plan(4, trials(SimulatedDevice(budget=budget)), "off", 1.0)
    assert plan.rows == 2 and [t.fits for t in plan.trials] == [False, True]
    reserve = 1000
    capacity = (budget + reserve) / 0.9
    plan = choose_plan(4, trials(SimulatedDevice(capacity=capacity), reserve), "off", 1.0)
    assert plan.rows == 2 and plan.trials[0].peak_gib is not None
    with pytest.raises(InputError, match="one sample per forward"):
        choose_plan(4, trials(SimulatedDevice(budget=1)), "off", 1.0)


# --- in a run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("chunk-data"))


def _run(data, out: Path, hooks: Any = None, **train: Any) -> list[dict[str, Any]]:
    from tests.test_train_e2e import QUIET
    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import train as run_training

    raw = base_config(
        data,
        out,
        tuning={"mode": "lora", "lora": {"dropout": 0.0}},
        objectives={"kl_to_base": {"weight": 0.5}, "l2sp": {"weight": 0.1}},
    )
    raw["data"]["max_pixels"] = 28 * 28 * 8
    raw["train"].update({"max_steps": 3, "save_every_steps": 2, "grad_accum": 2, **train})
    run_training(config_from_dict(raw), hooks=hooks or QUIET)
    return read_jsonl(out / "train_log.jsonl")


def _same_losses(logs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    assert len(logs) == len(reference)
    for got, want in zip(logs, reference, strict=True):
        assert got["tokens"] == want["tokens"]
        # step 1 sees the same weights; later ones drift by rounding only (Adam's first
        # updates are nearly sign(grad), so 1e-7 differences in tiny gradients show)
        tol = 1e-6 if want["step"] == 1 else 2e-3
        for key, value in want.items():
            if key.startswith(("ce", "kl", "l2sp", "total", "grad_norm")):
                assert got[key] == pytest.approx(value, rel=tol, abs=tol), key


@pytest.fixture(scope="module")
def whole_run(data, tmp_path_factory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("whole") / "run"
    logs = _run(data, out)
    summary = read_json(out / "train_summary.json")
    assert (summary["chunk_rows"], summary["memory_plan"]) == (4, None)  # CPU: the whole batch
    assert any(r.get("kl", 0) > 0 for r in logs) and all(r["l2sp"] >= 0 for r in logs)
    return logs


def test_a_run_in_chunks_logs_the_same_losses(data, whole_run, tmp_path) -> None:
    from vlm_retain.train.checkpoint import read_state

    out = tmp_path / "chunks"
    _same_losses(_run(data, out, chunk_rows=3), whole_run)
    assert read_json(out / "train_summary.json")["chunk_rows"] == 3
    state = read_state(out / "checkpoints" / "step-000002")
    assert (state["chunk_rows"], state["chunk_rows_auto"]) == (3, False)
    assert state["gradient_checkpointing"] is False


def test_chunks_of_packed_rows_log_the_same_losses(data, whole_run, tmp_path) -> None:
    _same_losses(_run(data, tmp_path / "packed", chunk_rows=3, packing="on"), whole_run)


def test_checkpointing_on_and_off_leaves_nothing_behind(qwen_folder) -> None:
    """The plan's trials switch checkpointing; switched off, no hook may keep making the
    embeddings' outputs require grad (a frozen tower would then be backpropagated)."""
    from vlm_retain.models.checkpointing import set_checkpointing
    from vlm_retain.models.unwrap import unwrap

    _, model = tuned_model(qwen_folder, "lora")
    target = unwrap(model)

    def hooks() -> int:
        return len(getattr(target, "_require_grads_hooks", None) or [])

    set_checkpointing(model, False)  # never on: nothing to undo
    set_checkpointing(model, True)
    on = hooks()
    set_checkpointing(model, True)
    assert hooks() == on and target.is_activation_checkpointing
    set_checkpointing(model, False)
    assert hooks() == 0 and not target.is_activation_checkpointing


def test_the_memory_plan_chooses_chunks_in_a_run(data, whole_run, tmp_path) -> None:
    import dataclasses

    from tests.test_train_e2e import QUIET

    # what the whole micro-batch's trial needs on the simulated device, then half of it
    calibrate = SimulatedDevice()
    _run(data, tmp_path / "calibrate", dataclasses.replace(QUIET, memory_gauge=calibrate))
    assert len(calibrate.peaks) == 1  # one trial: the whole batch fits (image rows only)
    device = SimulatedDevice(budget=0.8 * max(calibrate.peaks))
    out = tmp_path / "planned"
    logs = _run(data, out, dataclasses.replace(QUIET, memory_gauge=device))
    summary = read_json(out / "train_summary.json")
    plan = summary["memory_plan"]
    trials = plan["trials"]
    assert [(t["rows"], t["checkpointing"], t["fits"]) for t in trials[:3]] == [
        (4, False, False),
        (2, False, True),
        (4, True, True),  # checkpointing holds the whole batch: both are timed
    ]
    plain, held = trials[3:]
    assert plain["rows"] == 2 and held["rows"] == 4 and plain["seconds"] and held["seconds"]
    faster = max((plain, held), key=lambda t: t["tokens"] / t["seconds"])
    chosen = (summary["chunk_rows"], summary["gradient_checkpointing"])
    assert chosen == (plan["chunk_rows"], plan["gradient_checkpointing"])
    assert chosen == (faster["rows"], faster["checkpointing"])
    _same_losses(logs, whole_run)


def test_out_of_memory_on_the_first_step_halves_the_chunks(data, tmp_path, monkeypatch) -> None:
    import torch

    from vlm_retain.train import trainer

    original = trainer._optimizer_step
    seen: list[int] = []

    def on_a_small_device(*args):
        *head, forward, prepare = args

        def forward_or_fail(model, chunk):
            rows = len(chunk["input_ids"])
            seen.append(rows)
            # the device holds two samples per forward; the first pass gets through (its
            # gradients are accumulated before the failure, and must not count twice)
            if rows > 2 and len(seen) > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return forward(model, chunk)

        return original(*head, forward_or_fail, prepare)

    # three micro-batches a step: the failure comes in the second, while accelerate still
    # accumulates (its optimizer's zero_grad then does nothing)
    reference = _run(data, tmp_path / "reference", grad_accum=3)
    monkeypatch.setattr(trainer, "_optimizer_step", on_a_small_device)
    out = tmp_path / "fallback"
    logs = _run(data, out, grad_accum=3)
    assert seen[:3] == [4, 4, 2]
    assert read_json(out / "train_summary.json")["chunk_rows"] == 2
    _same_losses(logs, reference)

    # a fixed chunk size is the user's: out of memory is an error saying what to lower
    with pytest.raises(InputError, match="out of memory") as err:
        _run(data, tmp_path / "fixed", chunk_rows=4, gradient_checkpointing="off")
    assert "train.chunk_rows (now 4" in str(err.value)
    assert not (tmp_path / "fixed").exists()


def test_chunk_rows_resolution(tmp_path: Path) -> None:
    import types

    from accelerate.utils import DistributedType

    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import choose_chunk_rows

    def config(**train: Any):
        paths = {"model": tmp_path, "htr": tmp_path, "world": tmp_path}
        raw = base_config(paths, tmp_path / "o")
        raw["train"].update(train)
        return config_from_dict(raw)

    cpu = types.SimpleNamespace(
        distributed_type=DistributedType.NO, device=types.SimpleNamespace(type="cpu")
    )
    ds = types.SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, device=cpu.device)

    def never(gauge):
        raise AssertionError("no trial expected")

    assert config().train.chunk_rows == "auto"
    assert choose_chunk_rows(config(), cpu, {}, False, never, None) == (4, False, None)
    assert choose_chunk_rows(config(chunk_rows=9), cpu, {}, False, never, None) == (4, False, None)
    assert choose_chunk_rows(config(chunk_rows=3), cpu, {}, False, never, None) == (3, False, None)
    recorded = {"chunk_rows": 2, "chunk_rows_auto": True, "gradient_checkpointing": True}
    assert choose_chunk_rows(config(), cpu, recorded, False, never, None) == (2, True, None)
    off = config(gradient_checkpointing="off")
    assert choose_chunk_rows(off, cpu, recorded, False, never, None) == (2, False, None)
    # a number the user had set is not a plan to keep; DeepSpeed never splits
    fixed = {**recorded, "chunk_rows_auto": False}
    assert choose_chunk_rows(config(), cpu, fixed, False, never, None) == (4, False, None)
    assert choose_chunk_rows(config(), ds, recorded, False, never, None) == (4, False, None)
    assert choose_chunk_rows(config(), ds, {}, False, never, SimulatedDevice()) == (4, False, None)
    with pytest.raises(InputError, match="DeepSpeed") as err:
        choose_chunk_rows(config(chunk_rows=2), ds, {}, False, never, None)
    assert err.value.field == "train.chunk_rows"
    with pytest.raises(InputError, match="chunk_rows"):
        config(chunk_rows=0)


def test_a_failed_step_leaves_no_gradients_and_no_unscaled_record() -> None:
    """fp16: clipping unscales the gradients; a step that then runs out of memory (AdamW
    allocating its state) must not make the retried step's unscale refuse to run."""
    import types

    import torch

    from vlm_retain.train.trainer import _forget_step

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    accelerator = types.SimpleNamespace(scaler=scaler)
    scaler.scale((weight * 2).sum()).backward()
    scaler.unscale_(optimizer)
    with pytest.raises(RuntimeError, match="unscale_"):
        scaler.unscale_(optimizer)  # what the retry would meet
    _forget_step(accelerator, [weight])
    assert weight.grad is None
    scaler.scale((weight * 2).sum()).backward()
    scaler.unscale_(optimizer)  # the retried step's clipping
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(weight.detach(), torch.full((3,), 0.8))


def test_out_of_memory_in_the_update_is_not_retried(data, tmp_path, monkeypatch) -> None:
    """AdamW running out of memory mid-update has already moved part of the weights: the run
    stops with the advice instead of retrying a step that would then differ."""
    import torch

    updates: list[int] = []

    def update_out_of_memory(self, *args, **kwargs):
        updates.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    monkeypatch.setattr(torch.optim.AdamW, "step", update_out_of_memory)
    with pytest.raises(InputError, match="out of memory during training"):
        _run(data, tmp_path / "update")
    assert len(updates) == 1  # neither smaller chunks nor checkpointing were tried
    assert not (tmp_path / "update").exists()


def test_a_capped_gauge_stops_counting_when_closed() -> None:
    import torch

    from vlm_retain.train.memory_plan import GIB, CappedGauge

    inner = SavedTensorGauge()
    capped = CappedGauge(inner, 2 * GIB)
    assert capped.capacity_bytes() == 2 * GIB
    weight = torch.ones(4, requires_grad=True)
    capped.reset()
    (weight * weight).sum()
    counted = inner.saved
    assert counted > 0
    capped.close()  # as a trial that failed does
    (weight * weight).sum()
    assert inner.saved == counted
