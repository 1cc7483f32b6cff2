"""The token-budgeted mixture: the replay share in tokens, per-epoch draws, sources, self-replay."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm_retain.data.manifest import Record, write_manifest
from vlm_retain.errors import InputError
from vlm_retain.train.config import config_from_dict
from vlm_retain.train.mixture import (
    SELF_REPLAY_SOURCE,
    Mixture,
    Sample,
    TokenCounter,
    budget_size,
    build_mixture,
    load_samples,
    model_fingerprint,
    replay_source_samples,
    self_replay_samples,
    smart_resize,
)


def fake_samples(source: str, n: int, lo: int, hi: int, *, replay: bool, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [
        Sample(source, None, "p", "a", tokens=int(t), replay=replay, id=f"{source}-{i}")
        for i, t in enumerate(rng.integers(lo, hi, n))
    ]


def simple_counter(prompt: str, answer: str, size) -> int:
    """Characters as tokens and one token per 28x28 block: enough to test the bookkeeping."""
    image = 0 if size is None else math.ceil(size[0] / 28) * math.ceil(size[1] / 28)
    return len(prompt) + len(answer) + image


def write_png(path: Path, size=(56, 28)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "white").save(path)


def world_like(folder: Path, *, n: int = 6, question: bool = True) -> Path:
    records = []
    for i in range(n):
        write_png(folder / "images" / f"s{i}.png", (112, 112))
        meta = {"question": f"How many shapes {i}?", "width": 112, "height": 112}
        if not question:
            meta.pop("question")
        records.append(
            Record.create(
                id=f"vqa-{i}",
                image=f"images/s{i}.png",
                text="two",
                lang="en",
                source="synth-world",
                split="train",
                task="vqa",
                meta=meta,
            )
        )
        records.append(
            Record.create(
                id=f"cap-{i}",
                image=f"images/s{i}.png",
                text="A red circle.",
                lang="en",
                source="synth-world",
                split="train",
                task="caption",
                meta={"references": ["A red circle."], "width": 112, "height": 112},
            )
        )
    write_manifest(folder / "manifest.jsonl", records)
    return folder


def lines_like(folder: Path, *, n: int = 8, split: str = "train") -> Path:
    records = []
    for i in range(n):
        write_png(folder / "images" / f"l{i}.png", (28 * (2 + i), 56))  # no size in meta
        records.append(
            Record.create(
                id=f"l{i}",
                image=f"images/l{i}.png",
                text="abc " * (i + 1),
                lang="en",
                source="synth-htr",
                split=split,
            )
        )
    write_manifest(folder / "manifest.jsonl", records)
    return folder


# --- the share -------------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.05, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("seed", [0, 1])
def test_replay_share_in_tokens_is_hit_within_two_percent(share, seed):
    target = fake_samples("htr", 300, 20, 120, replay=False, seed=seed)
    short = fake_samples("vqa", 400, 20, 60, replay=True, seed=seed + 10)
    long = fake_samples("caption", 200, 300, 900, replay=True, seed=seed + 20)
    mixture = Mixture(target, short + long, share, seed)
    for epoch in range(3):
        samples = mixture.epoch(epoch)
        assert abs(Mixture.share(samples) - share) <= 0.02
        stats = Mixture.stats(samples)
        assert stats["htr"] == sum(s.tokens for s in target)  # every target sample, once
        assert set(stats) == {"htr", "vqa", "caption"}
        # both replay sources get an equal token share by default (within a long sample)
        assert abs(stats["vqa"] - stats["caption"]) <= 900


def test_sample_counts_would_mislead():
    """The point of counting tokens: 25 % of tokens is far fewer long samples than 25 % of rows."""
    target = fake_samples("htr", 400, 40, 60, replay=False, seed=0)
    replay = fake_samples("scenes", 400, 400, 600, replay=True, seed=1)
    samples = Mixture(target, replay, 0.25, 0).epoch(0)
    n_replay = sum(s.replay for s in samples)
    assert n_replay / len(samples) < 0.05
    assert abs(Mixture.share(samples) - 0.25) <= 0.02


def test_epochs_are_redrawn_deterministically():
    target = fake_samples("htr", 100, 20, 80, replay=False, seed=0)
    replay = fake_samples("world", 500, 20, 200, replay=True, seed=1)
    a, b = Mixture(target, replay, 0.3, 7), Mixture(target, replay, 0.3, 7)
    assert a.epoch(0) == b.epoch(0)
    assert a.epoch(3) == b.epoch(3)
    ids = [{s.id for s in a.epoch(e) if s.replay} for e in range(2)]
    assert ids[0] != ids[1]
    assert a.epoch(0) != Mixture(target, replay, 0.3, 8).epoch(0)


def test_small_pools_are_cycled_and_weights_split_the_budget():
    target = fake_samples("htr", 100, 50, 51, replay=False, seed=0)  # 5000 tokens
    a = fake_samples("a", 3, 10, 11, replay=True, seed=1)
    b = fake_samples("b", 50, 10, 11, replay=True, seed=2)
    mixture = Mixture(target, a + b, 0.5, 0, replay_weights={"a": 3, "b": 1})
    stats = Mixture.stats(mixture.epoch(0))
    assert stats["a"] == pytest.approx(3750, abs=10) and stats["b"] == pytest.approx(1250, abs=10)


def test_target_weights_repeat_or_subsample():
    x = fake_samples("x", 10, 5, 6, replay=False, seed=0)
    y = fake_samples("y", 10, 5, 6, replay=False, seed=1)
    samples = Mixture(x + y, [], 0.0, 0, target_weights={"x": 2, "y": 0.5}).epoch(0)
    counts = {name: sum(s.source == name for s in samples) for name in "xy"}
    assert counts == {"x": 20, "y": 5}


def test_mixture_errors():
    target = fake_samples("htr", 5, 5, 6, replay=False, seed=0)
    with pytest.raises(InputError, match="no replay samples"):
        Mixture(target, [], 0.2, 0)
    with pytest.raises(InputError, match="both target and replay"):
        Mixture(target, fake_samples("htr", 5, 5, 6, replay=True, seed=1), 0.2, 0)
    with pytest.raises(InputError, match="no target samples"):
        Mixture([], [], 0.0, 0)


# --- image geometry and token estimates ------------------------------------------------------


@pytest.mark.parametrize(
    "size", [(56, 56), (2000, 56), (300, 29), (1000, 1000), (28, 400), (4000, 3000)]
)
def test_smart_resize_matches_transformers(size):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref

    width, height = size
    kwargs = {"factor": 28, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}
    assert smart_resize(height, width, **kwargs) == tuple(ref(height, width, **kwargs))


@pytest.mark.parametrize("size", [(2000, 56), (1000, 1000), (5000, 300), (333, 777)])
def test_budget_keeps_aspect_pixel_limit_and_multiples_of_28(size):
    budget = 28 * 28 * 40
    w, h = budget_size(*size, budget, 28)
    assert w * h <= budget and w % 28 == 0 and h % 28 == 0
    assert abs(math.log((w / h) / (size[0] / size[1]))) < 0.7  # aspect kept, up to rounding
    assert budget_size(100, 50, budget, 28) == (100, 50)  # within budget: untouched
    assert budget_size(100, 50, None, 28) == (100, 50)
    # a line too long for the budget at one token row: one row, as wide as the budget allows
    assert budget_size(5000, 30, budget, 28) == (28 * 40, 28)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    return load_model(build_tiny("qwen2_5_vl", tmp_path_factory.mktemp("m") / "qwen", size="xs"))


def test_token_estimate_matches_the_encoded_length(tiny):
    from vlm_retain.models.encoding import encode

    counter = TokenCounter.for_model(tiny, max_pixels=28 * 28 * 16)
    cases = [
        ((224, 56), "Transcribe the text.", "Вѣра і Ѳома"),
        ((1120, 56), "Read it.", "a much longer line of handwriting"),  # over the budget
        (None, "What is two and two?", "four"),
    ]
    for size, prompt, answer in cases:
        image = None if size is None else Image.new("RGB", budget_size(*size, 28 * 28 * 16, 28))
        batch = encode(tiny, [image], [prompt], [answer], padding_side="right")
        assert abs(counter(prompt, answer, size) - batch["input_ids"].shape[1]) <= 2


# --- sources ---------------------------------------------------------------------------------


def test_world_manifest_records_become_prompts(tmp_path):
    samples = load_samples(
        world_like(tmp_path / "w"), counter=simple_counter, replay=True, caption_prompt="Caption?"
    )
    vqa = [s for s in samples if s.task == "vqa"]
    cap = [s for s in samples if s.task == "caption"]
    assert len(vqa) == len(cap) == 6
    assert vqa[0].prompt.startswith("How many shapes") and vqa[0].answer == "two"
    assert cap[0].prompt == "Caption?" and cap[0].answer == "A red circle."
    assert all(s.replay and s.source == "synth-world" and s.size == (112, 112) for s in samples)
    assert samples[0].image == tmp_path / "w" / "images" / "s0.png"
    only = load_samples(tmp_path / "w", counter=simple_counter, tasks=["caption"], source="cap")
    assert {s.task for s in only} == {"caption"} and {s.source for s in only} == {"cap"}


def test_ocr_records_get_the_ocr_prompt_and_sizes_from_the_image(tmp_path):
    samples = load_samples(lines_like(tmp_path / "l"), counter=simple_counter, prompt="Read.")
    assert {s.prompt for s in samples} == {"Read."}
    assert samples[2].size == (112, 56)
    assert samples[2].tokens == simple_counter("Read.", samples[2].answer, (112, 56))


def test_bad_sources_are_named_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"meta\.question") as info:
        load_samples(world_like(tmp_path / "w", question=False), counter=simple_counter)
    assert "manifest.jsonl:1" in str(info.value)
    lines = lines_like(tmp_path / "l", split="val")
    with pytest.raises(InputError, match="replay source is empty: no records in split 'train'"):
        load_samples(lines, counter=simple_counter, what="replay source")
    with pytest.raises(InputError, match="no vqa records"):
        load_samples(lines, counter=simple_counter, split="val", tasks=["vqa"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no manifest\.jsonl here"):
        load_samples(tmp_path / "empty", counter=simple_counter)
    src = config_from_dict(
        {
            "model": {"path": "m"},
            "data": {
                "target": [{"manifest": "t"}],
                "replay": [{"benchmark": str(tmp_path / "empty")}],
                "replay_share": 0.1,
            },
            "train": {"output_dir": "o"},
        }
    ).data.replay[0]
    with pytest.raises(InputError, match=r"no manifest\.jsonl and no benchmark layout found"):
        replay_source_samples(src, counter=simple_counter)


def test_missing_image_without_size_is_named(tmp_path):
    folder = lines_like(tmp_path / "l")
    (folder / "images" / "l3.png").unlink()
    with pytest.raises(InputError, match="image missing") as info:
        load_samples(folder, counter=simple_counter)
    assert "manifest.jsonl:4" in str(info.value)


def test_build_mixture_from_the_config(tmp_path):
    lines, world = lines_like(tmp_path / "l"), world_like(tmp_path / "w")
    config = config_from_dict(
        {
            "model": {"path": "m"},
            "data": {
                "target": [{"manifest": str(lines)}],
                "replay": [{"world": str(world), "tasks": ["vqa"], "name": "world-vqa"}],
                "replay_share": 0.3,
            },
            "train": {"output_dir": "o"},
        }
    )
    mixture = build_mixture(config.data, counter=simple_counter, seed=3)
    samples = mixture.epoch(0)
    assert set(Mixture.stats(samples)) == {"synth-htr", "world-vqa"}
    assert all(s.task == "vqa" for s in samples if s.replay)


def test_target_tasks_filter_keeps_only_the_named_tasks(tmp_path):
    world = world_like(tmp_path / "w")
    config = config_from_dict(
        {
            "model": {"path": "m"},
            "data": {"target": [{"manifest": str(world), "tasks": ["vqa"]}]},
            "train": {"output_dir": "o"},
        }
    )
    samples = build_mixture(config.data, counter=simple_counter, seed=0).epoch(0)
    assert samples and {s.task for s in samples} == {"vqa"}
    unfiltered = config_from_dict(
        {
            "model": {"path": "m"},
            "data": {"target": [{"manifest": str(world)}]},
            "train": {"output_dir": "o"},
        }
    )
    all_tasks = build_mixture(unfiltered.data, counter=simple_counter, seed=0).epoch(0)
    assert {s.task for s in all_tasks} > {"vqa"}


# --- replay from a benchmark's own layout -----------------------------------------------------


def _replay_src(**source) -> object:
    return config_from_dict(
        {
            "model": {"path": "m"},
            "data": {"target": [{"manifest": "t"}], "replay": [source], "replay_share": 0.1},
            "train": {"output_dir": "o"},
        }
    ).data.replay[0]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlm_retain.data.synthetic.world import WorldOptions, synth_world

    root = tmp_path_factory.mktemp("bench") / "world"
    options = WorldOptions(n=16, workers=1, sign_share=0.0, image_size=56, sign_image_size=168)
    synth_world(root, options, progress=False)
    return root


def test_majority_answer_ties_are_deterministic():
    from vlm_retain.train.benchmark_replay import majority_answer

    assert majority_answer(["yes"] * 6 + ["no"] * 4) == "yes"
    assert majority_answer(["two", "2", "2", "two", " "]) == "2"  # tie: alphabetically first
    assert majority_answer(["two", "2", "2", "two"][::-1]) == "2"  # whatever the order
    assert majority_answer(["", "  "]) is None


def test_replay_from_a_vqav2_layout(tiny_world: Path):
    """The world's vqav2/ folder has no manifest: it is read as the VQAv2 layout it is."""
    import json

    from vlm_retain.data.prompts import VQA_PROMPT
    from vlm_retain.train.benchmark_replay import majority_answer

    folder = tiny_world / "vqav2"
    assert not (folder / "manifest.jsonl").exists()
    samples = replay_source_samples(_replay_src(benchmark=str(folder)), counter=simple_counter)
    questions = json.loads(
        (folder / "Questions" / "v2_OpenEnded_mscoco_train_questions.json").read_text()
    )["questions"]
    annotations = json.loads(
        (folder / "Annotations" / "v2_mscoco_train_annotations.json").read_text()
    )["annotations"]
    assert len(samples) == len(annotations) > 0  # split train by default
    by_id = {s.id: s for s in samples}
    question_of = {q["question_id"]: q["question"] for q in questions}
    for ann in annotations:
        sample = by_id[f"vqav2:{ann['question_id']}"]
        answer = majority_answer([a["answer"] for a in ann["answers"]])
        assert sample.answer == answer == ann["multiple_choice_answer"]
        assert sample.prompt == VQA_PROMPT.format(question=question_of[ann["question_id"]])
        assert sample.image.is_file() and "/train/" in str(sample.image)
        assert sample.size == (56, 56)
        assert sample.tokens == simple_counter(sample.prompt, sample.answer, (56, 56))
        assert sample.replay and sample.task == "vqa" and sample.source == "vqav2"
    val = replay_source_samples(
        _replay_src(benchmark=str(folder), split="val", name="general"), counter=simple_counter
    )
    assert {s.source for s in val} == {"general"}
    assert not {s.id for s in val} & set(by_id)
    with pytest.raises(InputError, match="is empty: no caption items"):
        replay_source_samples(
            _replay_src(benchmark=str(folder), tasks=["caption"]), counter=simple_counter
        )


