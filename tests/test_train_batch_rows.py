"""Cutting rows out of a model-input batch: the kept rows' logits do not change, the KL
reference runs only the rows it compares, and layouts we cannot cut safely are left whole."""

from __future__ import annotations

import pytest

from tests.test_models_tiny import line_image
from tests.test_train_positions import _batch


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("rows")
    return {f: load_model(build_tiny(f, root / f, size="xs")) for f in ("qwen2_5_vl", "idefics3")}


def _mixed_batch(lm):
    """Two image rows around a text-only one, right padded."""
    import torch

    from vlm_retain.models.encoding import encode

    images = [line_image(), None, line_image(56, 28)]
    batch = encode(
        lm, images, ["Read.", "Say hi.", "Read."], ["a b", "hi", "c"], padding_side="right"
    )
    batch["replay"] = torch.tensor([False, True, True])
    return batch


def test_kept_rows_have_the_same_logits(models):
    import torch

    from vlm_retain.train.batch_rows import select_rows
    from vlm_retain.train.objectives import model_inputs

    lm = models["qwen2_5_vl"]
    for batch in (_batch(lm), _mixed_batch(lm)):
        inputs = model_inputs(batch)
        rows = torch.tensor([False, True, True])
        subset = select_rows(inputs, rows)
        assert subset is not None
        assert subset["input_ids"].shape[0] == 2
        grid = inputs["image_grid_thw"]
        with torch.no_grad():
            full = lm.model(**inputs).logits
            part = lm.model(**subset).logits
        torch.testing.assert_close(part, full[rows], rtol=1e-4, atol=1e-5)  # float rounding
    # the mixed batch: row 0 had the first image, so only the second one is kept
    assert torch.equal(subset["image_grid_thw"], grid[1:])
    assert subset["pixel_values"].shape[0] == int(grid[1].prod())
    # only the text row: no image inputs at all (an empty pixel tensor would crash the tower)
    text_row = torch.tensor([False, True, False])
    subset = select_rows(inputs, text_row)
    assert subset["pixel_values"] is None and subset["image_grid_thw"] is None
    with torch.no_grad():
        part = lm.model(**subset).logits
    real = subset["attention_mask"].bool()  # pad positions differ: nothing reads them
    torch.testing.assert_close(part[real], full[text_row][real], rtol=1e-4, atol=1e-5)


def test_layouts_left_whole(models):
    import torch

    from vlm_retain.train.batch_rows import select_rows
    from vlm_retain.train.objectives import model_inputs
    from vlm_retain.train.packing import pack_batch, rope_index_fn

    rows = torch.tensor([True, False, True])
    idefics = model_inputs(_batch(models["idefics3"]))
    assert select_rows(idefics, rows) is None  # per-tile pixel layout: not ours to cut
    lm = models["qwen2_5_vl"]
    packed = pack_batch(_batch(lm), rope_index_fn(lm.model))
    assert select_rows(model_inputs(packed), torch.tensor([True])) is None


def test_reference_runs_only_the_compared_rows(models, monkeypatch):
    import torch

    import vlm_retain.train.batch_rows as batch_rows
    from vlm_retain.train.kl import KLToBase
    from vlm_retain.train.objectives import model_inputs
    from vlm_retain.train.reference import ReferenceModel

    lm = models["qwen2_5_vl"]
    reference = ReferenceModel(lm.model)
    seen: list[int] = []
    original = reference.model.forward

    def spy(*args, **kwargs):
        seen.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(reference.model, "forward", spy)
    batch = _mixed_batch(lm)
    kl = KLToBase(reference, on="replay", positions="all")
    torch.manual_seed(0)
    with torch.no_grad():
        for param in lm.model.parameters():  # the trained model moves off the base copy
            param.add_(0.05 * torch.randn_like(param))
        outputs = lm.model(**model_inputs(batch))
        cut = kl(batch, outputs)
        assert seen == [2] and reference.rows_skipped == 1
        monkeypatch.setattr(batch_rows, "select_rows", lambda inputs, rows: None)
        whole = kl(batch, outputs)
    assert seen == [2, 3]
    assert float(cut) > 0
    assert float(cut) == pytest.approx(float(whole), rel=1e-5)
