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


# ---------------------------------------------------------------- review fixes (issue 5)


def test_run_stopped_while_scoring_resumes_by_scoring(setup, tmp_path: Path, monkeypatch) -> None:
    import vlm_retain.evaluate.runner as runner_module

    root, model = setup
    tasks = discover("ocr", [root / "htr"])
    original_score = runner_module.score_file

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "score_file", stopped)
    with pytest.raises(KeyboardInterrupt):
        Runner(_settings(model), tmp_path, progress=False).run(tasks)
    folder = tmp_path / "ocr"
    assert (folder / "predictions.jsonl").is_file() and not (folder / "results.json").exists()
    stamp = read_json(folder / "predictions.settings.json")
    assert stamp["settings"]["model"] == str(Path(model).resolve())

    monkeypatch.setattr(runner_module, "score_file", original_score)

    def no_generation(self, requests):
        raise AssertionError("complete predictions must not be generated again")

    monkeypatch.setattr(HFBackend, "generate", no_generation)
    # other settings over the complete predictions are refused, naming what differs
    with pytest.raises(Exception, match=r"other settings.*max_new_tokens"):
        Runner(_settings(model, max_new_tokens=3), tmp_path, progress=False).run(tasks)
    # the same model by a relative path is the same settings: scored, nothing generated
    monkeypatch.chdir(Path(model).parent)
    (outcome,) = Runner(_settings(Path(model).name), tmp_path, progress=False).run(tasks)
    assert outcome.status == "done" and outcome.n == 4
    results = read_json(folder / "results.json")
    assert results["provenance"]["timing"]["items"] == 4  # the generation's own record
    assert results["provenance"]["settings"]["dtype"] == "auto"
    (again,) = Runner(_settings(str(model)), tmp_path, progress=False).run(tasks)
    assert again.status == "cached"


def test_settings_record_resolved_local_paths_and_hub_ids_as_given(tmp_path, monkeypatch) -> None:
    from vlm_retain.evaluate.tasks import get_task

    (tmp_path / "m").mkdir()
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    local = EvalSettings(model="m", adapter="./a").for_task(get_task("ocr"))
    assert local["model"] == str(tmp_path.resolve() / "m")
    assert local["adapter"] == str(tmp_path.resolve() / "a")
    hub = EvalSettings(model="Qwen/Qwen2.5-VL-7B-Instruct", dtype="bf16").for_task(get_task("ocr"))
    assert hub["model"] == "Qwen/Qwen2.5-VL-7B-Instruct" and hub["adapter"] is None
    assert hub["dtype"] == "bf16"


