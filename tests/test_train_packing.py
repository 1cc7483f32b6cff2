"""Padding-free packing on a tiny Qwen2.5-VL: the packed layout, and the padded batch's losses
and gradients (up to float rounding; exactly with one line per row), in a real run too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_json, read_jsonl
from tests.test_train_positions import _batch
from tests.test_train_trainer import base_config, make_data
from tests.test_train_vision_cache import _tuned as tuned_model
from vlm_retain.errors import InputError


def _tuned(qwen_folder, spec: str):
    lm, model = tuned_model(qwen_folder, spec)
    model.eval()  # no dropout: both passes must compute the same function
    return lm, model


def _move_off_the_base(model) -> None:
    """So that the KL term and its gradient are not zero (after the reference is made)."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))


def _parts_and_grads(model, objectives, batch, *, kept: bool):
    from vlm_retain.train.objectives import combine, model_inputs
    from vlm_retain.train.positions import forward_kept

    model.zero_grad(set_to_none=True)
    inputs = model_inputs(batch)
    outputs = forward_kept(model, inputs, objectives, batch) if kept else model(**inputs)
    total, parts = combine(objectives, batch, outputs)
    total.backward()
    return parts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(got: tuple, want: tuple) -> None:
    """Logged parts and gradients equal up to float rounding (``(parts, grads)`` pairs)."""
    import torch

    (parts, grads), (want_parts, want_grads) = got, want
    assert parts.keys() == want_parts.keys()
    for key, value in want_parts.items():
        assert parts[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert grads.keys() == want_grads.keys() and grads
    for name, grad in want_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_layout(qwen_folder):
    import torch

    from vlm_retain.train.packing import count_tokens, pack_batch, rope_index_fn

    lm, model = _tuned(qwen_folder, "lora")
    batch = _batch(lm)
    lengths = batch["attention_mask"].sum(1).tolist()
    rope, _ = rope_index_fn(model)(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    packed = pack_batch(batch, rope_index_fn(model), pad_token_id=7)
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert "attention_mask" not in packed and packed["use_cache"] is False
    assert torch.equal(packed["pixel_values"], batch["pixel_values"])
    assert count_tokens(packed) == count_tokens(batch) == sum(lengths)
    at = 0
    for i, n in enumerate(lengths):
        cells = slice(at, at + n)
        assert torch.equal(packed["input_ids"][0, cells], batch["input_ids"][i, :n])
        assert (packed["token_rows"][0, cells] == i).all()
        assert torch.equal(packed["position_ids"][0, 0, cells], torch.arange(n))
        assert torch.equal(packed["position_ids"][1:, 0, cells], rope[:, i, :n])
        assert packed["labels"][0, at] == -100  # no line learns its neighbour's first token
        assert torch.equal(packed["labels"][0, at + 1 : at + n], batch["labels"][i, 1:n])
        at += n

    # rows of at most 2 lines' worth: next-fit in order, tails padded, padding is row -1
    pair = lengths[0] + lengths[1]
    two = pack_batch(batch, rope_index_fn(model), row_tokens=pair, pad_token_id=7)
    assert two["input_ids"].shape == (2, pair)
    assert two["token_rows"][1, : lengths[2]].eq(2).all()
    assert two["token_rows"][1, lengths[2] :].eq(-1).all()
    assert two["input_ids"][1, lengths[2] :].eq(7).all()
    assert two["labels"][1, lengths[2] :].eq(-100).all()
    tail = two["input_ids"].shape[1] - lengths[2]
    assert torch.equal(two["position_ids"][0, 1, lengths[2] :], torch.arange(tail))


def test_one_row_and_refusals(qwen_folder):
    import torch

    from vlm_retain.train.packing import pack_batch, rope_index_fn

    lm, model = _tuned(qwen_folder, "lora")
    batch = _batch(lm)
    one = pack_batch(batch, rope_index_fn(model), row_tokens=None)
    assert one["input_ids"].shape == (1, int(batch["attention_mask"].sum()))
    video = dict(batch, mm_token_type_ids=torch.where(batch["mm_token_type_ids"] == 1, 2, 0))
    with pytest.raises(InputError, match="videos"):
        pack_batch(video, rope_index_fn(model))


def test_flash_attention_packs_each_micro_batch_into_one_row(qwen_folder, tmp_path):
    """transformers finds packed lines for flash attention only in a one-row batch."""
    import dataclasses

    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import _batch_preparer

    lm, model = _tuned(qwen_folder, "lora")
    raw = base_config({"model": tmp_path, "htr": tmp_path, "world": tmp_path}, tmp_path / "o")
    raw["train"].update({"packing": "on", "packing_row_tokens": 1})
    config = config_from_dict(raw)
    batch = _batch(lm)
    sdpa = _batch_preparer(config, model, lm)
    assert sdpa(batch, lm)["input_ids"].shape[0] == 3  # one line per row at 1 token a row
    flash = dataclasses.replace(lm, attn_implementation="flash_attention_2")
    prepare = _batch_preparer(config, model, flash)
    assert prepare(batch, flash)["input_ids"].shape[0] == 1
    assert prepare.stats["samples"] == 3 and prepare.stats["rows"] == 1


def test_left_padding_is_refused(qwen_folder):
    from tests.test_models_tiny import line_image
    from vlm_retain.models.encoding import encode
    from vlm_retain.train.packing import pack_batch, rope_index_fn

    lm, model = _tuned(qwen_folder, "lora")
    batch = encode(
        lm, [line_image(), line_image(56, 28)], ["a", "b"], ["x y z", "x"], padding_side="left"
    )
    with pytest.raises(InputError, match="right-padded"):
        pack_batch(batch, rope_index_fn(model))


@pytest.mark.parametrize("spec", ["full", "lora"])
@pytest.mark.parametrize("kept", [False, True])
def test_packed_losses_and_gradients_match_the_padded_batch(qwen_folder, spec, kept):
    import torch

    from vlm_retain.train.kl import KLToBase
    from vlm_retain.train.objectives import CrossEntropy
    from vlm_retain.train.packing import pack_batch, rope_index_fn
    from vlm_retain.train.reference import ReferenceModel

    lm, model = _tuned(qwen_folder, spec)
    batch = _batch(lm)
    objectives = [
        CrossEntropy(source_names=["a", "b"]),
        KLToBase(ReferenceModel(model), weight=0.5, on="replay", positions="all"),
    ]
    _move_off_the_base(model)
    padded_parts, padded_grads = _parts_and_grads(model, objectives, batch, kept=kept)
    assert padded_parts["kl"] > 0 and {"ce/a", "ce/b"} <= set(padded_parts)

    one_row = pack_batch(batch, rope_index_fn(model))
    packed = _parts_and_grads(model, objectives, one_row, kept=kept)
    assert_same_step(packed, (padded_parts, padded_grads))

    # one line per row: the same shapes as the padded batch, and bit-for-bit the same results
    per_line = pack_batch(batch, rope_index_fn(model), row_tokens=1)
    parts, grads = _parts_and_grads(model, objectives, per_line, kept=kept)
    assert parts == padded_parts
    for name, grad in padded_grads.items():
        assert torch.equal(grads[name], grad), name


def test_lines_do_not_see_each_other(qwen_folder):
    """Changing one line changes no other line's logits (the block-diagonal mask is real)."""
    import torch

    from vlm_retain.train.objectives import model_inputs
    from vlm_retain.train.packing import pack_batch, rope_index_fn

    lm, model = _tuned(qwen_folder, "lora")
    _move_off_the_base(model)
    batch = _batch(lm)
    changed = {k: v.clone() for k, v in batch.items()}
    first = int(batch["attention_mask"][0].sum())
    answer = (batch["labels"][0] != -100).nonzero()[:, 0]
    changed["input_ids"][0, answer] = 11  # another answer for line 0
    with torch.no_grad():
        logits = [
            model(**model_inputs(pack_batch(b, rope_index_fn(model)))).logits[0]
            for b in (batch, changed)
        ]
    assert not torch.equal(logits[0][:first], logits[1][:first])
    torch.testing.assert_close(logits[0][first:], logits[1][first:], rtol=0, atol=0)


def test_setting(qwen_folder, tmp_path: Path):
    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.packing import wants_packing

    lm, model = _tuned(qwen_folder, "lora")
    assert wants_packing("on", model, lm.family) and not wants_packing("off", model, lm.family)
    idefics = type("Family", (), {"name": "idefics3", "title": "Idefics3"})()
    with pytest.raises(InputError, match="packing"):
        wants_packing("on", model, idefics)
    raw = base_config({"model": tmp_path, "htr": tmp_path, "world": tmp_path}, tmp_path / "o")
    assert config_from_dict(raw).train.packing == "off"
    raw["train"]["packing"] = True  # YAML's bare on
    assert config_from_dict(raw).train.packing == "on"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("pack-data"))


def test_a_run_with_packing_logs_the_same_losses(data, tmp_path):
    from tests.test_train_e2e import QUIET
    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import train

    logs = {}
    for setting in ("off", "on"):
        out = tmp_path / setting
        raw = base_config(data, out, objectives={"kl_to_base": {"weight": 0.5}})
        raw["data"]["max_pixels"] = 28 * 28 * 8
        raw["train"].update({"max_steps": 4, "packing": setting, "save_every_steps": 100})
        train(config_from_dict(raw), hooks=QUIET)
        logs[setting] = read_jsonl(out / "train_log.jsonl")
        packing = read_json(out / "train_summary.json")["packing"]
        if setting == "off":
            assert packing is None
        else:  # it really packed: fewer rows than lines, fewer cells than padded
            assert packing["rows"] < packing["samples"]
            assert packing["packed_cells"] < packing["padded_cells"]
    assert len(logs["off"]) == len(logs["on"]) == 4
    assert any(r.get("kl", 0) > 0 for r in logs["off"])  # a replay batch came through
    for off, on in zip(logs["off"], logs["on"], strict=True):
        assert on["tokens"] == off["tokens"]
        # the first step sees the same weights; later ones drift by rounding only (Adam's
        # first updates are nearly sign(grad), so 1e-7 differences in tiny gradients show)
        tol = 1e-6 if off["step"] == 1 else 2e-3
        for key, value in off.items():
            if key.startswith(("ce", "kl", "total")):
                assert on[key] == pytest.approx(value, rel=tol, abs=tol), key
