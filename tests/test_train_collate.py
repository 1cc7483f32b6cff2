"""Collation: answer-only labels, mixed batches, the pixel budget, and modality-grouped batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from vlm_retain.errors import InputError
from vlm_retain.train.collate import Collator, load_image, plan_batches
from vlm_retain.train.mixture import Sample

BUDGET = 28 * 28 * 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    return load_model(build_tiny("qwen2_5_vl", tmp_path_factory.mktemp("m") / "qwen", size="xs"))


def write_images(folder: Path, specs: list[tuple[str, tuple[int, int], str]]) -> dict[str, Path]:
    """PNG files ``folder/NAME.png`` of the given sizes and modes, with a word drawn on each."""
    out = {}
    for name, size, mode in specs:
        image = Image.new(mode, size, "white")
        ImageDraw.Draw(image).text((4, 4), "Hello", fill="black")
        out[name] = folder / f"{name}.png"
        image.save(out[name])
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    specs = [("line", (224, 56), "RGB"), ("wide", (1400, 70), "L")]
    return write_images(tmp_path_factory.mktemp("img"), specs)


def samples(images) -> list[Sample]:
    return [
        Sample("peter", images["line"], "Transcribe.", "Вѣра і Ѳома", "ocr", 40),
        Sample("world", images["wide"], "What colour?", "red", "vqa", 60, replay=True),
        Sample("text", None, "What is two and two?", "four", "vqa", 20, replay=True),
    ]


def test_labels_cover_only_the_answer_in_a_mixed_batch(tiny, images):
    batch_samples = samples(images)
    collate = Collator(tiny, ["peter", "world", "text"], max_pixels=BUDGET)
    batch = collate(batch_samples)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    end = tiny.family.chat.end_of_turn
    for i, sample in enumerate(batch_samples):
        supervised = (labels[i] != -100).nonzero().flatten()
        assert tiny.tokenizer.decode(ids[i][supervised]) == sample.answer + end
        assert supervised[-1] - supervised[0] + 1 == len(supervised)  # one contiguous span
        assert (labels[i][supervised] == ids[i][supervised]).all()
    assert (mask[:, 0] == 1).all() and (mask[:, -1] == 0).any()  # right padding
    assert batch["source_ids"].tolist() == [0, 1, 2]
    assert batch["replay"].tolist() == [False, True, True]
    assert batch["image_grid_thw"].shape[0] == 2  # two images, the text-only row has none


def test_pixel_budget_is_respected(tiny, images):
    batch = Collator(tiny, ["peter", "world", "text"], max_pixels=BUDGET)(samples(images)[:2])
    for t, h, w in batch["image_grid_thw"].tolist():
        assert t == 1 and (h * 14) * (w * 14) <= BUDGET
    wide = load_image(images["wide"], max_pixels=BUDGET, unit=28)
    assert wide.mode == "RGB"
    assert wide.width * wide.height <= BUDGET
    assert wide.width % 28 == 0 and wide.height % 28 == 0
    assert wide.width / wide.height > 5  # still a line
    assert load_image(images["line"], max_pixels=None, unit=28).size == (224, 56)


def test_the_batch_feeds_the_model_through_the_objectives_contract(tiny, images):
    import torch

    from vlm_retain.train.objectives import model_inputs

    batch = Collator(tiny, ["peter", "world", "text"], max_pixels=BUDGET)(samples(images))
    inputs = model_inputs(batch)
    assert not {"labels", "source_ids", "replay"} & set(inputs)
    with torch.no_grad():
        logits = tiny.model(**inputs).logits
    assert logits.shape[:2] == batch["input_ids"].shape


def test_text_only_batch_has_no_pixels(tiny, images):
    batch = Collator(tiny, ["text"])(samples(images)[2:])
    assert "pixel_values" not in batch
    assert batch["labels"].ne(-100).any()


def test_collate_errors(tiny, images, tmp_path):
    collate = Collator(tiny, ["peter"])
    with pytest.raises(InputError, match="unknown source 'world'"):
        collate(samples(images)[:2])
    with pytest.raises(InputError, match="image missing"):
        collate([Sample("peter", tmp_path / "gone.png", "p", "a")])
    with pytest.raises(InputError, match="empty batch"):
        collate([])


# --- modality-grouped batches ----------------------------------------------------------------


def mixed(n_image: int, n_text: int) -> list[Sample]:
    image = [Sample("i", Path("x.png"), "p", "a", tokens=10 + k) for k in range(n_image)]
    text = [Sample("t", None, "p", "a", tokens=5 + k) for k in range(n_text)]
    return image + text


def modality(batch: list[int], items: list[Sample]) -> set[bool]:
    return {items[i].image is not None for i in batch}


def test_single_process_batches_are_single_modality_and_cover_everything_once():
    items = mixed(23, 10)
    batches = plan_batches(items, 4, seed=1)
    assert all(len(modality(b, items)) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(items)))
    assert batches == plan_batches(items, 4, seed=1)
    assert batches != plan_batches(items, 4, seed=1, epoch=1)


@pytest.mark.parametrize("replicas", [2, 3])
def test_every_step_has_one_modality_on_every_rank(replicas):
    items = mixed(23, 10)
    batches = plan_batches(items, 4, num_replicas=replicas, seed=0)
    assert len(batches) % replicas == 0
    assert all(len(b) == 4 for b in batches)
    per_rank = [batches[r::replicas] for r in range(replicas)]  # accelerate's round-robin shard
    for step in zip(*per_rank, strict=True):
        assert len(set().union(*(modality(b, items) for b in step))) == 1
    assert set(i for b in batches for i in b) == set(range(len(items)))


def test_length_grouping_puts_similar_lengths_together():
    items = [Sample("i", Path("x"), "p", "a", tokens=t) for t in [5, 500, 6, 501, 7, 502, 8, 503]]
    batches = plan_batches(items, 4, seed=0)
    spreads = sorted(
        max(items[i].tokens for i in b) - min(items[i].tokens for i in b) for b in batches
    )
    assert spreads == [3, 3]
