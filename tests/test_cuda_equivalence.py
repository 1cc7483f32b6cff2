"""On a GPU in bf16: each speed setting gives the plain path's loss and gradients within bf16
tolerance (the CPU tests check the same settings exactly or to fp32 rounding).

Skipped without CUDA, so CI (CPU) skips it; it runs on the device machine:

    python -m pytest tests/test_cuda_equivalence.py -s

Each test prints one ``equivalence:`` line with the relative errors it measured, for the
record in docs/performance.md. "Within bf16 tolerance" here: the loss within 1% and every
gradient tensor within 2% in relative L2 norm (bf16 keeps 8 bits of mantissa, 0.4%; sums over
thousands of terms in another order drift by a few of those).
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from vlm_retain.bench import gpu  # noqa: E402

#: ``VLM_RETAIN_EQUIVALENCE_DEVICE=cpu`` runs these on CPU in bf16 (to check the tests
#: themselves without a GPU); by default they need CUDA.
DEVICE = os.environ.get("VLM_RETAIN_EQUIVALENCE_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"
)

LOSS_REL = 1e-2
GRAD_REL = 2e-2


def _rel(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _compare(name: str, plain: tuple, ours: tuple) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = plain, ours
    assert grads_a.keys() == grads_b.keys() and grads_a
    loss_rel = abs(loss_b - loss_a) / max(abs(loss_a), 1e-12)
    grad_rel = {n: _rel(grads_b[n], g) for n, g in grads_a.items()}
    worst = max(grad_rel, key=grad_rel.get)
    print(
        f"equivalence: {name} on {DEVICE} bf16: loss {loss_a:.5f} vs {loss_b:.5f} "
        f"(rel {loss_rel:.2e}), worst gradient rel {grad_rel[worst]:.2e} ({worst})"
    )
    assert loss_rel <= LOSS_REL, name
    assert grad_rel[worst] <= GRAD_REL, (name, worst)


def _model(tuning: str = "lora"):
    """The bench's tiny Qwen2.5-VL shape in bf16 with LoRA on every LLM linear (adapters set
    off zero so the adapter-disabled teacher differs from the student)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlm_retain.models.registry import get_family
    from vlm_retain.train.presets import LoraOptions, TuningSpec, apply_tuning

    torch.manual_seed(0)
    config = gpu.load_config("tiny")
    base = Qwen2_5_VLForConditionalGeneration._from_config(
        config, dtype=torch.bfloat16, attn_implementation="sdpa"
    ).to(DEVICE)
    base.config.use_cache = False
    spec = TuningSpec.parse(tuning, lora=LoraOptions(r=8, alpha=16, dropout=0.0))
    model = apply_tuning(base, get_family("qwen2_5_vl"), spec).model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.train()
    return model, config


def _batch(config, size: int = 8, replay: bool = False):
    batch = gpu.synthetic_batch(
        config, size, answer=True, device=DEVICE, dtype=torch.bfloat16, seed=1
    )
    if replay:
        batch["replay"] = torch.arange(size, device=DEVICE) % 4 == 0
    return batch


