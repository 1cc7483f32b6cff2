"""Reading predictions files: our contract, LLaMA-Factory's form, and the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlm_retain.data.manifest import Record, write_manifest
from vlm_retain.errors import InputError
from vlm_retain.evaluate.predictions import (
    MISSING,
    field_values,
    manifest_fields,
    read_predictions,
)


def _write(path: Path, rows: list) -> Path:
    path.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    return path


def test_ocr_contract_keeps_fields_for_breakdowns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.jsonl",
        [
            {
                "id": "a",
                "prediction": "Вѣра",
                "reference": "Вера",
                "lang": "ru",
                "meta": {"decade_id": 3},
            },
            {"id": "b", "prediction": None, "reference": "x", "lang": "en"},
        ],
    )
    records = read_predictions(path, "ocr")
    assert [(r.id, r.prediction, r.target) for r in records] == [
        ("a", "Вѣра", "Вера"),
        ("b", "", "x"),
    ]
    assert field_values(records, "lang") == ["ru", "en"]
    assert field_values(records, "meta.decade_id") == ["3", MISSING]
    assert field_values(records, "decade_id") == ["3", MISSING]  # falls back to meta


def test_llamafactory_generated_predictions_are_read_as_they_are(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "generated_predictions.jsonl",
        [
            {"prompt": "<image>Transcribe", "predict": "зело многа", "label": "зело многа"},
            {"prompt": "<image>Transcribe", "predict": "", "label": "и тако"},
        ],
    )
    records = read_predictions(path, "ocr")
    assert [r.id for r in records] == ["line-000001", "line-000002"]
    assert records[1].target == "и тако"
    with pytest.raises(InputError, match="can be scored as ocr, not vqa"):
        read_predictions(path, "vqa")


def test_vqa_answers_accept_the_vqav2_dict_form(tmp_path: Path) -> None:
    answers = [{"answer": "yes", "answer_id": i} for i in range(1, 11)]
    path = _write(tmp_path / "p.jsonl", [{"id": 1, "prediction": "Yes.", "answers": answers}])
    (record,) = read_predictions(path, "vqa")
    assert record.id == "1" and record.target == ["yes"] * 10


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no predictions"),
        (
            ['{"id": "a", "prediction": "x", "reference": "y"}', "{oops"],
            r"p.jsonl:2: not a JSON line",
        ),
        ([{"id": "a", "prediction": "x"}], r"p.jsonl:1 \(field 'reference'\): missing field"),
        (
            [{"id": "a", "prediction": 3, "reference": "y"}],
            r"field 'prediction'\): expected a string",
        ),
        (
            [{"id": "a", "prediction": "x", "reference": "y"}] * 2,
            r"p.jsonl:2 \(field 'id'\): duplicate id 'a' \(first on line 1\)",
        ),
        (["[1, 2]"], "expected a JSON object"),
    ],
)
def test_bad_inputs_name_file_and_line(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_predictions(_write(tmp_path / "p.jsonl", rows), "ocr")


def test_caption_references_must_be_a_non_empty_list(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [{"id": "a", "prediction": "x", "references": []}])
    with pytest.raises(InputError, match="expected a non-empty list"):
        read_predictions(path, "caption")


def test_breakdown_fields_can_come_from_a_manifest(tmp_path: Path) -> None:
    write_manifest(
        tmp_path / "manifest.jsonl",
        [
            Record.create(
                id="a",
                image="a.png",
                text="t",
                lang="it",
                source="lam",
                split="test",
                meta={"decade_id": 5},
            ),
        ],
    )
    path = _write(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prediction": "t", "reference": "t"},
            {"id": "z", "prediction": "t", "reference": "t"},
        ],
    )
    records = read_predictions(path, "ocr")
    joined = manifest_fields(tmp_path)
    assert field_values(records, "meta.decade_id", joined) == ["5", MISSING]
    assert field_values(records, "source", joined) == ["lam", MISSING]


def test_llamafactory_line_without_label_and_odd_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [{"prompt": "p", "predict": "x"}])
    with pytest.raises(InputError, match=r"field 'label'\): missing field"):
        read_predictions(path, "ocr")
    path = _write(tmp_path / "p.jsonl", [{"id": None, "prediction": "x", "reference": "y"}])
    with pytest.raises(InputError, match=r"field 'id'\): expected a string or an integer"):
        read_predictions(path, "ocr")


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"id": "a", "prediction": "x", "reference": "x"}).encode()
    )
    assert read_predictions(path, "ocr")[0].id == "a"