def _world_copy(root: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(root / "world", dest)
    return dest


def test_every_task_is_validated_before_any_runs(setup, tmp_path: Path) -> None:
    root, _ = setup
    world = _world_copy(root, tmp_path / "world")
    (world / "karpathy" / "dataset_flickr30k.json").write_text("{", encoding="utf-8")
    tasks = discover("general", [world])
    assert next(iter(tasks)) == "coco"  # coco would run first
    out = tmp_path / "eval"
    # a model that cannot load: the run must stop on the data, before loading or running
    settings = EvalSettings(model=str(tmp_path / "no-model"), limit=2)
    with pytest.raises(Exception, match=r"dataset_flickr30k\.json"):
        Runner(settings, out, progress=False).run(tasks)
    assert not out.exists()


def test_repeated_data_combines_ocr_and_refuses_two_copies(setup, tmp_path: Path) -> None:
    import shutil

    from vlm_retain.evaluate.tasks import get_task

    root, _ = setup
    # the same folder twice (or nested) is one source
    assert discover("ocr", [root / "htr", root / "htr"])["ocr"] == [(root / "htr").resolve()]
    # two OCR manifests: items of both, ids prefixed by folder name when they collide
    other = tmp_path / "other"
    shutil.copytree(root / "htr", other)
    sources = discover("ocr", [root / "htr", other])["ocr"]
    assert len(sources) == 2
    single = get_task("ocr").load([root / "htr"])
    both = get_task("ocr").load(sources)
    assert len(both) == 2 * len(single)
    assert {i.id for i in both} == {f"{f}/{i.id}" for f in ("htr", "other") for i in single}
    assert len({i.id for i in both}) == len(both)
    # same folder name and colliding ids: refused with both paths
    (tmp_path / "x").mkdir()
    shutil.copytree(root / "htr", tmp_path / "x" / "htr")
    with pytest.raises(Exception, match="separate runs"):
        get_task("ocr").load(discover("ocr", [root / "htr", tmp_path / "x"])["ocr"])
    # two copies of a general benchmark: one error naming both, before anything runs
    world = _world_copy(root, tmp_path / "world2")
    with pytest.raises(Exception, match=r"two copies found .*world2") as error:
        discover("general", [root / "world", world])
    assert str(root / "world") in str(error.value) or "world" in str(error.value)
    # loaders themselves never pick one of two copies silently
    coco = [
        root / "world" / "karpathy" / "dataset_coco.json",
        world / "karpathy" / "dataset_coco.json",
    ]
    with pytest.raises(Exception, match=r"several dataset_coco\.json"):
        get_task("coco").load(coco)


def test_broken_gallery_image_is_dropped_with_its_captions(
    setup, tmp_path: Path, monkeypatch
) -> None:
    from vlm_retain.data.benchmarks import BadImage, ImageRef
    from vlm_retain.evaluate.metrics.retrieval import load_score_matrix

    root, model = setup
    tasks = {"coco-retrieval": discover("general", [root / "world"])["coco-retrieval"]}
    original = ImageRef.load
    broken: set[str] = set()

    def load(self):
        if self.key in broken:
            raise BadImage("unreadable image (test)")
        return original(self)

    monkeypatch.setattr(ImageRef, "load", load)
    from vlm_retain.evaluate.tasks import get_task

    task = get_task("coco-retrieval")
    items = task.select(task.load(tasks["coco-retrieval"]), 3, 0)
    assert len(items) >= 2
    broken.add(items[0].image.key)
    out = tmp_path / "one"
    (outcome,) = Runner(_settings(model, limit=3), out, progress=False).run(tasks)
    assert outcome.status == "done" and outcome.errors == 1
    matrix, image_ids, text_ids, text_image = load_score_matrix(
        out / "coco-retrieval" / "scores.npy"
    )
    assert image_ids == [i.id for i in items[1:]]
    kept = len(items) - 1
    assert matrix.shape == (kept, len(text_ids)) and set(text_image) == set(range(kept))
    assert not any(t.startswith(items[0].id + "#") for t in text_ids)
    results = read_json(out / "coco-retrieval" / "results.json")
    assert results["provenance"]["timing"]["errors"] == 1
    assert any("left out with their captions" in w for w in results["warnings"])

    broken.update(i.image.key for i in items)
    (empty,) = Runner(_settings(model, limit=3), tmp_path / "none", progress=False).run(tasks)
    assert empty.status == "empty" and empty.errors == len(items) and empty.n == 0


def test_compare_flags_tasks_with_other_items(setup, tmp_path: Path, run_cli) -> None:
    import shutil

    root, model = setup
    base = tmp_path / "base"
    Runner(_settings(model, limit=2), base, progress=False).run(discover("ocr", [root / "htr"]))
    other = tmp_path / "other"
    shutil.copytree(base, other)
    selection = read_json(other / "ocr" / "selection.json")
    selection["ids"][0] = "somewhere-else"
    selection["seed"] = 1
    (other / "ocr" / "selection.json").write_text(json.dumps(selection), encoding="utf-8")
    assert all(row["same_items"] for row in compare_runs(base, base))
    rows = compare_runs(base, other)
    assert rows and not any(row["same_items"] for row in rows)
    assert "seed 0 vs 1" in rows[0]["item_note"] and "1 shared" in rows[0]["item_note"]
    with pytest.raises(Exception, match="different items"):
        compare_runs(base, other, strict=True)
    result = run_cli("eval", "compare", base, other)
    assert result.code == 0
    assert result.out.count("warning: ocr: the two runs evaluated different items") == 1
    assert "ocr *" in result.out
    assert run_cli("eval", "compare", "--strict", base, other).code == 2


def test_cli_model_options(setup, tmp_path: Path, run_cli, monkeypatch) -> None:
    import vlm_retain.models.loading as loading

    root, model = setup
    seen: dict = {}
    original = loading.load_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(loading, "load_model", spy)
    out = tmp_path / "eval"
    common = ("eval", "ocr", "--model", model, "--data", root / "htr", "--out", out, "-q")
    result = run_cli(*common, "--limit", "1", "--max-new-tokens", "2", "--dtype", "fp32",
                     "--allow-pickle", "--trust-remote-code", "--ignore-adapter-base")  # fmt: skip
    assert result.code == 0, result.err
    assert seen["dtype"] == "fp32" and seen["allow_pickle"] and seen["trust_remote_code"]
    assert seen["strict_adapter_base"] is False
    settings = read_json(out / "ocr" / "results.json")["provenance"]["settings"]
    assert settings["dtype"] == "fp32"
    assert "allow_pickle" not in settings and "trust_remote_code" not in settings
    result = run_cli(*common, "--dtype", "fp8")
    assert result.code == 2 and "--dtype" in result.err
    result = run_cli(*common, "--kv-cache", "paged")
    assert result.code == 2 and "--kv-cache" in result.err
    before = (out / "ocr" / "predictions.jsonl").read_text(encoding="utf-8")
    result = run_cli(*common, "--limit", "1", "--max-new-tokens", "2", "--dtype", "fp32",
                     "--kv-cache", "static", "--overwrite")  # fmt: skip
    assert result.code == 0, result.err
    assert (out / "ocr" / "predictions.jsonl").read_text(encoding="utf-8") == before


def test_complete_predictions_without_stamp_are_refused_before_running(setup, tmp_path) -> None:
    root, _ = setup
    folder = tmp_path / "ocr"
    folder.mkdir()
    (folder / "predictions.jsonl").write_text('{"id": "x"}\n', encoding="utf-8")
    settings = EvalSettings(model=str(tmp_path / "no-model"), limit=2)
    with pytest.raises(Exception, match="without their settings"):
        Runner(settings, tmp_path, progress=False).run(discover("ocr", [root / "htr"]))


def test_task_filter_and_linked_benchmark_folders(setup, tmp_path: Path, run_cli) -> None:
    root, model = setup
    linked = tmp_path / "data"
    linked.mkdir()
    (linked / "world").symlink_to(root / "world", target_is_directory=True)
    out = tmp_path / "eval"
    result = run_cli(
        "eval",
        "general",
        "--model",
        model,
        "--data",
        linked,
        "--out",
        out,
        "--task",
        "vqav2",
        "--limit",
        "2",
        "--max-new-tokens",
        "2",
        "-q",
    )
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["vqav2"]
    result = run_cli(
        "eval", "general", "--model", model, "--data", linked, "--out", out, "--task", "nothing"
    )
    assert result.code == 2 and "--task nothing: not found" in result.err


def test_ocr_prompt_replaces_the_ocr_prompt_only_and_is_recorded(
    setup, tmp_path: Path, run_cli
) -> None:
    from vlm_retain.evaluate.tasks import get_task

    settings = EvalSettings(model="m", ocr_prompt="Read it.")
    assert settings.task("ocr").prompt == "Read it."
    assert settings.task("vqav2").prompt == get_task("vqav2").prompt
    assert EvalSettings(model="m").task("ocr").prompt == get_task("ocr").prompt
    root, model = setup
    out = tmp_path / "e"
    args = ["eval", "ocr", "--model", model, "--data", root / "htr", "--out", out, "--limit", "2"]
    result = run_cli(*args, "--max-new-tokens", "2", "--ocr-prompt", "Read it.", "--quiet")
    assert result.code == 0, result.err
    recorded = read_json(out / "ocr" / "results.json")["provenance"]["settings"]
    assert recorded["prompt"] == "Read it."
    # the prompt is part of the settings: the default prompt over these results is refused
    again = run_cli(*args, "--max-new-tokens", "2", "--quiet")
    assert again.code == 2 and "other settings" in again.err


def test_results_of_the_same_settings_are_reused_from_another_folder(setup, tmp_path) -> None:
    """``reuse``: a task evaluated elsewhere with exactly these settings is copied in, the
    model never loaded; other settings are evaluated afresh and the other folder left alone."""
    root, model = setup
    tasks = {
        **discover("ocr", [root / "htr"]),
        "vqav2": discover("general", [root / "world"])["vqav2"],
    }
    first = tmp_path / "first"
    Runner(_settings(model), first, progress=False).run({"ocr": tasks["ocr"]})
    reused = Runner(_settings(model), tmp_path / "second", progress=False, reuse=[first])
    ocr, vqa = reused.run(tasks)
    assert ocr.status == "cached" and vqa.status == "done"  # vqav2 was never evaluated there
    assert read_json(tmp_path / "second" / "ocr" / "results.json") == read_json(
        first / "ocr" / "results.json"
    )
    assert not list((tmp_path / "second").glob(".*copying"))
    other = Runner(_settings(model, limit=3), tmp_path / "third", progress=False, reuse=[first])
    (fresh,) = other.run({"ocr": tasks["ocr"]})
    assert fresh.status == "done" and fresh.n == 3
    assert read_json(first / "ocr" / "results.json")["n"] == 4
    only_cached = Runner(_settings(model), tmp_path / "fourth", progress=False, reuse=[first])
    only_cached.run({"ocr": tasks["ocr"]})
    assert only_cached._loaded is None  # nothing to evaluate: the model was never loaded


def test_batch_size_is_chosen_by_device_unless_given(setup, tmp_path) -> None:
    from vlm_retain.evaluate.runner import AUTO_BATCH_SIZE

    _, model = setup
    auto = Runner(_settings(model, batch_size=None), tmp_path, progress=False)
    assert auto.batch_size == AUTO_BATCH_SIZE["cpu"] == 16  # the tiny model loads on CPU here
    assert AUTO_BATCH_SIZE["cuda"] == 256
    given = Runner(_settings(model, batch_size=3), tmp_path, progress=False)
    assert given.batch_size == 3 and given._loaded is None  # no model needed to know it
