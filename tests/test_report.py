"""The retention report: hand-worked retention and paired CIs, OCR, gate, outputs, bad inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_report_fixtures import (
    YES,
    write_caption,
    write_ocr,
    write_retrieval,
    write_vqa,
)
from vlm_retain.evaluate.metrics.bootstrap import mean_ci
from vlm_retain.report import build_report, write_report
from vlm_retain.report.gate import judge
from vlm_retain.report.load import load_baseline, load_inputs
from vlm_retain.report.retention import Retention, _ratio, task_retention

N = 20
OCR_REFS = [
    ("l1", "the quick fox", "en", "iam"),
    ("l2", "jumps over", "en", "iam"),
    ("l3", "lazy dogs", "en", "synth"),
    ("l4", "славный день", "ru", "peter"),
    ("l5", "царь пётр", "ru", "peter"),
    ("l6", "ѣхалъ", "ru", "synth"),
]


def vqa_rows(wrong: int) -> list[tuple[str, str, list[str]]]:
    """N yes/no items; the last ``wrong`` are answered wrongly."""
    return [(f"q{k:02d}", "no" if k >= N - wrong else "yes", YES) for k in range(N)]


def ocr_rows(errors: dict[str, str]) -> list[tuple[str, str, str, str, str]]:
    """OCR lines, each predicted as its reference unless ``errors`` gives another text."""
    return [(i, ref, errors.get(i, ref), lang, src) for i, ref, lang, src in OCR_REFS]


BASE_OCR_ERRORS = {"l1": "the quick f0x", "l4": "славныи день", "l6": "Ехал"}


def make_eval(
    folder: Path,
    *,
    vqa_wrong: int = 0,
    ocr_errors: dict[str, str] | None = None,
    retrieval_misses: int = 0,
    by: tuple[str, ...] = (),
) -> Path:
    write_vqa(folder, vqa_rows(vqa_wrong))
    write_ocr(folder, ocr_rows(BASE_OCR_ERRORS if ocr_errors is None else ocr_errors), by=by)
    matrix = np.eye(5)
    for k in range(retrieval_misses):  # caption k scores another image higher
        matrix[(k + 1) % 5, k] = 2.0
    write_retrieval(folder, matrix)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """base/, good/ (keeps 95% of VQA, better OCR), bad/ (keeps 75%), as eval folders."""
    root = tmp_path_factory.mktemp("report")
    make_eval(root / "base")
    make_eval(root / "good", vqa_wrong=1, ocr_errors={"l6": "Ехал"})
    make_eval(root / "bad", vqa_wrong=5, ocr_errors={}, retrieval_misses=1)
    return root


@pytest.fixture
def report_cli(run_cli):
    """The real entry point (``report`` is registered in cli/main.py)."""
    return run_cli


# --------------------------------------------------------------------------- retention


def test_retention_hand_worked_with_paired_ci(world: Path) -> None:
    base, good = load_baseline(world / "base"), load_inputs([world / "good"])[0]
    value = task_retention("vqav2", base.tasks["vqav2"], good.tasks["vqav2"], resamples=500, seed=0)
    # Base answers all 20 right, the fine-tuned model 19: retention 19/20, delta -1/20.
    assert value.ratio == pytest.approx(0.95)
    assert value.delta == pytest.approx(-0.05)
    assert value.method == "paired-bootstrap" and value.n_paired == N
    # With every base item scoring 1, each resample's base mean is exactly 1, so the paired
    # ratio of means is the resampled mean of the fine-tuned scores: the same CI as mean_ci.
    tuned = np.array([1.0] * (N - 1) + [0.0])
    assert value.ci95 == pytest.approx(mean_ci(tuned, resamples=500, seed=0))
    assert value.delta_ci95 == pytest.approx([c - 1 for c in value.ci95])


def test_identical_runs_have_a_zero_width_paired_ci(world: Path) -> None:
    base = load_baseline(world / "base")
    value = task_retention("vqav2", base.tasks["vqav2"], base.tasks["vqav2"], resamples=200, seed=0)
    assert value.ratio == 1.0 and value.ci95 == [1.0, 1.0]  # unpaired CIs would be wide


def test_retrieval_retention_from_per_query_hits(world: Path) -> None:
    base, bad = load_baseline(world / "base"), load_inputs([world / "bad"])[0]
    value = task_retention(
        "coco-retrieval", base.tasks["coco-retrieval"], bad.tasks["coco-retrieval"],
        resamples=200, seed=0,
    )  # fmt: skip
    assert value.metric == "t2i_r1"
    assert value.ratio == pytest.approx(0.8) and value.n_paired == 5
    assert value.ci95 is not None and value.ci95[0] <= 0.8 <= value.ci95[1]


def test_missing_predictions_fall_back_to_point_ratio(world: Path, tmp_path: Path) -> None:
    shutil.copytree(world / "good", tmp_path / "good")
    (tmp_path / "good" / "vqav2" / "predictions.jsonl").unlink()
    base, good = load_baseline(world / "base"), load_inputs([tmp_path / "good"])[0]
    value = task_retention("vqav2", base.tasks["vqav2"], good.tasks["vqav2"], resamples=50, seed=0)
    assert value.method == "point-ratio" and value.ci95 is None
    assert value.ratio == pytest.approx(0.95)
    assert "no predictions.jsonl" in (value.note or "")


def test_lower_is_better_retention_is_base_over_finetuned() -> None:
    assert _ratio(0.2, 0.25, higher=False) == pytest.approx(0.8)
    assert _ratio(0.5, 0.4, higher=True) == pytest.approx(0.8)
    assert _ratio(0.0, 0.4, higher=True) is None


def test_gate_uses_the_point_estimate_and_flags_uncertain() -> None:
    def r(ratio: float, ci: list[float] | None) -> Retention:
        return Retention("t", "m", True, 1.0, ratio, ratio, ci)

    verdict = judge({"a/m": r(0.95, [0.90, 0.99]), "b/m": r(1.0, None)}, 0.95)
    assert verdict.status == "PASS" and verdict.uncertain == ["a/m"]
    verdict = judge({"a/m": r(0.9499, [0.96, 0.97]), "b/m": r(1.2, None)}, 0.95)
    assert verdict.status == "FAIL" and verdict.failing == ["a/m"]


@pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need Java")
def test_caption_cider_retention_equals_ratio_of_corpus_cider(tmp_path: Path) -> None:
    refs = [
        ["a dog runs on the grass", "a brown dog running"],
        ["a red car on a street", "a car parked outside"],
        ["two cats sleep on a sofa", "cats sleeping together"],
    ]
    base_rows = [("a", "a dog running on grass", refs[0]), ("b", "a red car", refs[1]),
                 ("c", "two cats on a sofa", refs[2])]  # fmt: skip
    tuned_rows = [("a", "a dog", refs[0]), ("b", "a red car on a street", refs[1]),
                  ("c", "some text", refs[2])]  # fmt: skip
    base = load_baseline(write_caption(tmp_path / "base", base_rows).parent)
    tuned = load_inputs([write_caption(tmp_path / "tuned", tuned_rows).parent])[0]
    value = task_retention("coco", base.tasks["coco"], tuned.tasks["coco"], resamples=100, seed=0)
    assert value.metric == "cider" and value.method == "paired-bootstrap"
    expected = tuned.tasks["coco"].metric("cider") / base.tasks["coco"].metric("cider")
    assert value.ratio == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- OCR


def test_ocr_breakdown_from_results_equals_recomputed(world: Path, tmp_path: Path) -> None:
    with_by = make_eval(tmp_path / "by", ocr_errors={"l6": "Ехал"}, by=("lang", "source"))
    base = load_baseline(world / "base")
    doc_by = build_report([with_by], world / "base", resamples=50)
    doc_re = build_report([world / "good"], world / "base", resamples=50)
    assert "breakdown" in json.loads((with_by / "ocr" / "results.json").read_text())
    assert doc_by["runs"][0]["ocr_by"] == doc_re["runs"][0]["ocr_by"]
    langs = {row["value"]: row for row in doc_re["runs"][0]["ocr_by"]["lang"]}
    assert set(langs) == {"en", "ru"} and langs["en"]["cer"] == 0.0
    assert langs["en"]["cer_relative_change"] == pytest.approx(-1.0)
    ocr = doc_re["runs"][0]["ocr"]
    base_cer = base.tasks["ocr"].metric("cer")
    assert ocr["cer"]["base"] == base_cer
    assert ocr["cer"]["relative_change"] == pytest.approx(
        (ocr["cer"]["value"] - base_cer) / base_cer
    )
    assert len(ocr["cer"]["ci95"]) == 2
    assert {r["value"] for r in doc_re["runs"][0]["ocr_by"]["source"]} == {"iam", "peter", "synth"}


# --------------------------------------------------------------------------- report.json


def test_report_json_schema(world: Path) -> None:
    doc = build_report([world / "good", world / "bad"], world / "base", resamples=100)
    assert doc["schema"] == "vlm-retain/report/1" and doc["floor"] == 0.95
    assert doc["baseline"]["tasks"]["vqav2"]["metrics"]["accuracy"] == 1.0
    assert [run["name"] for run in doc["runs"]] == ["good", "bad"]
    good, bad = doc["runs"]
    for run in doc["runs"]:
        assert set(run) >= {"name", "ocr", "retention", "deltas", "verdict", "failing"}
        assert set(run["ocr"]) == {"cer", "wer", "line_accuracy"}
        assert {"value", "ci95"} <= set(run["ocr"]["cer"])
        assert set(run["retention"]) == {"coco-retrieval/t2i_r1", "vqav2/accuracy", "mean"}
        assert {"ratio", "ci95"} <= set(run["retention"]["vqav2/accuracy"])
        assert "vqav2/accuracy" in run["deltas"] and "coco-retrieval/i2t_r5" in run["deltas"]
    assert good["verdict"] == "PASS" and good["failing"] == []  # 0.95 is at the floor
    assert good["retention"]["mean"] == pytest.approx((0.95 + 1.0) / 2)
    assert bad["verdict"] == "FAIL"
    assert bad["failing"] == ["coco-retrieval/t2i_r1", "vqav2/accuracy"]
    assert bad["deltas"]["vqav2/accuracy"]["delta"] == pytest.approx(-0.25)
    assert doc["summary"] == {"passed": ["good"], "failed": ["bad"]}
    json.dumps(doc, allow_nan=False)  # strict JSON once NaN is mapped to null


# --------------------------------------------------------------------------- CLI and outputs


def test_gate_exit_codes(report_cli, world: Path, tmp_path: Path) -> None:
    ok = report_cli("report", world / "good", "--baseline", world / "base", "--out", tmp_path / "a")
    assert ok.code == 0, ok.err
    assert (tmp_path / "a" / "report.json").is_file()
    bad = report_cli(
        "report", world / "good", world / "bad", "--baseline", world / "base",
        "--out", tmp_path / "b",
    )  # fmt: skip
    assert bad.code == 1
    assert "vqav2/accuracy" in bad.out and "gate FAILED for: bad" in bad.out
    doc = json.loads((tmp_path / "b" / "report.json").read_text())
    assert doc["runs"][1]["verdict"] == "FAIL"  # written even though the gate failed
    lenient = report_cli(
        "report", world / "bad", "--baseline", world / "base", "--out", tmp_path / "c",
        "--min-retention", "0.7",
    )  # fmt: skip
    assert lenient.code == 0


def test_sweep_folder_points_become_runs(report_cli, world: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    points = []
    for alpha, wrong in ((0.0, 0), (0.5, 1), (1.0, 5)):
        folder = sweep / "points" / f"alpha_{alpha:g}" / "eval"
        make_eval(folder, vqa_wrong=wrong, ocr_errors={} if alpha else None)
        points.append({"alpha": alpha, "metrics": {}, "retention": None})
    (sweep / "sweep.json").write_text(json.dumps({"method": "wise-ft", "points": points}))
    result = report_cli("report", sweep, "--baseline", world / "base", "--out", tmp_path / "r")
    assert result.code == 1  # alpha=1 forgets
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [run["name"] for run in doc["runs"]] == ["alpha=0", "alpha=0.5", "alpha=1"]
    assert [run["alpha"] for run in doc["runs"]] == [0.0, 0.5, 1.0]
    assert [run["verdict"] for run in doc["runs"]] == ["PASS", "PASS", "FAIL"]
    assert (tmp_path / "r" / "plots" / "frontier.png").is_file()


def _run_folder(root: Path, source: Path, log: bool) -> Path:
    run = root / ("with-log" if log else "no-log")
    shutil.copytree(source, run / "eval")
    (run / "config.yaml").write_text("seed: 0\n")
    if log:
        lines = [
            {"step": s, "epoch": s / 10, "lr": 1e-4, "ce": 2.0 / s, "kl": 0.1,
             "ce/peter": 2.2 / s, "ce/world": 1.8 / s, "probe/retention": 1 - s / 200}
            for s in range(1, 11)
        ]  # fmt: skip
        (run / "train_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_training_curves_plot_only_losses_and_probes(tmp_path: Path, monkeypatch) -> None:
    """The trainer's real log has counters, learning rates, distances and KL position counts
    beside the losses: only losses go on the loss axis, only probe/... on the probe axis."""
    from tests.test_report_fixtures import EXAMPLE_LOSSES, EXAMPLE_PROBES, example_train_log
    from vlm_retain.report import plots

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(row) + "\n" for row in example_train_log()))
    drawn: list = []
    monkeypatch.setattr(plots, "_png", lambda figure: drawn.append(figure) or b"png")
    assert plots.training_curves(log, "run") == b"png"
    loss_axes, probe_axes = drawn[0].axes

    def series(axes) -> list[str]:  # the named curves (the retention 1.0 line is unnamed)
        return [line.get_label() for line in axes.get_lines() if line.get_label()[0] != "_"]

    assert series(loss_axes) == EXAMPLE_LOSSES
    assert series(probe_axes) == EXAMPLE_PROBES
    assert loss_axes.get_ylabel() == "loss" and probe_axes.get_ylabel() == "probe"
    eval_points = loss_axes.get_lines()[EXAMPLE_LOSSES.index("eval/ce")].get_xdata()
    assert list(eval_points) == [50, 100, 150, 200, 250, 300]  # only the steps that have it
    assert plots.curve_names([{"step": 1, "tokens": 9, "lr/llm": 1e-4, "dist/llm": 2.0}]) == (
        [],
        [],
    )


def test_html_is_self_contained_with_every_section(report_cli, world: Path, tmp_path: Path) -> None:
    runs = [
        _run_folder(tmp_path, world / "good", True),
        _run_folder(tmp_path, world / "bad", False),
    ]
    out = tmp_path / "out"
    result = report_cli(
        "report", *runs, "--baseline", world / "base", "--out", out,
        "--names", "<b>tuned</b>,plain & simple",
    )  # fmt: skip
    assert result.code == 1, result.err
    html = (out / "report.html").read_text(encoding="utf-8")
    for section in ("verdicts", "frontier", "retention", "ocr", "ocr-by", "training", "deltas",
                    "definitions"):  # fmt: skip
        assert f'<section id="{section}">' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "<script" not in html
    assert html.count('src="data:image/png;base64,') == 3  # frontier, bars, one training run
    assert "<b>tuned</b>" not in html and "&lt;b&gt;tuned&lt;/b&gt;" in html
    assert "plain &amp; simple" in html
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for title in ("## Verdicts", "## OCR gain vs retention", "## Retention per benchmark",
                  "## OCR\n", "## OCR by language and source", "## Training curves",
                  "## All metrics", "## Definitions"):  # fmt: skip
        assert title in markdown
    assert "(plots/training-1.png)" in markdown and (out / "plots" / "training-1.png").is_file()
    assert (out / ".vlm-retain.json").is_file()


def test_no_training_section_without_a_log(report_cli, world: Path, tmp_path: Path) -> None:
    run = _run_folder(tmp_path, world / "good", False)
    result = report_cli("report", run, "--baseline", world / "base", "--out", tmp_path / "o")
    assert result.code == 0
    assert 'id="training"' not in (tmp_path / "o" / "report.html").read_text(encoding="utf-8")


def test_output_is_not_replaced_without_overwrite(report_cli, world: Path, tmp_path: Path) -> None:
    args = ["report", world / "good", "--baseline", world / "base", "--out", tmp_path / "o"]
    assert report_cli(*args).code == 0
    again = report_cli(*args)
    assert again.code == 2 and "--overwrite" in again.err
    assert report_cli(*args, "--overwrite").code == 0


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_exit_2_and_write_nothing(report_cli, world: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-base"
    empty.mkdir()
    out = tmp_path / "out"
    missing = report_cli("report", world / "good", "--baseline", empty, "--out", out)
    assert missing.code == 2 and "baseline" in missing.err
    only_ocr = tmp_path / "only-ocr"
    write_ocr(only_ocr, ocr_rows({}))
    unrelated = report_cli("report", only_ocr, "--baseline", world / "base", "--out", out)
    assert unrelated.code == 2 and "no general task in common" in unrelated.err
    names = report_cli(
        "report", world / "good", "--baseline", world / "base", "--out", out, "--names", "a,b"
    )
    assert names.code == 2 and "--names" in names.err
    nowhere = report_cli("report", tmp_path / "nope", "--baseline", world / "base", "--out", out)
    assert nowhere.code == 2
    assert not out.exists()
    write_vqa(tmp_path / "other-task", vqa_rows(0), task="textvqa")
    disjoint = report_cli(
        "report", tmp_path / "other-task", "--baseline", world / "base", "--out", out
    )
    assert disjoint.code == 2 and "no general task in common" in disjoint.err
    # the floor is a share of the base kept: (0, 1], with the sweep's one-line message
    for floor in ("1.5", "0", "-0.2", "nan"):
        bad = report_cli(
            "report", world / "good", "--baseline", world / "base", "--out", out,
            "--min-retention", floor,
        )  # fmt: skip
        assert bad.code == 2, (floor, bad)
        assert "--min-retention must be in (0, 1]" in bad.err, bad.err
        assert bad.err.strip().count("\n") == 0
    assert not out.exists()


def test_write_report_api(world: Path, tmp_path: Path) -> None:
    doc = build_report([world / "good"], world / "base", resamples=50, names=["mine"])
    written = write_report(doc, tmp_path / "r")
    assert {p.name for p in written} >= {"report.json", "report.md", "report.html"}
    assert json.loads((tmp_path / "r" / "report.json").read_text())["runs"][0]["name"] == "mine"


@pytest.mark.skipif(shutil.which("java") is None, reason="the example has caption tasks")
def test_docs_example_still_gives_the_documented_verdicts(tmp_path: Path) -> None:
    from tests.test_report_fixtures import write_example

    folders = write_example(tmp_path)
    doc = build_report(
        [folders["run"], folders["sweep"]], folders["base"], names=["lora-r16", "wise-ft"]
    )
    assert [(r["name"], r["verdict"]) for r in doc["runs"]] == [
        ("lora-r16", "FAIL"),
        ("wise-ft alpha=0.25", "PASS"),
        ("wise-ft alpha=0.5", "PASS"),
        ("wise-ft alpha=0.75", "FAIL"),
    ]
    assert doc["runs"][2]["uncertain"] == ["vqav2/accuracy"]
    assert doc["runs"][2]["retention"]["vqav2/accuracy"]["ratio"] == pytest.approx(35 / 36)
