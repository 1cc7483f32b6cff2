"""Prefetching batches in a thread, and the sample cache in a run: the same batches, the same
losses, errors where they belong."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.conftest import read_json, read_jsonl
from tests.test_train_trainer import base_config, make_data
from vlm_retain.train.prefetch import Prefetched, wants_prefetch


def test_prefetched_items_come_in_order_and_errors_at_their_place():
    items = Prefetched(iter(range(20)), depth=3)
    assert list(items) == list(range(20))
    with pytest.raises(StopIteration):  # and again, without waiting for a thread that ended
        next(items)

    def broken():
        yield 1
        yield 2
        raise ValueError("bad image at item 3")

    items = Prefetched(broken())
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(ValueError, match="item 3"):
        next(items)


def test_close_stops_an_endless_source():
    def endless():
        n = 0
        while True:
            yield n
            n += 1

    items = Prefetched(endless(), depth=2)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def test_auto_prefetches_with_cuda_only():
    import torch

    assert wants_prefetch("auto", torch.device("cuda"))
    assert not wants_prefetch("auto", torch.device("cpu"))
    assert wants_prefetch("on", torch.device("cpu"))
    assert not wants_prefetch("off", torch.device("cuda"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("prefetch-data"))


def test_runs_with_prefetch_and_the_sample_cache_log_the_same_losses(data, tmp_path):
    """Six steps over a small mixture (later steps reuse cached samples): bit-equal losses."""
    from tests.test_train_e2e import QUIET
    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import train

    logs, summaries = {}, {}
    for name, prefetch, cache in (("plain", "off", 0), ("fast", "on", 64)):
        out = tmp_path / name
        raw = base_config(data, out, objectives={"kl_to_base": {"weight": 0.5}})
        raw["train"].update(
            {"max_steps": 6, "prefetch": prefetch, "sample_cache_mib": cache, "batch_size": 4}
        )
        train(config_from_dict(raw), hooks=QUIET)
        logs[name] = read_jsonl(out / "train_log.jsonl")
        summaries[name] = read_json(out / "train_summary.json")
    assert summaries["plain"]["sample_cache"] is None
    assert summaries["fast"]["sample_cache"]["hits"] > 0  # later epochs were served from it
    for plain, fast in zip(logs["plain"], logs["fast"], strict=True):
        for key, value in plain.items():
            if key.startswith(("ce", "kl", "total", "tokens")):
                assert fast[key] == value, key


def test_the_prefetching_collator_gets_its_own_processor(qwen_folder):
    from vlm_retain.models.loading import load_model
    from vlm_retain.train.prefetch import own_processor

    loaded = load_model(qwen_folder)
    copy = own_processor(loaded)
    assert copy.processor is not loaded.processor
    assert copy.tokenizer is copy.processor.tokenizer is not loaded.tokenizer
    assert copy.model is loaded.model and copy.family is loaded.family
    text = "Transcribe the line."
    assert copy.tokenizer(text)["input_ids"] == loaded.tokenizer(text)["input_ids"]
