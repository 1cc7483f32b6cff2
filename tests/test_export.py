"""``data export llamafactory`` and ``data export parquet``: formats checked, round trips closed.

The LLaMA-Factory checks below re-implement, minimally, what LLaMA-Factory does with a
``dataset_info.json`` entry and its file. They follow hiyouga/LLaMA-Factory, read at the
commits named below (one per file, so they may differ by a few revisions; ``extras/env.py`` at
070b061 says ``VERSION = "0.9.3.dev0"``). Re-check them when LLaMA-Factory changes its loader:

- ``src/llamafactory/data/parser.py`` @ 85b0f312 (``DatasetAttr``, ``get_dataset_list``): an
  entry with ``file_name`` and no hub/script/cloud url loads ``from file``; ``join`` reads
  ``formatting`` and ``split`` (default ``train``), and when ``columns`` or ``tags`` is present it
  sets *every* column or tag from it, so one not listed becomes None (the defaults, messages
  ``conversations`` and tags ``from``/``value``/``human``/``gpt``, apply only without the key).
- ``src/llamafactory/data/loader.py`` @ dda34b5f (``_load_single_dataset``): the file is
  ``os.path.join(dataset_dir, file_name)``, its type comes from the extension (``FILEEXT2TYPE``)
  and it is read with ``load_dataset(<type>, data_files=[...], split=dataset_attr.split)``,
  which is run here for real.
- ``src/llamafactory/data/converter.py`` @ 908cd68e (``SharegptDatasetConverter``): a leading
  system turn is taken off when ``system_tag`` is set; user/observation turns at even indices,
  assistant/function turns at odd ones and an even number of turns, else the example is emptied
  and later dropped; ``_find_medias`` joins each image path to ``media_dir`` (default
  ``dataset_dir``) and keeps the original path when the joined one is not a file. The check
  here is stricter: the joined path must be a file (our paths are absolute, so the join leaves
  them as they are).
- ``src/llamafactory/data/processor/supervised.py`` @ 4a3b39c3: an odd number of prompt turns
  and exactly one response, else "Dropped invalid example".
- ``src/llamafactory/data/mm_plugin.py``: as many ``<image>`` placeholders in the messages as
  images, else a ValueError (``BasePlugin._validate_messages`` in 0.9.3-era code; the older
  revision stored at e679cbb makes the same count at the end of ``process_messages``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.export.llamafactory import DEFAULT_PROMPT
from vlm_retain.data.export.parquet import export_parquet
from vlm_retain.data.samples.peter import write_peter_sample
from vlm_retain.fsutil import read_marker

# DatasetAttr defaults in parser.py, and FILEEXT2TYPE in extras/constants.py (the part we need).
LF_DEFAULTS = {
    "formatting": "alpaca",
    "split": "train",
    "messages": "conversations",
    "images": None,
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
LF_FILE_TYPES = {
    "arrow": "arrow",
    "csv": "csv",
    "json": "json",
    "jsonl": "json",
    "parquet": "parquet",
    "txt": "text",
}
IMAGE_PLACEHOLDER = "<image>"


@pytest.fixture
def manifest(tmp_path: Path, run_cli) -> Path:
    """A Digital Peter sample imported the normal way: train 8, val 2, test 3 lines."""
    sample = write_peter_sample(tmp_path / "raw")
    folder = tmp_path / "manifests" / "peter"
    assert run_cli("data", "import", "peter", sample.root, "--out", folder, "-q").code == 0
    return folder


LF_TAGS = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
)


def lf_attr(entry: dict[str, Any]) -> dict[str, Any]:
    """parser.get_dataset_list + DatasetAttr.join for one local-file entry."""
    for url in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"):
        assert url not in entry
    attr = dict(LF_DEFAULTS, file_name=entry["file_name"])
    for key in ("formatting", "split"):
        attr[key] = entry.get(key, LF_DEFAULTS[key])
    if "columns" in entry:
        for key in ("messages", "images"):
            attr[key] = entry["columns"].get(key)
    if "tags" in entry:
        for key in LF_TAGS:
            attr[key] = entry["tags"].get(key)
    return attr


def lf_convert(example: dict[str, Any], attr: dict[str, Any], media_dir: Path) -> dict[str, Any]:
    """SharegptDatasetConverter.__call__ and _find_medias, without logging."""
    messages = example[attr["messages"]]
    if attr["system_tag"] and messages and messages[0][attr["role_tag"]] == attr["system_tag"]:
        messages = messages[1:]
    odd = (attr["user_tag"], attr["observation_tag"])
    even = (attr["assistant_tag"], attr["function_tag"])
    roles = {attr["user_tag"]: "user", attr["assistant_tag"]: "assistant"}
    aligned = []
    for index, message in enumerate(messages):
        assert message[attr["role_tag"]] in (odd, even)[index % 2], "invalid role tag"
        aligned.append(
            {"role": roles[message[attr["role_tag"]]], "content": message[attr["content_tag"]]}
        )
    assert len(aligned) % 2 == 0, "invalid message count"
    images = []
    for image in example[attr["images"]]:
        joined = os.path.join(media_dir, image)
        assert os.path.isfile(joined), f"media {image} not found"
        images.append(joined)
    return {"_prompt": aligned[:-1], "_response": aligned[-1:], "_images": images}


def test_llamafactory_export_loads_the_way_llamafactory_loads_it(
    manifest: Path, tmp_path: Path, run_cli
) -> None:
    import datasets

    to = tmp_path / "lf"
    result = run_cli("data", "export", "llamafactory", manifest, "--to", to)
    assert result.code == 0, result.err
    info = read_json(to / "dataset_info.json")
    assert sorted(info) == ["peter_test", "peter_train", "peter_val"]
    assert info["peter_val"] == {
        "file_name": "peter_val.json",
        "formatting": "sharegpt",
        "split": "train",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    }
    sizes = {}
    for name, entry in info.items():
        attr = lf_attr(entry)
        local_path = os.path.join(to, attr["file_name"])
        assert os.path.isfile(local_path)
        loaded = datasets.load_dataset(
            LF_FILE_TYPES[local_path.split(".")[-1]],
            data_files=[local_path],
            split=attr["split"],
            cache_dir=str(tmp_path / "hf-cache"),
        )
        sizes[name] = len(loaded)
        for example in loaded:
            converted = lf_convert(example, attr, media_dir=to)
            assert len(converted["_prompt"]) % 2 == 1 and len(converted["_response"]) == 1
            tags = sum(
                m["content"].count(IMAGE_PLACEHOLDER)
                for m in converted["_prompt"] + converted["_response"]
            )
            assert tags == len(converted["_images"]) == 1
            assert converted["_prompt"][0]["content"] == IMAGE_PLACEHOLDER + DEFAULT_PROMPT
            assert Path(converted["_images"][0]).is_absolute()
    assert sizes == {"peter_train": 8, "peter_val": 2, "peter_test": 3}
    # why "split" is always "train": a local file has no other split
    with pytest.raises(ValueError, match="split"):
        datasets.load_dataset(
            "json",
            data_files=[str(to / "peter_val.json")],
            split="validation",
            cache_dir=str(tmp_path / "hf-cache"),
        )
    assert read_marker(to)["kind"] == "export"


def test_llamafactory_round_trip_through_import_sharegpt(
    manifest: Path, tmp_path: Path, run_cli
) -> None:
    to = tmp_path / "lf"
    assert (
        run_cli(
            "data", "export", "llamafactory", manifest, "--to", to, "--prompt", "Read the line."
        ).code
        == 0
    )
    original = read_jsonl(manifest / "manifest.jsonl")
    items = json.loads((to / "peter_train.json").read_text(encoding="utf-8"))
    assert items[0]["messages"][0] == {"role": "user", "content": "<image>Read the line."}
    for split in ("train", "val", "test"):
        back = tmp_path / f"back_{split}"
        result = run_cli(
            "data",
            "import",
            "sharegpt",
            to / f"peter_{split}.json",
            "--out",
            back,
            "--lang",
            "ru",
            "-q",
        )
        assert result.code == 0, result.err
        expected = {
            r["id"]: (r["text"], (manifest / r["image"]).resolve())
            for r in original
            if r["split"] == split
        }
        records = read_jsonl(back / "manifest.jsonl")
        assert {r["split"] for r in records} == {split}
        assert {r["id"]: (r["text"], (back / r["image"]).resolve()) for r in records} == expected
        assert {r["meta"]["prompt"] for r in records} == {"Read the line."}


def test_llamafactory_names_are_deduplicated(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "raw", with_gotchas=False)
    first, second = tmp_path / "a" / "peter", tmp_path / "b" / "peter"
    for folder in (first, second):
        assert run_cli("data", "import", "peter", sample.root, "--out", folder, "-q").code == 0
    to = tmp_path / "lf"
    assert run_cli("data", "export", "llamafactory", first, second, "--to", to).code == 0
    assert sorted(read_json(to / "dataset_info.json")) == [
        "peter_2_test",
        "peter_2_train",
        "peter_2_val",
        "peter_test",
        "peter_train",
        "peter_val",
    ]
    assert (to / "peter_2_train.json").is_file()


def _assert_input_error(result, out: Path, *needles: str) -> None:
    assert result.code == 2, result.err
    for needle in needles:
        assert needle in result.err, result.err
    assert not out.exists()


def test_export_errors_leave_no_output(manifest: Path, tmp_path: Path, run_cli) -> None:
    to = tmp_path / "lf"
    result = run_cli(
        "data", "export", "llamafactory", manifest, "--to", to, "--prompt", "<image>Read"
    )
    _assert_input_error(result, to, "must not contain <image>")
    result = run_cli("data", "export", "llamafactory", manifest, "--to", manifest / "lf")
    _assert_input_error(result, manifest / "lf", "outside the manifest folders")
    result = run_cli("data", "export", "parquet", manifest, "--to", manifest, "--overwrite")
    assert result.code == 2 and (manifest / "manifest.jsonl").is_file()
    result = run_cli("data", "export", "llamafactory", tmp_path / "nowhere", "--to", to)
    _assert_input_error(result, to, "no manifest here")
    image = (manifest / read_jsonl(manifest / "manifest.jsonl")[-1]["image"]).resolve()
    image.unlink()
    result = run_cli("data", "export", "llamafactory", manifest, "--to", to)
    _assert_input_error(result, to, "manifest.jsonl", "not found", image.name)
    result = run_cli("data", "export", "parquet", manifest, "--to", to)
    _assert_input_error(result, to, "manifest.jsonl", "cannot read the image", image.name)


def test_export_refuses_existing_output_unless_overwrite(
    manifest: Path, tmp_path: Path, run_cli
) -> None:
    to = tmp_path / "lf"
    assert run_cli("data", "export", "llamafactory", manifest, "--to", to).code == 0
    result = run_cli("data", "export", "llamafactory", manifest, "--to", to)
    assert result.code == 2 and "already exists" in result.err
    assert run_cli("data", "export", "llamafactory", manifest, "--to", to, "--overwrite").code == 0
    assert (to / "peter_train.json").is_file()


def test_parquet_export_is_a_hugging_face_dataset(manifest: Path, tmp_path: Path, run_cli) -> None:
    import datasets

    to = tmp_path / "pq"
    result = run_cli("data", "export", "parquet", manifest, "--to", to)
    assert result.code == 0, result.err
    assert "train 8, validation 2, test 3" in " ".join(result.out.split())
    assert sorted(p.name for p in (to / "data").iterdir()) == [
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]
    table = pq.read_table(to / "data" / "validation.parquet")
    assert table.column_names == ["image", "text", "id", "lang", "source"]
    assert str(table.schema.field("image").type) == "struct<bytes: binary, path: string>"
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    loaded = datasets.load_dataset(str(to), cache_dir=str(tmp_path / "hf-cache"))
    assert {name: len(split) for name, split in loaded.items()} == {
        "train": 8,
        "validation": 2,
        "test": 3,
    }
    assert isinstance(loaded["test"].features["image"], datasets.Image)
    first = loaded["validation"][0]
    original = {r["id"]: r for r in read_jsonl(manifest / "manifest.jsonl")}[first["id"]]
    assert first["image"].size == (original["meta"]["width"], original["meta"]["height"])
    assert first["text"] == original["text"] and first["lang"] == "ru"
    assert read_marker(to)["kind"] == "export"


def test_parquet_round_trip_through_import_hf(manifest: Path, tmp_path: Path, run_cli) -> None:
    to, back = tmp_path / "pq", tmp_path / "back"
    assert run_cli("data", "export", "parquet", manifest, "--to", to).code == 0
    result = run_cli(
        "data",
        "import",
        "hf",
        to,
        "--out",
        back,
        "--lang",
        "ru",
        "--id-col",
        "id",
        "--source",
        "peter",
        "-q",
    )
    assert result.code == 0, result.err
    original = {r["id"]: r for r in read_jsonl(manifest / "manifest.jsonl")}
    records = {r["id"]: r for r in read_jsonl(back / "manifest.jsonl")}
    assert sorted(records) == sorted(original)
    for record_id, record in records.items():
        before = original[record_id]
        assert (record["text"], record["split"], record["source"]) == (
            before["text"],
            before["split"],
            before["source"],
        )
        assert (
            hashlib.sha256((back / record["image"]).read_bytes()).digest()
            == hashlib.sha256((manifest / before["image"]).read_bytes()).digest()
        )
        assert (record["meta"]["width"], record["meta"]["height"]) == (
            before["meta"]["width"],
            before["meta"]["height"],
        )


def test_parquet_round_trip_keeps_natural_ids_without_id_col(
    manifest: Path, tmp_path: Path
) -> None:
    """What the demo does: export parquet, import it back with default HfOptions (no id column
    named): the ``id`` column the export wrote is found and the natural ids come back."""
    from vlm_retain.data.importers import hf
    from vlm_retain.data.importers.base import CommonOptions, run_import

    to, back = tmp_path / "pq", tmp_path / "back"
    export_parquet(manifest, to, overwrite=False)
    run_import(
        "hf",
        to,
        hf.HfOptions(lang="ru", source="peter"),
        hf.build,
        CommonOptions(out=back, progress=False),
    )
    original = {r["id"]: r for r in read_jsonl(manifest / "manifest.jsonl")}
    records = {r["id"]: r for r in read_jsonl(back / "manifest.jsonl")}
    assert sorted(records) == sorted(original)
    assert {i: (r["split"], r["text"]) for i, r in records.items()} == {
        i: (r["split"], r["text"]) for i, r in original.items()
    }
    assert {r["meta"]["original_split"] for r in records.values()} == {
        "train",
        "validation",
        "test",
    }
