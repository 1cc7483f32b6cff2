"""Objectives on a tiny Qwen2.5-VL: CE, KL to the base (LoRA and full), L2-SP, EWC, Fisher cache."""

from __future__ import annotations

import pytest

from tests.test_models_tiny import line_image
from vlm_retain.errors import InputError

PROMPTS = ["Transcribe the text.", "What is it?"]
ANSWERS = ["Вѣра і Ѳома", "a line"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from vlm_retain.models.tiny import build_tiny

    return build_tiny("qwen2_5_vl", tmp_path_factory.mktemp("obj") / "m", size="xs")


@pytest.fixture(scope="module")
def batch(folder):
    import torch

    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import load_model

    lm = load_model(folder)
    out = encode(lm, [line_image(), line_image(112, 28)], PROMPTS, ANSWERS, padding_side="right")
    out["replay"] = torch.tensor([True, False])
    out["source_ids"] = torch.tensor([0, 1])
    return out


def _tuned(folder, spec: str):
    from vlm_retain.models.loading import load_model
    from vlm_retain.train.presets import LoraOptions, TuningSpec, apply_tuning

    lm = load_model(folder)
    return apply_tuning(lm.model, lm.family, TuningSpec.parse(spec, lora=LoraOptions(r=4)))


def _step(model, batch, lr=1e-2):
    import torch

    from vlm_retain.train.objectives import CrossEntropy, model_inputs

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = CrossEntropy()(batch, model(**model_inputs(batch)))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _forward(model, batch):
    from vlm_retain.train.objectives import model_inputs

    return model(**model_inputs(batch))


@pytest.mark.parametrize("spec", ["lora", "dora", "llm-attn+projector", "full"])
def test_kl_zero_before_update_positive_after(folder, batch, spec):
    from vlm_retain.train.kl import KLToBase
    from vlm_retain.train.reference import ReferenceModel

    tuned = _tuned(folder, spec)
    ref = ReferenceModel(tuned.model)
    assert ref.owns_copy == (not tuned.peft)
    assert (ref.memory_bytes() > 0) == (not tuned.peft)
    kl = KLToBase(ref, on="all")
    assert abs(float(kl(batch, _forward(tuned.model, batch)))) < 1e-6
    _step(tuned.model, batch)
    assert float(kl(batch, _forward(tuned.model, batch))) > 1e-6
    # the reference did not move with the trained weights: it still matches a fresh base
    import torch

    from vlm_retain.models.loading import load_model
    from vlm_retain.train.objectives import model_inputs

    with torch.no_grad():
        base = load_model(folder).model(**model_inputs(batch)).logits
    assert torch.allclose(ref.logits(model_inputs(batch)), base, atol=1e-5)


def test_lora_reference_is_the_adapter_disabled_base(folder, batch):
    import torch

    from vlm_retain.models.loading import load_model
    from vlm_retain.train.objectives import model_inputs
    from vlm_retain.train.reference import ReferenceModel

    tuned = _tuned(folder, "lora+projector")
    ref = ReferenceModel(tuned.model)
    _step(tuned.model, batch)
    base = load_model(folder).model
    inputs = model_inputs(batch)
    with torch.no_grad():
        expected = base(**inputs).logits
        trained = tuned.model(**inputs).logits
    flags = [m.training for m in tuned.model.modules()]
    got = ref.logits(inputs)
    assert [m.training for m in tuned.model.modules()] == flags  # train/eval flags restored
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(trained, expected, atol=1e-3)
    # the positions path (logits_to_keep) gives the same numbers, in mask order
    mask = inputs["attention_mask"].bool()
    assert torch.allclose(ref.logits(inputs, positions=mask), expected[mask], atol=1e-5)
    # the pixels reach the reference: other pixels, other logits
    blank = dict(inputs, pixel_values=torch.zeros_like(inputs["pixel_values"]))
    assert not torch.allclose(ref.logits(blank), got, atol=1e-4)


def test_kl_topk_and_chunking_approximate_the_exact_kl():
    import torch

    from vlm_retain.train.kl import kl_sum, reduce_reference

    g = torch.Generator().manual_seed(0)
    model = (torch.randn(37, 50, generator=g) * 2).requires_grad_(True)
    ref = torch.randn(37, 50, generator=g) * 2
    lp, lq = ref.log_softmax(-1), model.log_softmax(-1)
    exact = (lp.exp() * (lp - lq)).sum()
    for direction, want in (("forward", exact), ("reverse", (lq.exp() * (lq - lp)).sum())):
        full = kl_sum(model, ref, direction=direction)
        chunked = kl_sum(model, ref, direction=direction, chunk_size=8)
        all_k = kl_sum(model, ref, direction=direction, top_k=50, chunk_size=8)
        some_k = kl_sum(model, ref, direction=direction, top_k=20, chunk_size=8)
        for value in (full, chunked, all_k):
            assert torch.allclose(value, want, rtol=1e-5)
        assert 0.8 * want <= some_k <= want * (1 + 1e-5)  # a (k+1)-way KL is a lower bound
    reduced = reduce_reference(ref, 1.0, 20, chunk_size=8)
    assert torch.allclose(
        kl_sum(model, reduced, top_k=20, chunk_size=8), kl_sum(model, ref, top_k=20), rtol=1e-5
    )
    # checkpointed chunks give the same gradient as the plain computation
    (g1,) = torch.autograd.grad(kl_sum(model, ref, chunk_size=8), model)
    (g2,) = torch.autograd.grad(kl_sum(model, ref), model)
    assert torch.allclose(g1, g2, atol=1e-6)
    # temperature scales by T^2 on softened distributions
    t = kl_sum(model, ref, temperature=2.0)
    lp2, lq2 = (ref / 2).log_softmax(-1), (model / 2).log_softmax(-1)
    assert torch.allclose(t, 4 * (lp2.exp() * (lp2 - lq2)).sum(), rtol=1e-5)


def test_kl_on_replay_rows_only(folder, batch):
    import torch

    from vlm_retain.train.kl import KLToBase
    from vlm_retain.train.reference import ReferenceModel

    tuned = _tuned(folder, "lora")
    _step(tuned.model, batch)
    ref = ReferenceModel(tuned.model)
    out = _forward(tuned.model, batch)
    replay = KLToBase(ref, on="replay")
    both = KLToBase(ref, on="all")
    replay_value, all_value = float(replay(batch, out)), float(both(batch, out))
    assert replay.extra["positions"] < both.extra["positions"]
    assert replay_value > 0 and replay_value != pytest.approx(all_value)
    none = dict(batch, replay=torch.tensor([False, False]))
    assert float(replay(none, out)) == 0.0 and replay.extra["positions"] == 0
    with pytest.raises(InputError, match="replay"):
        replay({k: v for k, v in batch.items() if k != "replay"}, out)
    top = KLToBase(ref, on="all", top_k=5, chunk_size=3)
    assert 0 < float(top(batch, out)) <= all_value * (1 + 1e-5)


@pytest.mark.parametrize("spec", ["lora", "dora", "llm-mlp-gate-up", "full"])
def test_l2sp_zero_at_start_positive_after_step(folder, batch, spec):
    from vlm_retain.train.anchors import L2SP

    tuned = _tuned(folder, spec)
    l2sp = L2SP(tuned.model)
    assert float(l2sp()) == pytest.approx(0.0, abs=1e-10)
    _step(tuned.model, batch)
    assert float(l2sp()) > 0


def test_l2sp_lora_shortcut_equals_materialized_delta(folder, batch):
    import torch

    from vlm_retain.train.anchors import L2SP
    from vlm_retain.train.deltas import lora_delta

    tuned = _tuned(folder, "lora")
    l2sp = L2SP(tuned.model)
    _step(tuned.model, batch)
    for slot in l2sp.anchor.slots:  # a non-zero start, as if resumed
        slot.zero_start = False
        slot.b0 = slot.b0 + 0.01
    materialized = sum(
        (lora_delta(s) - lora_delta(s, start=True)).pow(2).sum() for s in l2sp.anchor.slots
    )
    assert torch.allclose(l2sp(), materialized, rtol=1e-4)


def _one_sample_batches(folder, answers):
    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import load_model

    lm = load_model(folder)
    return [encode(lm, [line_image()], [PROMPTS[0]], [a]) for a in answers]


def test_fisher_nonnegative_deterministic_cached_and_invalidated(folder, tmp_path):
    import torch

    from vlm_retain.train.fisher import estimate_fisher, fisher_for

    tuned = _tuned(folder, "lora")
    data = _one_sample_batches(folder, ["один", "two", "tre"])
    a = estimate_fisher(tuned.model, data, n=3, mode="sampled", seed=1)
    b = estimate_fisher(tuned.model, data, n=3, mode="sampled", seed=1)
    assert set(a) == {n for n in a if n.startswith("model.language_model.layers.")}
    assert all((v >= 0).all() for v in a.values())
    assert any(v.sum() > 0 for v in a.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(p.requires_grad for n, p in tuned.model.named_parameters() if "lora" not in n)

    consumed = []

    def counted(items):
        for item in items:
            consumed.append(1)
            yield item

    first = fisher_for(tuned.model, counted(data), cache_dir=tmp_path, n=3, data_hash="d1")
    assert not first.loaded and first.path.is_file() and len(consumed) == 3
    mtime = first.path.stat().st_mtime_ns
    second = fisher_for(tuned.model, counted(data), cache_dir=tmp_path, n=3, data_hash="d1")
    assert second.loaded and second.path == first.path and len(consumed) == 3
    assert first.path.stat().st_mtime_ns == mtime
    assert all(torch.equal(first.fisher[k], second.fisher[k]) for k in first.fisher)
    # data hashed from the batches themselves: changed data -> a new estimate
    auto = fisher_for(tuned.model, data, cache_dir=tmp_path, n=3)
    again = fisher_for(tuned.model, data, cache_dir=tmp_path, n=3)
    changed = _one_sample_batches(folder, ["один", "two", "quattro"])
    other = fisher_for(tuned.model, changed, cache_dir=tmp_path, n=3)
    assert not auto.loaded and again.loaded and not other.loaded
    assert other.path != auto.path
    # so does another n, mode or model
    assert not fisher_for(tuned.model, data, cache_dir=tmp_path, n=2, data_hash="d1").loaded
    with pytest.raises(InputError, match="one sample"):
        estimate_fisher(tuned.model, [_batch_of_two(folder)], n=1)


def _batch_of_two(folder):
    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import load_model

    return encode(load_model(folder), [line_image(), line_image()], PROMPTS, ANSWERS)


@pytest.mark.parametrize("spec", ["lora", "llm-attn"])
def test_ewc_zero_at_start_positive_after_step(folder, batch, tmp_path, spec):
    from vlm_retain.train.anchors import EWC
    from vlm_retain.train.fisher import fisher_for

    tuned = _tuned(folder, spec)
    data = _one_sample_batches(folder, ["один", "two"])
    fisher = fisher_for(tuned.model, data, cache_dir=tmp_path, n=2).fisher
    ewc = EWC(tuned.model, fisher, weight=10.0)
    assert float(ewc()) == pytest.approx(0.0, abs=1e-12)
    _step(tuned.model, batch)
    assert float(ewc()) > 0
    with pytest.raises(InputError, match="Fisher has no entry"):
        EWC(tuned.model, {})


def test_combine_logs_parts_and_grads_reach_only_trainable(folder, batch, tmp_path):
    from vlm_retain.train.fisher import fisher_for
    from vlm_retain.train.objectives import (
        EWC,
        L2SP,
        CrossEntropy,
        KLToBase,
        Objective,
        combine,
    )
    from vlm_retain.train.reference import ReferenceModel

    tuned = _tuned(folder, "lora+projector")
    data = _one_sample_batches(folder, ["один"])
    fisher = fisher_for(tuned.model, data, cache_dir=tmp_path, n=1).fisher
    objectives = [
        CrossEntropy(source_names=["peter", "replay"]),
        KLToBase(ReferenceModel(tuned.model), weight=0.5, on="all"),
        L2SP(tuned.model, weight=0.1),
        EWC(tuned.model, fisher, weight=0.1),
    ]
    assert all(isinstance(o, Objective) for o in objectives)
    _step(tuned.model, batch)
    out = _forward(tuned.model, batch)
    total, parts = combine(objectives, batch, out)
    assert set(parts) >= {"ce", "ce/peter", "ce/replay", "kl", "kl/positions", "l2sp", "ewc"}
    expected = parts["ce"] + 0.5 * parts["kl"] + 0.1 * parts["l2sp"] + 0.1 * parts["ewc"]
    assert parts["total"] == pytest.approx(expected, rel=1e-5)
    total.backward()
    for name, param in tuned.model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in tuned.model.named_parameters()
        if ".modules_to_save." in n
    )
    with pytest.raises(InputError, match="two objectives"):
        combine([CrossEntropy(), CrossEntropy()], batch, out)


def test_reference_positions_without_kept_logits_support() -> None:
    """A model whose forward has no ``logits_to_keep``: the reference takes the positions from
    its full logits (same rows, same order)."""
    import torch

    from vlm_retain.train.reference import ReferenceModel

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 6)

        def forward(self, input_ids):
            return type("Out", (), {"logits": self.embed(input_ids)})()

    torch.manual_seed(0)
    model = Toy()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    mask = torch.tensor([[False, True, True], [True, False, False]])
    ref = ReferenceModel(model)
    assert ref.owns_copy
    got = ref.logits({"input_ids": ids}, positions=mask)
    assert torch.equal(got, model(ids).logits[mask].detach())
    assert torch.equal(ref.logits({"input_ids": ids}), model(ids).logits.detach())
