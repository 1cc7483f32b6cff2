"""`vlm-retain score`: predictions in, results.json out, with the documented exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import read_json
from vlm_retain.evaluate.results import RESULTS_SCHEMA


def _write(path: Path, rows: list) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_score_ocr_writes_the_results_contract(tmp_path: Path, run_cli) -> None:
    rows = [
        {
            "id": "1",
            "prediction": "зело многа",
            "reference": "зело многа",
            "lang": "ru",
            "split": "test",
        },
        {"id": "2", "prediction": "Perche", "reference": "Perché", "lang": "it", "split": "test"},
        {"id": "3", "prediction": "", "reference": "ab", "lang": "it", "split": "test"},
    ]
    preds = _write(tmp_path / "predictions.jsonl", rows)
    out, per_line = tmp_path / "results.json", tmp_path / "lines.csv"
    result = run_cli("score", "ocr", preds, "--out", out, "--by", "lang", "--per-line", per_line)
    assert result.code == 0, result.err
    results = read_json(out)
    assert results["schema"] == RESULTS_SCHEMA and results["task"] == "ocr"
    assert results["split"] == "test" and results["n"] == 3
    # 0 + 1 + 2 edits over 10 + 6 + 2 reference characters
    assert results["metrics"]["cer"] == pytest.approx(3 / 18)
    assert results["metrics"]["line_accuracy"] == pytest.approx(1 / 3)
    low, high = results["ci95"]["cer"]
    assert low <= results["metrics"]["cer"] <= high
    assert set(results["breakdown"]["lang"]) == {"ru", "it"}
    assert results["provenance"]["inputs"][str(preds)].startswith("sha256:")
    assert results["provenance"]["seed"] == 0
    assert results["conventions"]
    with per_line.open(encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    assert "cer" in result.out


def test_score_ocr_reads_llamafactory_predictions_as_they_are(tmp_path: Path, run_cli) -> None:
    preds = _write(
        tmp_path / "generated_predictions.jsonl",
        [
            {"prompt": "p", "predict": "и тако", "label": "и тако"},
            {"prompt": "p", "predict": "и тоже", "label": "и тако"},
        ],
    )
    out = tmp_path / "r.json"
    assert run_cli("score", "ocr", preds, "--out", out).code == 0
    # "и тоже" vs "и тако": three substitutions (о/а, ж/к, е/о) over 6 + 6 reference characters
    assert read_json(out)["metrics"]["cer"] == pytest.approx(3 / 12)


def test_bad_predictions_exit_2_without_a_results_file(tmp_path: Path, run_cli) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        '{"id": "1", "prediction": "a", "reference": "a"}\nnot json\n', encoding="utf-8"
    )
    out = tmp_path / "r.json"
    result = run_cli("score", "ocr", preds, "--out", out)
    assert result.code == 2 and "p.jsonl:2" in result.err
    assert not out.exists()
    preds.write_text("", encoding="utf-8")
    assert run_cli("score", "ocr", preds, "--out", out).code == 2
    assert run_cli("score", "ocr", preds, "--out", out, "--profile", "bogus").code == 2
    assert not out.exists()


def test_score_vqa_warns_about_answer_counts_and_breaks_down_types(tmp_path: Path, run_cli) -> None:
    rows = [
        {"id": "q1", "prediction": "Yes.", "answers": ["yes"] * 10, "answer_type": "yes/no"},
        {
            "id": "q2",
            "prediction": "two",
            "answers": ["2"] * 3 + ["3"] * 7,
            "answer_type": "number",
        },
        {"id": "q3", "prediction": "red", "answers": ["red", "blue"], "answer_type": "other"},
    ]
    out = tmp_path / "r.json"
    result = run_cli("score", "vqa", _write(tmp_path / "p.jsonl", rows), "--out", out)
    assert result.code == 0, result.err
    results = read_json(out)
    assert results["breakdown"]["answer_type"]["yes/no"]["metrics"]["accuracy"] == 1.0
    # "two" -> "2": three of ten annotators -> (3 * 2/3 + 7 * 1) / 10 = 0.9
    assert results["breakdown"]["answer_type"]["number"]["metrics"]["accuracy"] == pytest.approx(
        0.9
    )
    assert results["warnings"] and "warning" in result.err


def test_score_anls(tmp_path: Path, run_cli) -> None:
    rows = [{"id": "d1", "prediction": "Total 42", "answers": ["total 42", "42"]}]
    out = tmp_path / "r.json"
    assert run_cli("score", "anls", _write(tmp_path / "p.jsonl", rows), "--out", out).code == 0
    assert read_json(out)["metrics"]["anls"] == 1.0


def test_score_retrieval_from_a_saved_matrix(tmp_path: Path, run_cli) -> None:
    from vlm_retain.evaluate.metrics.retrieval import save_score_matrix

    scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.3, 0.7, 0.6]])
    texts = [{"id": f"t{j}", "image_id": "a" if j < 2 else "b"} for j in range(4)]
    path = tmp_path / "flickr.npy"
    save_score_matrix(path, scores, ["a", "b"], texts)
    out = tmp_path / "r.json"
    result = run_cli("score", "retrieval", path, "--out", out)
    assert result.code == 0, result.err
    metrics = read_json(out)["metrics"]
    assert metrics["t2i_r1"] == 1.0 and metrics["i2t_r1"] == 1.0
    bad = scores.copy()
    bad[0, 0] = np.nan
    np.save(path, bad)
    result = run_cli("score", "retrieval", path, "--out", tmp_path / "r2.json")
    assert result.code == 2 and not (tmp_path / "r2.json").exists()


@pytest.mark.slow
def test_score_caption_runs_pycocoevalcap_once(tmp_path: Path, run_cli) -> None:
    rows = [
        {
            "id": "1",
            "prediction": "a red square on a white background",
            "references": ["a red square on white", "one red square", "a square that is red"],
        },
        {
            "id": "2",
            "prediction": "two blue circles",
            "references": ["two blue circles side by side", "a pair of blue circles"],
        },
    ]
    out = tmp_path / "r.json"
    result = run_cli("score", "caption", _write(tmp_path / "p.jsonl", rows), "--out", out)
    assert result.code == 0, result.err
    results = read_json(out)
    for name in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider"):
        assert results["metrics"][name] is not None and name in results["ci95"]
    assert results["metrics"]["spice"] is None and "spice" in results["conventions"]


def test_user_text_is_printed_verbatim_and_warnings_are_one_line(tmp_path: Path, run_cli) -> None:
    rows = [
        {"id": "[/q1]", "prediction": "red", "answers": ["red", "blue"], "lang": "[/x]"},
        {"id": "[bold]q2[/bold]", "prediction": "x", "answers": ["x"] * 10, "lang": "[red]"},
    ]
    out = tmp_path / "r[b].json"
    result = run_cli(
        "score", "vqa", _write(tmp_path / "p.jsonl", rows), "--out", out, "--by", "lang"
    )
    assert result.code == 0, result.err
    assert out.is_file() and str(out) in result.out
    warnings = [line for line in result.err.splitlines() if line]
    assert warnings and all(line.startswith("warning: ") for line in warnings)
    assert "[/q1]" in result.err
    assert "[/x]" in result.out and "[red]" in result.out


def test_outputs_may_not_overwrite_the_predictions(tmp_path: Path, run_cli) -> None:
    preds = _write(tmp_path / "p.jsonl", [{"id": "1", "prediction": "a", "reference": "a"}])
    before = preds.read_bytes()
    assert run_cli("score", "ocr", preds, "--out", preds).code == 2
    result = run_cli("score", "ocr", preds, "--out", tmp_path / "r.json", "--per-line", preds)
    assert result.code == 2 and "overwrite" in result.err
    assert preds.read_bytes() == before and not (tmp_path / "r.json").exists()
    (tmp_path / "folder").mkdir()
    result = run_cli(
        "score", "ocr", preds, "--out", tmp_path / "folder", "--per-line", tmp_path / "l.csv"
    )
    assert result.code == 2 and not (tmp_path / "l.csv").exists()


def test_vqa_by_answer_type_and_bad_resamples(tmp_path: Path, run_cli) -> None:
    rows = [{"id": "q", "prediction": "yes", "answers": ["yes"] * 10, "answer_type": "yes/no"}]
    preds = _write(tmp_path / "p.jsonl", rows)
    out = tmp_path / "r.json"
    assert run_cli("score", "vqa", preds, "--out", out, "--by", "answer_type").code == 0
    assert "yes/no" in read_json(out)["breakdown"]["answer_type"]
    assert run_cli("score", "vqa", preds, "--out", out, "--resamples", "0").code == 2
    result = run_cli("score", "vqa", preds, "--out", out, "--by", "langue")
    assert result.code == 0 and "--by langue: no item has this field" in result.err
