"""The collator's sample cache: batches built from cached samples are the processor's own
batches bit for bit, for every Qwen family, whatever mix of cached and new samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train_collate import write_images
from vlm_retain.train.collate import Collator
from vlm_retain.train.mixture import Sample
from vlm_retain.train.sample_cache import join_rows, split_rows

torch = pytest.importorskip("torch")

SOURCES = ["peter", "world", "text"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    specs = [("short", (112, 56), "RGB"), ("long", (224, 56), "RGB"), ("scene", (112, 112), "RGB")]
    return write_images(tmp_path_factory.mktemp("img"), specs)


def _samples(images) -> list[Sample]:
    return [
        Sample("peter", images["short"], "Transcribe.", "Вѣра", "ocr", 30),
        Sample("peter", images["long"], "Transcribe.", "a longer line of text", "ocr", 40),
        Sample("world", images["scene"], "What colour?", "red", "vqa", 60, replay=True),
        Sample("text", None, "What is two and two?", "four", "vqa", 20, replay=True),
        Sample("peter", images["short"], "Read the line.", "other answer", "ocr", 30),
    ]


def _assert_same(ours: dict, plain: dict) -> None:
    assert ours.keys() == plain.keys()
    for key, value in plain.items():
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def test_cached_batches_equal_the_processors(family, images, tmp_path):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    loaded = load_model(build_tiny(family, tmp_path / family, size="xs"))
    plain = Collator(loaded, SOURCES)
    cached = Collator(loaded, SOURCES, cache_mib=64)
    assert plain.cache is None and cached.cache is not None
    data = _samples(images)
    # all new, then a mix of cached and new rows in another order, then all cached
    for batch in ([0, 2], [3, 1, 0, 4], [4, 3, 2, 1, 0], [1]):
        chosen = [data[i] for i in batch]
        _assert_same(cached(chosen), plain(chosen))
    assert cached.cache.misses == len(data)
    assert cached.cache.hits == 2 + 1 + 5 + 1 - 2  # [3,1,0,4]: 0 was cached; then all
    assert cached.cache.bytes > 0


def test_a_full_cache_keeps_nothing_more_and_batches_stay_right(images, qwen_folder):
    from vlm_retain.models.loading import load_model

    loaded = load_model(qwen_folder)
    plain = Collator(loaded, SOURCES)
    tight = Collator(loaded, SOURCES, cache_mib=1e-6)
    data = _samples(images)
    for _ in range(2):
        _assert_same(tight(data), plain(data))
    assert tight.cache.bytes == 0 and tight.cache.hits == 0


def test_other_families_and_layouts_are_not_cached(images, tmp_path):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    idefics = load_model(build_tiny("idefics3", tmp_path / "i", size="xs"))
    assert Collator(idefics, SOURCES, cache_mib=64).cache is None
    ids = torch.tensor([[5, 6, 0], [7, 8, 9]])
    left_padded = {"input_ids": ids, "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]])}
    assert split_rows(left_padded) is None
    unknown = {**left_padded, "attention_mask": torch.ones(2, 3), "extra": torch.ones(2, 5)}
    assert split_rows(unknown) is None


def test_split_and_join_are_inverse_on_a_text_batch():
    batch = {
        "input_ids": torch.tensor([[5, 6, 1, 1], [7, 8, 9, 10]]),
        "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, 6, -100, -100], [-100, -100, 9, 10]]),
    }
    rows = split_rows(batch)
    assert [r["input_ids"].shape[1] for r in rows] == [2, 4]
    _assert_same(join_rows(rows, pad_token_id=1), batch)
