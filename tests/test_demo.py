"""The demo runs the whole data path on every source and reports a clean check for each."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import read_json


def test_demo_runs_end_to_end_and_can_be_rerun(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out)
    assert result.code == 0, result.err
    for name in ("peter", "iam", "lam", "vmlhd", "iam-from-parquet", "peter-from-llamafactory"):
        card = read_json(out / "data" / name / "card.json")
        assert card["total"] > 0
    assert (out / "export" / "llamafactory" / "dataset_info.json").is_file()
    assert "vlm-retain demo" in result.out and "error" not in result.out.lower()
    assert run_cli("demo", "--out", out).code == 2  # exists: needs --overwrite
    assert run_cli("demo", "--out", out, "--overwrite").code == 0
    assert run_cli("data", "purge", out, "--yes").code == 0
    assert not out.exists()
