"""``data stats``: counts, charsets, unseen characters and distributions on a hand-made manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlm_retain.data.manifest import Record, write_manifest
from vlm_retain.data.stats import distribution, manifest_stats

# (id, split, lang, source, text, image width, image height)
LINES = [
    ("t1", "train", "ru", "peter", "аб вг", 100, 20),
    ("t2", "train", "ru", "peter", "ба", 200, 20),
    ("t3", "train", "en", "iam", "ab cd ef", 300, 30),
    ("t4", "train", "en", "iam", "a", 400, 40),
    ("v1", "val", "ru", "peter", "аѣ", 120, 40),
    ("s1", "test", "ru", "peter", "ѣѣ i", 90, 30),
    ("s2", "test", "en", "iam", "a, b", 60, 30),
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    source = tmp_path / "src"
    source.mkdir()
    records = []
    for index, (id_, split, lang, src, text, width, height) in enumerate(LINES):
        Image.new("L", (width, height), 100 + index).save(source / f"{id_}.png")
        records.append(
            Record.create(
                id=id_, image=f"../src/{id_}.png", text=text, lang=lang, source=src, split=split
            )
        )
    # one image gone: counted as unmeasured, not a crash
    records.append(
        Record.create(
            id="s3", image="../src/gone.png", text="cd", lang="en", source="iam", split="test"
        )
    )
    folder.mkdir()
    write_manifest(folder / "manifest.jsonl", records)
    return folder


def test_counts_charsets_and_unseen_characters(folder: Path) -> None:
    result = manifest_stats(folder)
    assert result["total"] == 8
    assert result["counts"]["split"] == {"train": 4, "val": 1, "test": 3}
    assert result["counts"]["lang"] == {"en": 4, "ru": 4}
    assert result["counts"]["source"] == {"iam": 4, "peter": 4}
    assert result["counts"]["per_split"]["test"] == {"iam/en": 2, "peter/ru": 1}
    assert result["charset"]["train"] == " abcdefабвг"
    assert result["charset"]["val"] == "аѣ"
    assert result["charset_size"]["test"] == 8
    assert "train" not in result["unseen_in_train"]
    assert [
        (u["char"], u["count"], u["lines"], u["examples"]) for u in result["unseen_in_train"]["val"]
    ] == [("ѣ", 1, 1, ["v1"])]
    test_unseen = {u["char"]: u for u in result["unseen_in_train"]["test"]}
    assert set(test_unseen) == {"ѣ", "i", ","}
    assert test_unseen["ѣ"]["count"] == 2 and test_unseen["ѣ"]["lines"] == 1
    assert test_unseen["ѣ"]["codepoint"] == "U+0463"
    assert test_unseen["ѣ"]["name"] == "CYRILLIC SMALL LETTER YAT"
    assert result["unseen_in_train"]["test"][0]["char"] == "ѣ"  # most frequent first


def test_length_and_image_distributions(folder: Path) -> None:
    result = manifest_stats(folder)
    chars = result["text_chars"]["train"]  # lengths 5, 2, 8, 1
    assert chars == {"n": 4, "min": 1, "p10": 1.3, "median": 3.5, "p90": 7.1, "max": 8, "mean": 4}
    assert result["text_words"]["train"] == {
        "n": 4,
        "min": 1,
        "p10": 1,
        "median": 1.5,
        "p90": 2.7,
        "max": 3,
        "mean": 1.75,
    }
    image = result["image"]["train"]
    assert image["measured"] == 4 and image["unmeasured"] == 0
    assert image["width"]["median"] == 250 and image["height"]["max"] == 40
    assert image["aspect"]["min"] == 5 and image["aspect"]["max"] == 10
    assert result["image"]["test"]["unmeasured"] == 1
    assert result["image"]["test"]["width"] == {
        "n": 2,
        "min": 60,
        "p10": 63,
        "median": 75,
        "p90": 87,
        "max": 90,
        "mean": 75,
    }


def test_distribution_of_nothing_is_all_none() -> None:
    assert distribution([]) == {
        "n": 0,
        "min": None,
        "p10": None,
        "median": None,
        "p90": None,
        "max": None,
        "mean": None,
    }
    assert distribution([7]) == {
        "n": 1,
        "min": 7,
        "p10": 7,
        "median": 7,
        "p90": 7,
        "max": 7,
        "mean": 7,
    }


def test_cli_json_and_tables(folder: Path, run_cli) -> None:
    result = run_cli("data", "stats", folder, "--json")
    assert result.code == 0
    assert json.loads(result.out) == json.loads(json.dumps(manifest_stats(folder)))
    result = run_cli("data", "stats", folder)
    assert result.code == 0
    assert "test: 3 characters never seen in train" in result.out
    assert "CYRILLIC SMALL LETTER YAT" in result.out
    assert "1 images unreadable" in result.out
    # charsets are printed literally (no rich markup eaten)
    assert "аѣ" in result.out


def test_missing_manifest_is_exit_2(tmp_path: Path, run_cli) -> None:
    result = run_cli("data", "stats", tmp_path)
    assert result.code == 2 and "no manifest here" in result.err
