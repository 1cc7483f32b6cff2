"""The evaluation runner on a tiny model: tasks found, predictions resumable, results written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import read_json, read_jsonl
from vlm_retain.evaluate.generate.hf import HFBackend
from vlm_retain.evaluate.runner import EvalSettings, Runner, compare_runs, discover


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vlm_retain.data.synthetic.htr import HtrOptions, synth_htr
    from vlm_retain.data.synthetic.world import WorldOptions, synth_world
    from vlm_retain.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("eval")
    model = build_tiny("qwen2_5_vl", root / "tiny", size="xs")
    synth_htr(root / "htr", HtrOptions(langs=("en", "ru"), per_lang=20, workers=1), progress=False)
    synth_world(root / "world", WorldOptions(n=20, workers=1), progress=False)
    return root, model


def _settings(model: Path, **overrides) -> EvalSettings:
    values = {"model": str(model), "limit": 4, "max_new_tokens": 4, "batch_size": 2}
    values.update(overrides)
    return EvalSettings(**values)


def test_discover_finds_ocr_and_general_tasks(setup) -> None:
    root, _ = setup
    assert set(discover("ocr", [root / "htr"])) == {"ocr"}
    general = discover("general", [root / "world"])
    assert {"vqav2", "coco", "flickr30k", "coco-retrieval"} <= set(general)
    with pytest.raises(Exception, match="found no OCR manifest"):
        discover("ocr", [root / "world"])


def test_ocr_and_vqa_write_predictions_and_results(setup, tmp_path: Path) -> None:
    root, model = setup
    tasks = {
        **discover("ocr", [root / "htr"]),
        "vqav2": discover("general", [root / "world"])["vqav2"],
    }
    outcomes = Runner(_settings(model), tmp_path, progress=False).run(tasks)
    assert [o.task for o in outcomes] == ["ocr", "vqav2"]
    for outcome in outcomes:
        folder = tmp_path / outcome.task
        lines = read_jsonl(folder / "predictions.jsonl")
        selection = read_json(folder / "selection.json")
        assert len(lines) == outcome.n == selection["n"] == 4
        assert [line["id"] for line in lines] == selection["ids"]
        results = read_json(folder / "results.json")
        assert results["model"]["family"] == "qwen2_5_vl"
        assert results["provenance"]["timing"]["items"] == 4
        assert results["provenance"]["settings"]["max_new_tokens"] == 4
    assert "reference" in lines[0] or "answers" in lines[0]
    # a second run with the same settings reuses the results; other settings are refused
    again = Runner(_settings(model), tmp_path, progress=False).run(tasks)
    assert {o.status for o in again} == {"cached"}
    with pytest.raises(Exception, match="other settings"):
        Runner(_settings(model, limit=3), tmp_path, progress=False).run(tasks)
    rows = compare_runs(tmp_path, tmp_path)
    assert rows and all(row["delta"] == 0 for row in rows)


def test_interrupted_run_resumes_without_redoing_work(setup, tmp_path: Path, monkeypatch) -> None:
    root, model = setup
    tasks = discover("ocr", [root / "htr"])
    reference = tmp_path / "reference"
    Runner(_settings(model), reference, progress=False).run(tasks)

    original = HFBackend.generate
    seen: list[str] = []

    def interrupted(self, requests):
        for count, result in enumerate(original(self, requests)):
            if count == 2:
                raise KeyboardInterrupt
            seen.append(result.id)
            yield result

    monkeypatch.setattr(HFBackend, "generate", interrupted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Runner(_settings(model), run, progress=False).run(tasks)
    assert (run / "ocr" / "predictions.jsonl.partial").is_file()
    assert not (run / "ocr" / "results.json").exists()

    resumed: list[str] = []

    def counting(self, requests):
        resumed.extend(r.id for r in requests)
        yield from original(self, requests)

    monkeypatch.setattr(HFBackend, "generate", counting)
    Runner(_settings(model), run, progress=False).run(tasks)
    assert not set(resumed) & set(seen[:2])  # written before the interruption, not redone
    assert read_jsonl(run / "ocr" / "predictions.jsonl") == read_jsonl(
        reference / "ocr" / "predictions.jsonl"
    )


def test_cli_eval_and_compare(setup, tmp_path: Path, run_cli) -> None:
    root, model = setup
    out = tmp_path / "eval"
    result = run_cli(
        "eval",
        "ocr",
        "--model",
        model,
        "--data",
        root / "htr",
        "--out",
        out,
        "--limit",
        "2",
        "--max-new-tokens",
        "3",
        "-q",
        "--gpu-cost-per-hour",
        "2.5",
    )
    assert result.code == 0, result.err
    assert "ocr" in result.out and "cer" in result.out
    timing = read_json(out / "ocr" / "results.json")["provenance"]["timing"]
    assert timing["cost"] is not None and timing["cost"] >= 0
    result = run_cli("eval", "compare", out, out)
    assert result.code == 0 and "cer" in result.out
    result = run_cli("eval", "general", "--model", model, "--data", root / "htr", "--out", out)
    assert result.code == 2 and "found no benchmark files" in result.err
    result = run_cli(
        "eval",
        "ocr",
        "--model",
        tmp_path / "nothing",
        "--data",
        root / "htr",
        "--out",
        tmp_path / "e2",
    )
    assert result.code == 2


@pytest.mark.slow
def test_general_tasks_including_captions_and_retrieval(setup, tmp_path: Path) -> None:
    root, model = setup
    tasks = discover("general", [root / "world"])
    outcomes = Runner(_settings(model, limit=2), tmp_path, progress=False).run(tasks)
    by_task = {o.task: o for o in outcomes}
    assert by_task["coco"].metrics["cider"] is not None
    assert 0.0 <= by_task["coco-retrieval"].metrics["t2i_r1"] <= 1.0
    assert (tmp_path / "coco-retrieval" / "scores.npy").is_file()
    settings = json.loads((tmp_path / "coco-retrieval" / "scores.settings.json").read_text())
    assert settings["task"] == "coco-retrieval"
