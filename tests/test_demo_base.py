"""``demo build-base``: the base recipe, run at reduced scale, learns; the shipped base is whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import read_json
from vlm_retain.demo import recipe
from vlm_retain.demo.base import RECIPE_FILE, SCORES_FILE, SHIPPED_BASE, shipped_base


def _mean(rows: list[dict], key: str) -> float:
    values = [row[key] for row in rows if key in row]
    return sum(values) / len(values)


@pytest.mark.slow
def test_base_recipe_learns_at_reduced_scale(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "base"
    result = run_cli("demo", "build-base", "--out", out, "--scale", "test", "--keep-work")
    assert result.code == 0, result.err
    for name in ("config.json", "model.safetensors", "tokenizer.json", RECIPE_FILE, SCORES_FILE):
        assert (out / name).is_file(), name
    scores = read_json(out / SCORES_FILE)
    assert scores["scale"] == "test"
    for key in ("vqa_accuracy", "caption_cider", "retrieval_r1", "print_cer", "manuscript_cer"):
        assert isinstance(scores[key], float), key
    made = read_json(out / RECIPE_FILE)
    assert made["plan"]["steps"] == recipe.BASE_SCALES["test"].steps
    assert made["data"]["world"]["kinds"] == list(recipe.WORLD.kinds)
    assert "max_steps: 200" in made["train_config_yaml"]
    log = [
        json.loads(line)
        for line in (out / "work" / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    reading = [
        json.loads(line)
        for line in (out / "work" / "read" / "train_log.jsonl").read_text().splitlines()
    ]
    assert "max_steps: 60" in made["read_config_yaml"] and "synth-world" not in str(reading)
    assert made["data"]["print"]["words"] == [1, 3]
    # The curriculum learns: printed words alone first, then the world's answers and captions
    # while the printed words keep improving.
    assert _mean(reading[-10:], "ce/synth-htr") < 0.6 * _mean(reading[:10], "ce/synth-htr")
    head, tail = log[:20], log[-20:]
    assert _mean(tail, "ce/synth-world") < 0.5 * _mean(head, "ce/synth-world")
    assert _mean(tail, "ce/synth-htr") < _mean(reading[-10:], "ce/synth-htr")
    probes = [row["probe/score"] for row in log if "probe/score" in row]
    evals = [row["eval/ce"] for row in log if "eval/ce" in row]
    assert probes[-1] > 0.3 and evals[-1] < evals[0]
    # The base's scores are the evaluation runner's, on held-out data.
    results = read_json(out / "work" / "eval" / "main" / "vqav2" / "results.json")
    assert results["metrics"]["accuracy"] == pytest.approx(scores["vqa_accuracy"], abs=1e-4)
    assert run_cli("demo", "build-base", "--out", out, "--scale", "test").code == 2  # exists


def test_unknown_scale_is_one_clear_error(tmp_path: Path, run_cli) -> None:
    result = run_cli("demo", "build-base", "--out", tmp_path / "b", "--scale", "huge")
    assert result.code == 2 and "--scale" in result.err
    assert not (tmp_path / "b").exists()


def test_shipped_base_is_complete_with_recipe_and_scores() -> None:
    folder = shipped_base()
    assert folder == SHIPPED_BASE
    scores = read_json(folder / SCORES_FILE)
    made = read_json(folder / RECIPE_FILE)
    assert scores["scale"] == made["scale"] == "shipped"
    assert made["plan"] == json.loads(json.dumps(recipe.BASE_SCALES["shipped"].__dict__))
    config = read_json(folder / "config.json")
    assert config["model_type"] == "qwen2_5_vl"
    assert (folder / "model.safetensors").stat().st_size < 8 * 2**20
