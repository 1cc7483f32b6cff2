"""Segment attention in the Qwen vision towers: the same outputs and gradients as the per-window
loop of transformers' SDPA path, bit for bit on CPU, for every Qwen family."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from vlm_retain.models.vision_attention import (  # noqa: E402
    SEGMENT_ATTENTION,
    restore_attention,
    segment_attention,
    segment_attention_on,
    segmented_vision_configs,
    use_segment_attention,
)

QWEN_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl")


def _tensors(output) -> list:
    """Every tensor in a tower's output (a tensor, a ModelOutput, nested tuples and lists)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, list | tuple):
        return [t for item in output for t in _tensors(item)]
    return []


def _tower_inputs(processor):
    """Two line images of different sizes: segments of several lengths in one call."""
    from PIL import Image

    images = [Image.new("RGB", (224, 56), "white"), Image.new("RGB", (112, 84), "gray")]
    out = processor.image_processor(images=images, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def _run_tower(model, pixel_values, grid):
    visual = model.model.visual
    model.zero_grad(set_to_none=True)
    outputs = _tensors(visual(pixel_values, grid_thw=grid))
    sum(o.float().pow(2).sum() for o in outputs).backward()
    grads = {n: p.grad.clone() for n, p in visual.named_parameters() if p.grad is not None}
    return [o.detach() for o in outputs], grads


@pytest.fixture
def segment_calls(monkeypatch):
    """Counts the calls transformers makes into :func:`segment_attention`."""
    from transformers import AttentionInterface

    from vlm_retain.models import vision_attention

    calls: list[int] = []

    def counted(*args, **kwargs):
        calls.append(1)
        return segment_attention(*args, **kwargs)

    vision_attention.register()
    monkeypatch.setitem(AttentionInterface._global_mapping, SEGMENT_ATTENTION, counted)
    return calls


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_segments_give_the_loops_outputs_and_gradients_exactly(family, segment_calls):
    from vlm_retain.models.tiny import build_tiny_in_memory

    model, processor = build_tiny_in_memory(family, size="xs")
    pixel_values, grid = _tower_inputs(processor)
    assert [c._attn_implementation for c in segmented_vision_configs(model)] == ["sdpa"]
    loop_out, loop_grads = _run_tower(model, pixel_values, grid)
    with segment_attention_on(model) as switched:
        assert switched
        assert segmented_vision_configs(model)[0]._attn_implementation == SEGMENT_ATTENTION
        seg_out, seg_grads = _run_tower(model, pixel_values, grid)
    assert len(segment_calls) == model.config.vision_config.depth  # one call per block
    assert segmented_vision_configs(model)[0]._attn_implementation == "sdpa"  # restored
    assert len(seg_out) == len(loop_out) > 0
    for ours, theirs in zip(seg_out, loop_out, strict=True):
        assert torch.equal(ours, theirs)
    assert seg_grads.keys() == loop_grads.keys() and any("qkv" in n for n in seg_grads)
    for name, grad in seg_grads.items():
        assert torch.equal(grad, loop_grads[name]), name


def test_segments_stay_inside_their_bounds():
    """Changing one segment's keys changes that segment's output only; empty segments are fine."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 10, 4) for _ in range(3))
    bounds = torch.tensor([0, 3, 3, 6, 10])  # lengths 3, 0, 3, 4
    out, _ = segment_attention(None, q, k, v, cu_seq_lens_q=bounds, cu_seq_lens_k=bounds)
    assert out.shape == (1, 10, 2, 4)
    for start, end in ((0, 3), (3, 6), (6, 10)):
        expected = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, start:end], v[:, :, start:end]
        )
        torch.testing.assert_close(out[:, start:end], expected.transpose(1, 2))
    k2 = k.clone()
    k2[:, :, 7] += 5.0
    out2, _ = segment_attention(None, q, k2, v, cu_seq_lens_q=bounds, cu_seq_lens_k=bounds)
    assert torch.equal(out2[:, :6], out[:, :6])
    assert not torch.equal(out2[:, 6:], out[:, 6:])


def test_other_calls_go_to_plain_sdpa():
    """With a mask (or without segments) it is transformers' SDPA, unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal = False
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()
    ours, _ = segment_attention(module, q, k, v, mask)
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask)
    assert torch.equal(ours, theirs)


def test_only_sdpa_towers_switch_and_the_language_model_keeps_its_own():
    from vlm_retain.models.tiny import build_tiny_in_memory

    model, _ = build_tiny_in_memory("qwen2_5_vl", size="xs")
    assert use_segment_attention(model)
    assert model.config.vision_config._attn_implementation == SEGMENT_ATTENTION
    assert model.config.text_config._attn_implementation == "sdpa"
    restore_attention(model)
    model.config.vision_config._attn_implementation = "eager"
    assert not use_segment_attention(model)
    assert model.config.vision_config._attn_implementation == "eager"
    idefics, _ = build_tiny_in_memory("idefics3", size="xs")
    assert segmented_vision_configs(idefics) == [] and not use_segment_attention(idefics)


def test_loaded_models_use_segments_and_say_so(qwen_folder):
    from vlm_retain.models.loading import load_model

    loaded = load_model(qwen_folder, device="cpu")
    assert loaded.model.config.vision_config._attn_implementation == SEGMENT_ATTENTION
    assert loaded.describe()["vision_attention"] == "segments"
    assert loaded.describe()["attn_implementation"] == "sdpa"
    eager = load_model(qwen_folder, device="cpu", attn="eager")
    assert eager.describe()["vision_attention"] == "eager"
