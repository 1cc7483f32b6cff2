"""The demo: the data path on every source, then the whole model path with the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_json


def test_demo_data_path_and_rerun(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--data-only")
    assert result.code == 0, result.err
    data = out / "data-path" / "data"
    for name in ("peter", "iam", "lam", "vmlhd", "iam-from-parquet", "peter-from-llamafactory"):
        assert read_json(data / name / "card.json")["total"] > 0
    assert (out / "data-path" / "export" / "llamafactory" / "dataset_info.json").is_file()
    assert "vlm-retain demo" in result.out and "error" not in result.out.lower()
    assert run_cli("demo", "--out", out, "--data-only").code == 2  # exists: needs --overwrite
    assert run_cli("demo", "--out", out, "--data-only", "--overwrite").code == 0
    assert run_cli("data", "purge", out, "--yes").code == 0
    assert not out.exists()


@pytest.mark.slow
def test_demo_model_path_writes_a_complete_report(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out)
    assert result.code == 0, result.err
    model = out / "model-path"
    report = read_json(model / "report" / "report.json")
    assert [run["name"] for run in report["runs"]] == ["lora+replay+kl", "wise-ft 0.5"]
    for run in report["runs"]:
        assert run["verdict"] in ("PASS", "FAIL") and "cer" in run["ocr"]
    html = (model / "report" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    assert (model / "runs" / "lora-replay-kl" / "final" / "adapter_model.safetensors").is_file()
    assert (model / "runs" / "lora-replay-kl" / "train_log.jsonl").is_file()
    for name in ("base", "lora", "lora-wise-ft-0.5"):
        assert (model / "eval" / name / "ocr" / "results.json").is_file()
    assert "model path" in result.out