def _step(model, batch, *, answer_logits=True, teacher=False, on="all"):
    model.zero_grad(set_to_none=True)
    objectives = gpu.our_objectives(model, teacher, on=on) if answer_logits else None
    loss = gpu.training_loss(
        model, batch, answer_logits=answer_logits, teacher=teacher, objectives=objectives
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads


def test_answer_only_logits_and_our_objectives():
    model, config = _model()
    batch = _batch(config)
    plain = _step(model, batch, answer_logits=False, teacher=True)
    _compare("answer-only logits + KL", plain, _step(model, batch, teacher=True))


def test_segment_attention_in_the_vision_tower():
    from vlm_retain.models.vision_attention import segment_attention_on

    model, config = _model("full")  # the tower trains too: its gradients are compared
    batch = _batch(config)
    plain = _step(model, batch)
    with segment_attention_on(model) as switched:
        assert switched
        ours = _step(model, batch)
    _compare("vision segment attention", plain, ours)


def test_kl_on_replay_rows_runs_only_those_rows(monkeypatch):
    from vlm_retain.train import batch_rows

    model, config = _model()
    batch = _batch(config, replay=True)
    ours = _step(model, batch, teacher=True, on="replay")
    monkeypatch.setattr(batch_rows, "select_rows", lambda inputs, rows: None)  # whole batch
    plain = _step(model, batch, teacher=True, on="replay")
    _compare("KL reference on replay rows only", plain, ours)


def test_vision_feature_cache():
    from vlm_retain.train.vision_cache import VisionCache

    model, config = _model()
    batch = _batch(config)
    plain = _step(model, batch, teacher=True)
    cache = VisionCache().install(model)
    try:
        _step(model, batch, teacher=True)  # fills the cache
        ours = _step(model, batch, teacher=True)
        assert cache.hits > 0
    finally:
        cache.remove()
    _compare("vision-feature cache (warm)", plain, ours)


def test_compiled_decoder_layers():
    from vlm_retain.models.registry import get_family
    from vlm_retain.train.compile import compile_layers, uncompile_layers

    model, config = _model()
    batch = _batch(config, replay=True)
    plain = _step(model, batch, teacher=True, on="replay")
    family = get_family("qwen2_5_vl")
    compile_layers(model, family)
    try:
        _step(model, batch, teacher=True, on="replay")  # compiles
        ours = _step(model, batch, teacher=True, on="replay")
    finally:
        uncompile_layers(model, family)
    _compare("compiled decoder layers", plain, ours)


def test_micro_batch_in_chunks():
    """``train.chunk_rows``: the micro-batch in chunks of 3 (3 + 3 + 2 rows, one without a
    replay row) against one pass."""
    model, config = _model()
    batch = _batch(config, replay=True)
    plain = _step(model, batch, teacher=True, on="replay")
    objectives = gpu.our_objectives(model, True, on="replay")
    model.zero_grad(set_to_none=True)
    chunks, scales = gpu._chunked(batch, 3, objectives)
    assert len(chunks) == 3 and not bool(chunks[-1]["replay"].any())
    total = 0.0
    for chunk, scale in zip(chunks, scales, strict=True):
        loss = gpu.training_loss(
            model, chunk, answer_logits=True, teacher=True, objectives=objectives, scale=scale
        )
        loss.backward()
        total += float(loss)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    _compare("micro-batch in chunks of 3", plain, (total, grads))


def test_memory_plan_trials_on_the_device():
    """The CUDA gauge measures a trial: a larger chunk has a larger peak, and a cap below the
    whole batch's need makes the plan split it (with checkpointing off)."""
    from vlm_retain.train.memory_plan import (
        GIB,
        CappedGauge,
        ChunkTrials,
        CudaGauge,
        choose_plan,
    )

    if DEVICE != "cuda":
        pytest.skip("the CUDA allocator's gauge")
    model, config = _model()
    batch = _batch(config, size=16)
    objectives = gpu.our_objectives(model, False)

    def trials(gauge):
        return ChunkTrials(
            model=model,
            groups=[list(range(16))],
            collate=lambda rows: gpu._rows_of(batch, rows),
            prepare=lambda chunk: chunk,
            loss=lambda m, chunk: gpu.training_loss(
                m, chunk, answer_logits=True, teacher=False, objectives=objectives
            ),
            set_checkpointing=lambda on: None,
            gauge=gauge,
            reserve_bytes=lambda rows: 0,
        )

    measure = trials(CudaGauge(torch.device(DEVICE)))
    assert measure.capacity_bytes > 0
    whole, quarter = measure(16, False, False), measure(4, False, False)
    assert whole.fits and quarter.fits and whole.peak_gib > quarter.peak_gib
    cap = (whole.need_gib + quarter.need_gib) / 2 / 0.9 * GIB
    plan = choose_plan(16, trials(CappedGauge(CudaGauge(torch.device(DEVICE)), cap)), "off", 1.0)
    print(
        f"equivalence: memory plan on {DEVICE}: whole batch {whole.peak_gib:.3f} GiB, "
        f"a quarter {quarter.peak_gib:.3f} GiB; capped at {cap / GIB:.3f} GiB: chunks of "
        f"{plan.rows}"
    )
    assert 4 <= plan.rows < 16
