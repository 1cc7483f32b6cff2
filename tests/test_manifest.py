"""The manifest contract: clean text, validation, unique ids, atomic writes, clear errors."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from vlm_retain.data.card import SkipLog, build_card, charset
from vlm_retain.data.manifest import Record, read_manifest, write_manifest
from vlm_retain.data.splits import grouped_split
from vlm_retain.errors import InputError
from vlm_retain.fsutil import read_marker, staged_output_dir, write_marker
from vlm_retain.text import clean_text


def _record(**overrides: object) -> Record:
    fields = dict(id="a", image="img/a.png", text="text", lang="en", source="iam", split="train")
    fields.update(overrides)
    return Record.create(**fields)  # type: ignore[arg-type]


def test_clean_text_is_nfc_stripped_and_single_spaced() -> None:
    raw = "  " + unicodedata.normalize("NFD", "Ёлка  и\tйод") + " \n"
    assert clean_text(raw) == "Ёлка и йод"
    assert unicodedata.is_normalized("NFC", clean_text(raw))
    assert clean_text("Perché  città") == "Perché città"


def test_round_trip_keeps_unicode_and_meta(tmp_path: Path) -> None:
    records = [
        _record(id="1", text="Вѣра і Ѳома", lang="ru", meta={"decade_id": 3}),
        _record(id="2", text="مرحبا بالعالم", lang="ar", split="test"),
    ]
    path = tmp_path / "manifest.jsonl"
    assert write_manifest(path, records) == 2
    assert "Вѣра" in path.read_text(encoding="utf-8")  # not \u-escaped
    assert read_manifest(tmp_path) == records


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="duplicate id 'a'"):
        write_manifest(tmp_path / "m.jsonl", [_record(), _record()])
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"split": "dev"}, "split 'dev'"),
        ({"lang": "rus"}, "ISO 639-1"),
        ({"task": "seg"}, "task 'seg'"),
    ],
)
def test_invalid_fields_name_the_field(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        write_manifest(tmp_path / "m.jsonl", [_record(**override)])


def test_reading_malformed_lines_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    good = _record().to_json()
    path.write_text(good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"manifest.jsonl:2: malformed JSON"):
        read_manifest(path)
    path.write_text(json.dumps({"id": "x", "image": "a", "text": "t", "lang": "en"}) + "\n")
    with pytest.raises(InputError, match=r":1 \(field 'source'\): missing field"):
        read_manifest(path)
    obj = json.loads(good) | {"extra": 1}
    path.write_text(json.dumps(obj) + "\n")
    with pytest.raises(InputError, match="field 'extra'"):
        read_manifest(path)


def test_unclean_text_is_an_error_only_in_strict_mode(tmp_path: Path) -> None:
    obj = json.loads(_record().to_json()) | {"text": unicodedata.normalize("NFD", "йод ")}
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="not clean"):
        read_manifest(path)
    assert read_manifest(path, strict=False)[0].text == obj["text"]


def test_card_counts_charset_and_skips(tmp_path: Path) -> None:
    records = [_record(id="1", text="ab"), _record(id="2", text="bc", split="test", lang="it")]
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, records)
    skipped = SkipLog()
    for n in range(7):
        skipped.add("empty transcription", f"x{n}")
    card = build_card(
        records,
        manifest_file=manifest,
        importer="t",
        options={"p": tmp_path},
        source_path=tmp_path,
        skipped=skipped,
    )
    assert card["counts"] == {"train": {"en": 1}, "test": {"it": 1}}
    assert card["charset"] == "abc" == charset(["ab", "bc"])
    assert card["skipped"]["empty transcription"] == {
        "count": 7,
        "examples": ["x0", "x1", "x2", "x3", "x4"],
    }
    assert card["importer"]["options"] == {"p": str(tmp_path)}


def test_staged_output_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output_dir(out) as staging:
        (staging / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_output_dir(out) as staging:
        write_marker(staging, "test")
    assert read_marker(out) == {"tool": "vlm-retain", "kind": "test"}


def test_staged_output_dir_refuses_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with (
        pytest.raises(InputError, match="not written by vlm-retain"),
        staged_output_dir(tmp_path / "mine", overwrite=True),
    ):
        pass
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_grouped_split_is_deterministic_and_keeps_groups_whole() -> None:
    groups = [f"form{n}" for n in range(40)]
    first = grouped_split(groups, seed=1, val_frac=0.1, test_frac=0.2)
    assert first == grouped_split(reversed(groups), seed=1, val_frac=0.1, test_frac=0.2)
    counts = {s: list(first.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 28, "val": 4, "test": 8}
    assert first != grouped_split(groups, seed=2, val_frac=0.1, test_frac=0.2)
    with pytest.raises(InputError, match="--val-frac"):
        grouped_split(groups, seed=0, val_frac=1.5, test_frac=0.0)
