"""ResumableJsonl and input resolution: the parts of transcribe that need no model."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.conftest import read_jsonl
from vlm_retain.errors import InputError
from vlm_retain.evaluate.generate.inputs import resolve_inputs
from vlm_retain.evaluate.generate.resume import ResumableJsonl

SETTINGS = {"backend": "hf", "model": "m", "prompt": "p", "max_new_tokens": 8}


def test_fresh_run_then_finish_in_input_order(tmp_path):
    out = tmp_path / "sub" / "preds.jsonl"
    writer = ResumableJsonl(out, SETTINGS)
    assert writer.start() == {}
    writer.write([{"id": "b", "prediction": "2"}, {"id": "a", "prediction": "1"}])
    assert writer.partial.is_file() and not out.exists()
    assert writer.finish(["a", "b"]) == 2
    assert [line["id"] for line in read_jsonl(out)] == ["a", "b"]
    assert not writer.partial.exists() and not writer.settings_file.exists()
    with pytest.raises(InputError, match="already exists"):
        ResumableJsonl(out, SETTINGS).start()


def test_resume_cuts_torn_line_and_retries_errors(tmp_path):
    out = tmp_path / "preds.jsonl"
    writer = ResumableJsonl(out, SETTINGS)
    writer.start()
    writer.write(
        [
            {"id": "a", "prediction": "1", "meta": {}},
            {"id": "bad", "prediction": "", "meta": {"error": "truncated image"}},
        ]
    )
    writer.close()
    with open(writer.partial, "a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "predic')  # the process died mid-line
    again = ResumableJsonl(out, SETTINGS)
    assert set(again.start()) == {"a"} and again.retried == 1
    again.write([{"id": "bad", "prediction": "x"}, {"id": "c", "prediction": "3"}])
    again.finish(["a", "bad", "c"])
    assert [line["prediction"] for line in read_jsonl(out)] == ["1", "x", "3"]


def test_other_settings_refuse_to_resume(tmp_path):
    out = tmp_path / "preds.jsonl"
    ResumableJsonl(out, SETTINGS).start()
    with pytest.raises(InputError, match=r"other settings \(model, prompt\)"):
        ResumableJsonl(out, {**SETTINGS, "model": "other", "prompt": "q"}).start()
    fresh = ResumableJsonl(out, {**SETTINGS, "model": "other"}, overwrite=True)
    assert fresh.start() == {}
    assert json.loads(fresh.settings_file.read_text())["model"] == "other"


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (56, 28), "white").save(path)
    return path


def test_inputs_folder_files_and_manifest(tmp_path):
    _png(tmp_path / "f" / "b" / "2.png")
    _png(tmp_path / "f" / "a.JPG".lower())
    _png(tmp_path / "f" / ".hidden" / "x.png")
    (tmp_path / "f" / "notes.txt").write_text("x")
    items = resolve_inputs([tmp_path / "f"])
    assert [i.id for i in items] == ["a.jpg", "b/2.png"]
    single = resolve_inputs([tmp_path / "f" / "a.jpg", tmp_path / "f" / "a.jpg"])
    assert len(single) == 1 and single[0].id.endswith("f/a.jpg")
    manifest = tmp_path / "m" / "manifest.jsonl"
    _png(tmp_path / "m" / "images" / "1.png")
    row = {"id": "x1", "image": "images/1.png", "text": "Вѣра", "lang": "ru"}
    manifest.write_text(
        json.dumps({**row, "source": "synth-htr", "split": "test"}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    (item,) = resolve_inputs([tmp_path / "m"], split="test")
    assert item.id == "x1" and item.reference == "Вѣра" and item.meta["lang"] == "ru"
    assert item.image == tmp_path / "m" / "images" / "1.png"
    with pytest.raises(InputError, match="no records in split"):
        resolve_inputs([manifest], split="train")
    with pytest.raises(InputError, match="not an image"):
        resolve_inputs([tmp_path / "f" / "notes.txt"])
    with pytest.raises(InputError, match="not found"):
        resolve_inputs([tmp_path / "nothing"])
    with pytest.raises(InputError, match="no images"):
        resolve_inputs([_empty(tmp_path)])


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder
