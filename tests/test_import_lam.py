"""LAM importer on a sample in the archive's layout (lines/img + nested lines/split configs)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.samples.lam import write_lam_sample


def _import(run_cli, src: Path, out: Path, *extra: str):
    return run_cli("data", "import", "lam", src, "--out", out, "-q", *extra)


def _load_split(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_basic_config_keeps_ids_text_splits_and_decades(tmp_path: Path, run_cli) -> None:
    sample = write_lam_sample(tmp_path / "LAM")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 0, result.err
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    got = {i: (r["split"], r["text"], r["meta"]["decade_id"]) for i, r in records.items()}
    assert got == sample.expected_basic
    # NFD accent composed, stray and doubled spaces collapsed
    assert records["002_002_01"]["text"] == "Ricevo la gentilissima sua del dì passato"
    assert unicodedata.is_normalized("NFC", records["002_002_01"]["text"])
    record = records["002_003_02"]
    assert (record["lang"], record["source"]) == ("it", "lam")
    assert record["meta"]["config"] == "basic"
    assert record["meta"]["original_split"] == record["meta"]["nameset"] == "val"
    assert record["meta"]["img"] == "002_003_02.jpg"
    # referenced in place; the JSON's size kept under its own name, the real size measured
    image = out / record["image"]
    assert image.resolve() == (sample.root / "lines" / "img" / "002_003_02.jpg").resolve()
    assert not (out / "images").exists()
    assert record["meta"]["listed_width"] == record["meta"]["width"] > 0
    assert record["meta"]["listed_height"] == record["meta"]["height"] > 0

    card = read_json(out / "card.json")
    assert {k: v["count"] for k, v in card["skipped"].items()} == {
        reason: len(stems) for reason, stems in sample.skipped_basic.items()
    }
    assert card["skipped"]["image missing"]["examples"] == ["004_004_12"]
    assert card["importer"]["options"]["config"] == "basic"
    assert card["counts"]["test"]["it"] == 3


def test_the_lines_folder_itself_is_accepted(tmp_path: Path, run_cli) -> None:
    sample = write_lam_sample(tmp_path / "LAM", with_gotchas=False)
    out = tmp_path / "out"
    assert _import(run_cli, sample.root / "lines", out).code == 0
    card = read_json(out / "card.json")
    assert card["total"] == 12 and card["skipped_total"] == 0


def test_nested_leave_decade_out_config(tmp_path: Path, run_cli) -> None:
    sample = write_lam_sample(tmp_path / "LAM")
    assert "leave_decade_out/leave_decade_2_out" in sample.configs
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, "--config", "leave_decade_out/leave_decade_2_out/")
    assert result.code == 0, result.err
    records = read_jsonl(out / "manifest.jsonl")
    test_decades = {r["meta"]["decade_id"] for r in records if r["split"] == "test"}
    other_decades = {r["meta"]["decade_id"] for r in records if r["split"] != "test"}
    assert test_decades == {2} and 2 not in other_decades
    assert {r["meta"]["config"] for r in records} == {"leave_decade_out/leave_decade_2_out"}


def test_unknown_config_lists_the_existing_ones(tmp_path: Path, run_cli) -> None:
    sample = write_lam_sample(tmp_path / "LAM")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, "--config", "leave_decade_9_out")
    assert result.code == 2
    assert "unknown split config 'leave_decade_9_out'" in result.err
    assert "leave_decade_out/leave_decade_3_out" in result.err and "basic" in result.err
    assert not out.exists()


def test_image_in_two_splits_is_dropped_from_both(tmp_path: Path, run_cli) -> None:
    sample = write_lam_sample(tmp_path / "LAM", with_gotchas=False)
    basic = sample.root / "lines" / "split" / "basic"
    train, test = _load_split(basic / "train.json"), _load_split(basic / "test.json")
    leaked = train[0]
    test.append({**leaked, "nameset": "test"})
    (basic / "test.json").write_text(json.dumps(test), encoding="utf-8")
    train.append(dict(train[1]))  # listed twice in the same file: the later copy is skipped
    (basic / "train.json").write_text(json.dumps(train), encoding="utf-8")
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out).code == 0
    ids = {r["id"] for r in read_jsonl(out / "manifest.jsonl")}
    leaked_id = Path(leaked["img"]).stem
    assert leaked_id not in ids and Path(train[1]["img"]).stem in ids
    skipped = read_json(out / "card.json")["skipped"]
    assert skipped["listed in several splits of the config (leakage)"] == {
        "count": 2,
        "examples": [leaked_id, leaked_id],
    }
    assert skipped["listed twice in the same split file"]["count"] == 1
    assert len(ids) == 11


def test_missing_split_file_is_noted(tmp_path: Path, run_cli) -> None:
    sample = write_lam_sample(tmp_path / "LAM", with_gotchas=False)
    (sample.root / "lines" / "split" / "decades_vs_decade" / "val.json").unlink()
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--config", "decades_vs_decade").code == 0
    card = read_json(out / "card.json")
    assert card["notes"] == {"val.json absent from config decades_vs_decade": 1}
    assert set(card["counts"]) == {"train", "test"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '[{"decade_id": 1, "img": "a.jpg",\n "text": "x" "width": 3}]',
            "val.json:2: malformed JSON",
        ),
        ('{"img": "a.jpg"}', "expected a JSON list of records"),
        (
            '[{"decade_id": 1, "img": "a.jpg", "text": "x"}, {"decade_id": 1, "img": "b.jpg"}]',
            "val.json (field 'text'): record [1] has no such field",
        ),
        (
            '[{"decade_id": "1", "img": "a.jpg", "text": "x"}]',
            "val.json (field 'decade_id'): record [0]: expected int, found '1'",
        ),
        ('[{"decade_id": 1, "img": "a.jpg", "text": "x", "width": 1.5}]', "(field 'width')"),
        ('[["a.jpg", "x"]]', "record [0] is not a JSON object"),
        ('[{"decade_id": 1, "img": "a.jpg", "text": "\xff"}]', None),
    ],
)
def test_malformed_split_file_names_file_and_position(
    tmp_path: Path, run_cli, content: str, expected: str | None
) -> None:
    sample = write_lam_sample(tmp_path / "LAM", with_gotchas=False)
    path = sample.root / "lines" / "split" / "basic" / "val.json"
    if expected is None:  # invalid UTF-8
        path.write_bytes(content.encode("latin-1"))
        expected = "val.json:1: invalid UTF-8"
    else:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2
    assert expected in result.err
    assert str(path) in result.err
    assert not out.exists()


@pytest.mark.parametrize("remove", ["lines/split", "lines/img", "lines"])
def test_missing_layout_parts_are_input_errors(tmp_path: Path, run_cli, remove: str) -> None:
    import shutil

    sample = write_lam_sample(tmp_path / "LAM", with_gotchas=False)
    shutil.rmtree(sample.root / remove)
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2
    assert "not found" in result.err and str(sample.root) in result.err
    assert not out.exists()
