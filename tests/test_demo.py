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
def test_demo_quick_from_the_shipped_base_writes_a_complete_report(tmp_path: Path, run_cli) -> None:
    from vlm_retain.demo import recipe

    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--quick")
    assert result.code == 0, result.err
    model = out / "model-path"
    report = read_json(model / "report" / "report.json")
    names = [r.name for r in recipe.RECIPES] + ["WiSE-FT 0.5"]
    assert [run["name"] for run in report["runs"]] == names
    for run in report["runs"]:
        assert run["verdict"] in ("PASS", "FAIL") and "cer" in run["ocr"]
        assert {"vqav2", "coco", "coco-retrieval"} <= {k.split("/")[0] for k in run["retention"]}
    html = (model / "report" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    assert (model / "sweep" / "pareto.png").is_file()
    for chosen in recipe.RECIPES:
        assert (model / "runs" / chosen.slug / "train_log.jsonl").is_file()
        assert (model / "eval" / chosen.slug / "print" / "ocr" / "results.json").is_file()
    summary = read_json(model / "report" / "summary.json")
    assert [row["model"] for row in summary["rows"]] == ["base", *names]
    assert all(isinstance(row["vqa_accuracy"], float) for row in summary["rows"])
    assert len(summary["targets"]) == 5
    assert all(isinstance(t["met"], bool) for t in summary["targets"])
    table = (model / "report" / "summary.md").read_text(encoding="utf-8")
    assert table.startswith("| model |") and "WiSE-FT 0.5" in table
    assert "forgetting and its cure" in result.out


def _row(model: str, cer: float, retention: float, **extra: float) -> dict:
    return {
        "model": model,
        "manuscript_cer": cer,
        "manuscript_exact": extra.get("exact", 0.2),
        "print_cer": extra.get("print_cer"),
        "vqa_accuracy": extra.get("vqa", 0.9),
        "retention": retention,
    }


def test_targets_are_decided_on_the_rows() -> None:
    from vlm_retain.demo.summary import check_targets

    rows = [
        _row("base", 0.8, 1.0, print_cer=0.1, vqa=0.9),
        _row("full FT", 0.3, 0.6),
        _row("LoRA+replay+KL", 0.4, 0.97),
        _row("L2-SP", 0.6, 0.99),
    ]
    met = {t["target"]: (t["met"], t["measured"]) for t in check_targets(rows)}
    assert all(flag for flag, _ in met.values())
    assert met["a recipe keeps >= 0.95 with CER within 1.5x of full FT"][1] == "LoRA+replay+KL"
    rows[0]["print_cer"] = 0.5  # hands not twice as hard as print
    rows[1]["manuscript_exact"] = 0.0  # no line exactly right
    rows[1]["retention"] = 0.9  # no visible forgetting
    rows[2]["retention"] = 0.94
    rows[0]["vqa_accuracy"] = None  # not measured: never "met"
    assert not any(t["met"] for t in check_targets(rows))


def test_a_missing_base_fails_before_any_work(tmp_path: Path, run_cli) -> None:
    result = run_cli("demo", "--out", tmp_path / "demo", "--base", tmp_path / "nope")
    assert result.code == 2
    assert "model folder not found" in result.err and "\n" not in result.err.strip()
    assert "data path" not in result.out  # nothing ran
    assert not (tmp_path / "demo").exists()


def test_recipes_start_in_the_planned_order_and_new_ones_last():
    from vlm_retain.demo import recipe
    from vlm_retain.demo.forgetting import START_ORDER, _start_rank

    assert sorted(r.slug for r in recipe.RECIPES) == sorted(START_ORDER)
    assert START_ORDER[0] == recipe.FULL_FT  # the sweep waits for it
    assert _start_rank("a-recipe-added-later") == len(START_ORDER)
