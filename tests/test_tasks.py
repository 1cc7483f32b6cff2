"""The task registry: discovery over a generated synthetic world and a real-layout folder,
prompts, references and subsets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlm_retain.data.manifest import Record, write_manifest
from vlm_retain.data.prompts import CAPTION_PROMPT, DEFAULT_OCR_PROMPT, VQA_SUFFIX
from vlm_retain.data.synthetic.layouts import VqaItem, write_vqa
from vlm_retain.data.synthetic.world import WorldOptions, synth_world
from vlm_retain.errors import InputError
from vlm_retain.evaluate.tasks import TASKS, find_tasks, get_task, selection_record, task_names

GENERAL = {"vqav2", "world-signs", "coco", "flickr30k", "coco-retrieval", "flickr30k-retrieval"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    synth_world(out, WorldOptions(n=20, workers=1), progress=False)
    return out


def test_registry_entries_are_complete() -> None:
    assert set(TASKS) >= GENERAL | {"ocr", "textvqa", "docvqa"}
    assert task_names("ocr") == ["ocr"] and "ocr" not in task_names("general")
    for task in TASKS.values():
        assert task.kind in ("generate", "retrieval")
        assert task.metric in ("ocr", "vqa", "anls", "caption", "retrieval")
        assert (task.max_new_tokens > 0) == (task.kind == "generate")
        assert callable(task.loader) and callable(task.find)
    assert get_task("vqav2").max_new_tokens == 16
    assert get_task("coco").max_new_tokens == get_task("flickr30k").max_new_tokens == 64
    assert get_task("docvqa").metric == "anls" and get_task("textvqa").metric == "vqa"
    assert get_task("ocr").prompt == DEFAULT_OCR_PROMPT
    with pytest.raises(InputError, match=r"known tasks: .*vqav2"):
        get_task("mmmu")


def test_world_runs_through_find_and_loaders(world: Path) -> None:
    found = find_tasks(world)
    assert set(found) == GENERAL  # the world's manifest has no OCR lines
    assert found["vqav2"] == [world / "vqav2"] and found["world-signs"] == [world / "signs"]
    assert world / "karpathy" / "dataset_coco.json" in found["coco"]
    assert found["flickr30k"] == [world / "karpathy" / "dataset_flickr30k.json"]
    scenes = json.loads((world / "scenes.json").read_text())["scenes"]
    test_images = {Path(s["image"]).name for s in scenes if s["split"] == "test"}
    for name, sources in found.items():
        task = get_task(name)
        items = task.load(sources)
        assert all(item.fields["split"] == "test" for item in items), name
        if name == "world-signs":
            assert task.load(sources, split="train")  # signs exist in train at least
            continue
        assert items, name
        item = items[0]
        assert item.image.load().mode == "RGB"
        reference = task.reference_of(item)
        assert set(reference) == {task.reference_field}
        if task.metric == "caption" or task.kind == "retrieval":
            assert {Path(str(i.image.path)).name for i in items} == test_images
            assert task.render_prompt(item) == CAPTION_PROMPT
            assert len(item.references or []) == 5
        else:
            assert len(item.answers or []) == 10
            assert task.render_prompt(item) == (item.question or "") + VQA_SUFFIX
    gallery = get_task("coco-retrieval").gallery(get_task("coco-retrieval").load(found["coco"]))
    assert len(gallery.texts) == 5 * len(gallery.images)


def test_limit_subset_is_deterministic(world: Path) -> None:
    task = get_task("vqav2")
    items = task.load(find_tasks(world)["vqav2"], split="train")
    a, b = task.select(items, 5, seed=0), task.select(list(reversed(items)), 5, seed=0)
    assert [i.id for i in a] == [i.id for i in b] and len(a) == 5
    assert selection_record(a, n_total=len(items), limit=5, seed=0)["ids"] == [i.id for i in a]
    retrieval = get_task("flickr30k-retrieval")
    assert retrieval.default_limit == 100
    assert len(retrieval.select(items)) == min(100, len(items))


def test_textvqa_prompt_capitalizes_like_lmms_eval() -> None:
    from vlm_retain.data.benchmarks import EvalItem, ImageRef

    item = EvalItem(id="1", image=ImageRef.from_path("x.jpg"), question="what does NYC {say}?")
    assert get_task("textvqa").render_prompt(item) == "What does nyc {say}?" + VQA_SUFFIX
    assert get_task("docvqa").render_prompt(item) == "what does NYC {say}?" + VQA_SUFFIX


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_find_tasks_on_a_real_layout_folder(tmp_path: Path) -> None:
    item = VqaItem(1001, 1, "Is it?", "yes/no", (("yes", "yes"),) * 10)
    write_vqa(tmp_path / "VQAv2", "val2014", [item], info={}, license={})
    (tmp_path / "textvqa").mkdir()
    (tmp_path / "textvqa" / "TextVQA_0.5.1_val.json").write_text('{"data": []}')
    (tmp_path / "textvqa" / "TextVQA_0.5.1_test.json").write_text('{"data": []}')
    (tmp_path / "docvqa" / "val").mkdir(parents=True)
    (tmp_path / "docvqa" / "val" / "val_v1.0.json").write_text('{"data": []}')
    htr = tmp_path / "htr"
    write_manifest(
        htr / "manifest.jsonl",
        [Record.create(id="a", image="a.png", text="t", lang="en", source="x", split="test")],
    )
    shard = tmp_path / "lmms" / "flickr30k" / "data" / "test-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    table = {"image": [{"bytes": _png(), "path": None}], "caption": [["c"] * 5],
             "sentids": [["0"] * 5], "img_id": ["0"], "filename": ["9.jpg"]}  # fmt: skip
    pq.write_table(pa.table(table), shard)
    vqa_shard = tmp_path / "lmms" / "VQAv2" / "validation-00000-of-00001.parquet"
    vqa_shard.parent.mkdir(parents=True)
    pq.write_table(
        pa.table({"question_id": [1], "question": ["q"], "image": table["image"],
                  "answers": [[{"answer": "a", "answer_confidence": "yes", "answer_id": 1}]]}),
        vqa_shard,
    )  # fmt: skip
    found = find_tasks(tmp_path)
    assert found["vqav2"] == [tmp_path / "VQAv2"]  # the JSON layout wins over the parquet
    assert found["textvqa"] == [tmp_path / "textvqa" / "TextVQA_0.5.1_val.json"]
    assert found["docvqa"] == [tmp_path / "docvqa" / "val" / "val_v1.0.json"]
    assert found["flickr30k"] == found["flickr30k-retrieval"] == [shard]
    assert found["ocr"] == [htr]
    assert "coco" not in found and "world-signs" not in found
    assert find_tasks(tmp_path, group="ocr") == {"ocr": [htr]}
    assert find_tasks(tmp_path / "lmms", names=["vqav2"]) == {"vqav2": [vqa_shard]}
    with pytest.raises(InputError, match="no such folder"):
        find_tasks(tmp_path / "nope")