def test_replay_from_caption_layouts_one_seeded_reference_per_image(tiny_world: Path):
    from vlm_retain.data.prompts import CAPTION_PROMPT

    src = _replay_src(benchmark=str(tiny_world / "karpathy"))
    first = replay_source_samples(src, counter=simple_counter, seed=1)
    again = replay_source_samples(src, counter=simple_counter, seed=1)
    other = replay_source_samples(src, counter=simple_counter, seed=2)
    assert {s.source for s in first} == {"coco", "flickr30k"}
    assert all(s.prompt == CAPTION_PROMPT and s.task == "caption" for s in first)
    ids = [s.id for s in first]
    assert len(ids) == len(set(ids))  # one sample per image
    assert [s.answer for s in first] == [s.answer for s in again]
    assert [s.answer for s in first] != [s.answer for s in other]


def test_parquet_benchmarks_are_refused_for_replay(tmp_path: Path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    answers = [[{"answer": "yes", "answer_confidence": "yes", "answer_id": 1}]]
    rows = {
        "question_id": [1],
        "question": ["Is it?"],
        "answers": answers,
        "image": [{"bytes": buffer.getvalue(), "path": "a.png"}],
    }
    folder = tmp_path / "VQAv2"
    folder.mkdir()
    pq.write_table(pa.table(rows), folder / "train-00000-of-00001.parquet")
    with pytest.raises(InputError, match=r"parquet .*export the images to files first"):
        replay_source_samples(_replay_src(benchmark=str(folder)), counter=simple_counter)


# --- self-replay -----------------------------------------------------------------------------


def test_self_replay_is_generated_once_and_cached(tmp_path):
    world = world_like(tmp_path / "w")
    calls: list[int] = []

    def generate(images, prompts):
        calls.append(len(prompts))
        assert all(isinstance(i, Path) and i.is_file() for i in images)
        return ["" if "3?" in p else f"answer to {p}" for p in prompts]

    kwargs = {
        "generate_fn": generate,
        "model_key": "base-1",
        "cache_dir": tmp_path / "cache",
        "counter": simple_counter,
        "n": 8,
        "seed": 0,
        "batch_size": 3,
    }
    first = self_replay_samples(world, **kwargs)
    assert calls == [3, 3, 2]
    assert 7 <= len(first) <= 8  # the empty answer (if drawn) is left out
    assert all(s.source == SELF_REPLAY_SOURCE and s.replay for s in first)
    # (answers are cleaned text: the VQA prompt's newline becomes a space)
    assert all(
        s.answer == f"answer to {s.prompt}".replace("\n", " ") or s.task == "caption" for s in first
    )
    assert all(s.image is not None and s.image.is_file() for s in first)
    again = self_replay_samples(world, **kwargs)
    assert calls == [3, 3, 2]  # the cache was reused: no generation
    assert again == first
    self_replay_samples(world, **{**kwargs, "model_key": "base-2"})
    assert len(calls) == 6  # another model: generated again


def test_self_replay_with_nothing_said_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no non-empty answer"):
        self_replay_samples(
            world_like(tmp_path / "w"),
            generate_fn=lambda images, prompts: [""] * len(prompts),
            model_key="k",
            cache_dir=tmp_path / "cache",
            counter=simple_counter,
        )
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.jsonl"))


def test_model_fingerprint_changes_with_the_weights(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes((2).to_bytes(8, "little") + b"{}" + b"\0" * 16)
    first = model_fingerprint(folder)
    assert model_fingerprint(folder) == first
    weights.write_bytes((2).to_bytes(8, "little") + b"{}" + b"\1" * 20)
    assert model_fingerprint(folder) != first
