"""The WiSE-FT sweep: the choice rule on fixtures, alphas parsing, and a small real sweep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_merge_fixtures import lora_adapter, tiny_base
from vlm_retain.errors import InputError
from vlm_retain.merge.select import choose_point, gate, mean_retention, retention_ratio
from vlm_retain.merge.sweep import parse_alphas, point_name


def _point(alpha: float, cer: float | None, **retention: float | None) -> dict:
    return {"alpha": alpha, "ocr_score": cer, "retention": retention}


POINTS = [
    _point(0.0, 0.60, vqa=1.0, cider=1.0),
    _point(0.3, 0.40, vqa=0.99, cider=0.97),
    _point(0.6, 0.25, vqa=0.96, cider=0.95),  # the best CER that still passes (0.95 >= 0.95)
    _point(0.8, 0.20, vqa=0.97, cider=0.93),  # better CER, but cider under the floor
    _point(1.0, 0.15, vqa=0.80, cider=0.70),
]


def test_choose_point_picks_best_ocr_within_the_floor() -> None:
    choice = choose_point(POINTS, 0.95)
    assert choice.alpha == 0.6
    assert choice.passing == [0.0, 0.3, 0.6]
    assert "alpha 0.6" in choice.reason and "0.2500" in choice.reason
    # a lower floor admits alpha 0.8; a floor of 0.9 cuts out alpha 1 still
    assert choose_point(POINTS, 0.93).alpha == 0.8
    assert choose_point(POINTS, 0.5).alpha == 1.0


def test_choose_point_ties_none_and_direction() -> None:
    tied = [_point(0.4, 0.3, vqa=0.96), _point(0.5, 0.3, vqa=0.99), _point(0.6, 0.3, vqa=0.99)]
    assert choose_point(tied, 0.95).alpha == 0.5  # higher mean retention, then smaller alpha
    failing = [_point(0.5, 0.3, vqa=0.9), _point(1.0, 0.2, vqa=0.8)]
    choice = choose_point(failing, 0.95)
    assert choice.alpha is None and "closest is alpha 0.5" in choice.reason
    assert "vqa" in choice.reason
    # line accuracy: higher is better
    acc = [_point(0.0, 0.1, vqa=1.0), _point(0.5, 0.4, vqa=0.97), _point(1.0, 0.6, vqa=0.9)]
    assert choose_point(acc, 0.95, lower_is_better=False).alpha == 0.5
    base_only = [_point(0.0, 0.5, vqa=1.0), _point(1.0, 0.7, vqa=0.99)]
    choice = choose_point(base_only, 0.95)
    assert choice.alpha == 0.0 and "base itself" in choice.reason


def test_retention_and_gate_rules() -> None:
    assert retention_ratio(0.45, 0.5, True) == pytest.approx(0.9)
    assert retention_ratio(0.3, 0.0, True) is None  # base scores 0: undefined, ungated
    assert retention_ratio(0.2, 0.1, False) == pytest.approx(0.5)
    assert gate({"a": 0.96, "b": None, "c": 0.94}, 0.95) == (False, ["c"])
    assert gate({"a": 0.95}, 0.95) == (True, [])
    assert mean_retention({"a": 0.9, "b": None, "c": 1.0}) == pytest.approx(0.95)


def test_parse_alphas() -> None:
    assert parse_alphas("0.5,1") == [0.0, 0.5, 1.0]
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("0:1:0.1")[3] == 0.3
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        parse_alphas("0,1.2")
    with pytest.raises(InputError, match="cannot read"):
        parse_alphas("a,b")
    assert point_name(0.3) == "alpha_0.30" and point_name(0.125) == "alpha_0.125"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vlm_retain.data.synthetic.htr import HtrOptions, synth_htr
    from vlm_retain.data.synthetic.world import WorldOptions, synth_world

    root = tmp_path_factory.mktemp("sweep")
    synth_htr(root / "htr", HtrOptions(langs=("en",), per_lang=20, workers=1), progress=False)
    synth_world(root / "world", WorldOptions(n=20, workers=1), progress=False)
    base = tiny_base(root)
    adapter = lora_adapter(base, root / "lora")
    return root, base, adapter


def test_sweep_bad_inputs(world, tmp_path: Path, run_cli) -> None:
    root, base, adapter = world
    common = ["sweep", "wise-ft", "--base", base, "--out", tmp_path / "s", "--limit", "2"]
    cases = [
        (["--adapter", adapter, "--eval-data", root / "htr", "--alphas", "0,2"], "[0, 1]"),
        (["--eval-data", root / "htr"], "exactly one of"),
        (["--adapter", adapter, "--eval-data", root / "htr"], "general benchmarks"),
        (["--adapter", adapter, "--eval-data", root / "world"], "OCR manifest"),
        (["--adapter", adapter, "--eval-data", root / "htr", "--ocr-metric", "bleu"], "bleu"),
        (
            ["--adapter", adapter, "--eval-data", root / "htr", "--min-retention", "1.5"],
            "--min-retention must be in (0, 1], got 1.5",
        ),
        (
            [
                "--adapter",
                adapter,
                "--eval-data",
                root / "htr",
                "--eval-data",
                root / "world",
                "--task",
                "nope",
            ],
            "no general task 'nope'",
        ),
    ]
    for args, message in cases:
        result = run_cli(*common, *args)
        assert result.code == 2, (args, result)
        assert message in result.err and result.err.strip().count("\n") == 0, result.err


def test_small_sweep_end_to_end(world, tmp_path: Path, run_cli) -> None:
    from tests.test_merge_fixtures import perturbed

    root, base, _ = world
    finetuned = perturbed(base, tmp_path / "ft")
    out = tmp_path / "sweep"
    args = [
        "sweep", "wise-ft", "--base", base, "--finetuned", finetuned, "--alphas", "0.5,1",
        "--eval-data", root / "htr", "--eval-data", root / "world", "--out", out,
        "--limit", "2", "--max-new-tokens", "3", "--resamples", "20", "-q",
        "--task", "vqav2",
    ]  # fmt: skip
    result = run_cli(*args)
    assert result.code == 0, result.err
    doc = json.loads((out / "sweep.json").read_text())
    assert [p["alpha"] for p in doc["points"]] == [0.0, 0.5, 1.0]
    assert (out / "pareto.png").stat().st_size > 1000
    base_point = doc["points"][0]
    assert base_point["adapter"] is None and base_point["model"] == str(base)
    assert all(v in (1.0, None) for v in base_point["retention"].values())
    assert doc["points"][1]["model"].endswith("alpha_0.50/model")
    assert doc["points"][2]["model"] == str(finetuned)
    for point in doc["points"]:
        assert point["ocr_score"] is not None and "cer" in point["ocr"]
        assert (out / point["eval"] / "ocr" / "results.json").is_file()
    assert doc["chosen"]["alpha"] in doc["chosen"]["passing"]
    assert doc["tasks"] == ["vqav2"]
    assert set(base_point["retention"]) == {"vqav2/accuracy"}
    assert "chosen:" in result.out
    # a rerun reuses every point's results (nothing is rebuilt or re-evaluated)
    stamp = (out / "points" / "alpha_0.50" / "model" / "merge.json").stat().st_mtime_ns
    again = run_cli(*args)
    assert again.code == 0, again.err
    assert (out / "points" / "alpha_0.50" / "model" / "merge.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "sweep.json").read_text())["points"] == doc["points"]

    # the fine-tuned model replaced at the same path: the merged point is rebuilt, and the
    # points made from it (alpha 0.5 and 1) are re-evaluated; the base point is reused
    def results_stamp(alpha: str) -> int:
        return (out / "points" / alpha / "eval" / "ocr" / "results.json").stat().st_mtime_ns

    stamps = {a: results_stamp(a) for a in ("alpha_0.00", "alpha_0.50", "alpha_1.00")}
    old_hash = _input_hash(out / "points" / "alpha_0.50" / "model", "finetuned")
    shutil.rmtree(finetuned)
    perturbed(base, finetuned, seed=7, std=0.2)
    third = run_cli(*args)
    assert third.code == 0, third.err
    assert _input_hash(out / "points" / "alpha_0.50" / "model", "finetuned") != old_hash
    assert results_stamp("alpha_0.00") == stamps["alpha_0.00"]
    assert results_stamp("alpha_0.50") != stamps["alpha_0.50"]
    assert results_stamp("alpha_1.00") != stamps["alpha_1.00"]
    recorded = json.loads((out / "points" / "alpha_1.00" / "inputs.json").read_text())
    assert [i["role"] for i in recorded["inputs"]] == ["finetuned"]


def _input_hash(point: Path, role: str) -> dict:
    record = json.loads((point / "merge.json").read_text())
    return next(i["weights"] for i in record["inputs"] if i["role"] == role)


@pytest.mark.slow
def test_small_adapter_sweep(world, tmp_path: Path, run_cli) -> None:
    root, base, adapter = world
    out = tmp_path / "sweep"
    result = run_cli(
        "sweep", "wise-ft", "--base", base, "--adapter", adapter, "--alphas", "0.5,1",
        "--eval-data", root / "htr", "--eval-data", root / "world", "--out", out,
        "--limit", "2", "--max-new-tokens", "3", "--resamples", "20", "-q",
        "--task", "vqav2",
    )  # fmt: skip
    assert result.code == 0, result.err
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["points"][1]["adapter"].endswith("alpha_0.50/adapter")
    assert doc["points"][2]["adapter"] == str(adapter)


def test_sweep_reuses_evaluations_of_its_ends(world, tmp_path: Path) -> None:
    """``reuse_eval``: the base's results, made earlier with the sweep's own settings, are
    copied into the alpha 0 point instead of evaluated again."""
    from vlm_retain.evaluate.runner import EvalSettings, Runner, discover
    from vlm_retain.merge.sweep import SweepSpec, run_sweep

    root, base, adapter = world
    earlier = tmp_path / "base-eval"
    tasks = {**discover("ocr", [root / "htr"])}
    tasks["vqav2"] = discover("general", [root / "world"])["vqav2"]
    settings = EvalSettings(model=str(base), limit=2, max_new_tokens=3, resamples=20)
    Runner(settings, earlier, progress=False).run(tasks)
    spec = SweepSpec(
        base=str(base), finetuned=None, adapter=adapter, alphas=[0.5],
        eval_data=[root / "htr", root / "world"], out=tmp_path / "sweep", limit=2,
        max_new_tokens=3, resamples=20, tasks=("vqav2",), reuse_eval={0.0: earlier},
    )  # fmt: skip
    run_sweep(spec, progress=False)
    point = tmp_path / "sweep" / "points" / "alpha_0.00" / "eval"
    for task in ("ocr", "vqav2"):
        copied = json.loads((point / task / "results.json").read_text())
        assert copied == json.loads((earlier / task / "results.json").read_text())
    # the point at 0.5 (another model) was evaluated, not copied
    half = tmp_path / "sweep" / "points" / "alpha_0.50" / "eval" / "ocr" / "results.json"
    assert json.loads(half.read_text())["provenance"]["settings"]["adapter"].endswith(
        "alpha_0.50/adapter"
    )
