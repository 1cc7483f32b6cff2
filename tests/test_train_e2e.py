"""End to end on a tiny Qwen2.5-VL: every tuning mode, every objective, the probe, the
retention floor, the log, and the saved result loading back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_json, read_jsonl
from tests.test_train_trainer import base_config, make_data
from vlm_retain.train.config import config_from_dict
from vlm_retain.train.trainer import TrainHooks, train

QUIET = TrainHooks(console=None)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("e2e-data"))


def _run(paths: dict[str, Path], out: Path, hooks: TrainHooks = QUIET, **sections: Any) -> Any:
    raw = base_config(paths, out, **sections)
    raw["data"]["max_pixels"] = 28 * 28 * 8
    return train(config_from_dict(raw), hooks=hooks)


@pytest.mark.parametrize(
    "mode", ["full", "lora", "dora", "llm-attn", "llm-mlp-gate-up", "llm-all+projector"]
)
def test_each_tuning_mode_trains_and_saves(data: dict[str, Path], tmp_path: Path, mode: str):
    from vlm_retain.models.loading import load_model

    tuning: dict[str, Any] = {"mode": mode}
    if mode == "llm-all+projector":
        tuning["lr"] = {"projector": 2e-3}
    outcome = _run(data, tmp_path / "run", tuning=tuning, train={"max_steps": 2})
    final = tmp_path / "run" / "final"
    summary = read_json(tmp_path / "run" / "train_summary.json")
    assert summary["steps"] == 2 and summary["stopped_early"] is None
    if mode in ("lora", "dora"):
        assert (final / "adapter_model.safetensors").is_file()
        loaded = load_model(data["model"], adapter=final, device="cpu")
        assert loaded.adapter == final
    else:
        assert (final / "model.safetensors").is_file()
        loaded = load_model(final, device="cpu")
        assert outcome.summary["final_kind"] == "model"
    expected = {"llm-all+projector": ["projector", "llm"], "full": None}.get(mode, ["llm"])
    if expected is not None:
        assert summary["components"] == expected
    records = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    if mode == "llm-all+projector":
        assert records[0]["lr/projector"] == pytest.approx(2e-3)
        assert records[0]["lr/llm"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("objectives", "part"),
    [
        ({}, None),
        ({"kl_to_base": {"weight": 0.5, "top_k": 16}}, "kl"),
        ({"l2sp": {"weight": 0.1}}, "l2sp"),
        ({"ewc": {"weight": 1.0, "samples": 3}}, "ewc"),
    ],
)
def test_each_objective_is_logged(data, tmp_path: Path, objectives: dict, part: str | None):
    if "ewc" in objectives:
        objectives["ewc"]["cache_dir"] = str(tmp_path / "fisher")
    outcome = _run(data, tmp_path / "run", objectives=objectives, train={"max_steps": 3})
    records = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert outcome.summary["objectives"] == ["ce"] + ([part] if part else [])
    assert all("ce" in r and "total" in r for r in records)
    if part is not None:
        assert all(part in r for r in records)
        assert records[-1][part] >= 0
    if part == "kl":
        # step 1's KL is measured before the first update (~0); after it the model has moved
        assert records[0]["kl"] == pytest.approx(0.0, abs=1e-5)
        assert any(r["kl"] > 1e-6 for r in records[1:]), [r["kl"] for r in records]
    if part in ("l2sp", "ewc"):
        assert records[0][part] == 0.0  # at the start the weights are the anchor
        assert records[-1][part] > 0.0
    if part == "ewc":
        assert outcome.summary["fisher"]["cached"] is False
        again = _run(data, tmp_path / "again", objectives=objectives, train={"max_steps": 1})
        assert again.summary["fisher"]["cached"] is True


@pytest.mark.slow
def test_loss_decreases_on_a_learnable_set(data: dict[str, Path], tmp_path: Path) -> None:
    from vlm_retain.data.manifest import Record, read_manifest, write_manifest

    easy = tmp_path / "easy"
    records = [
        Record.create(
            id=r.id,
            image=str(r.image_path(data["htr"]).resolve()),
            text="yes",
            lang="en",
            source="easy",
            split="train",
        )
        for r in read_manifest(data["htr"] / "manifest.jsonl")[:8]
    ]
    write_manifest(easy / "manifest.jsonl", records)
    raw = base_config(data, tmp_path / "run", tuning={"mode": "full"})
    raw["data"] = {"target": [{"manifest": str(easy)}], "max_pixels": 28 * 28 * 4}
    raw["train"].update({"max_steps": 24, "lr": 3e-3, "save_every_steps": 100})
    train(config_from_dict(raw), hooks=QUIET)
    ce = [r["ce"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl")]
    assert sum(ce[-4:]) / 4 < 0.5 * sum(ce[:4]) / 4


def test_probe_and_log_contents(data: dict[str, Path], tmp_path: Path) -> None:
    from vlm_retain.cli.train import generator, probe_suite

    hooks = TrainHooks(probe_suite=probe_suite, generator=generator, console=None)
    probe = {"data": str(data["world"]), "every_steps": 2, "limit": 6}
    held_out = {"eval": {"manifest": str(data["htr"]), "split": "val", "limit": 4}}
    outcome = _run(data, tmp_path / "run", hooks=hooks, probe=probe, **{"data": held_out})
    records = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    first = records[0]
    for key in ("epoch", "lr", "lr/llm", "ce", "total", "tokens", "grad_norm"):
        assert key in first, key
    assert any(k.startswith("ce/") for r in records for k in r)  # per-source CE
    for r in records[1::2]:  # probe steps 2 and 4
        for key in ("probe/score", "probe/retention", "probe/kl_to_base", "dist/llm", "eval/ce"):
            assert key in r, (r["step"], key)
        assert r["probe/kl_to_base"] >= 0
    assert records[-1]["dist/llm"] > 0
    assert "probe/score" not in records[0]
    assert outcome.summary["probe"]["base"]["probe/retention"] == 1.0
    assert (tmp_path / "run" / "config.yaml").is_file()


def _fake_suite(scores: list[float]) -> Any:
    """A probe whose score follows ``scores``: [base, probe 1, probe 2, ...]."""
    from vlm_retain.train.probe import ProbeItem, ProbeSuite

    calls = iter(scores)

    def make_generator(loaded: Any) -> Any:
        value = next(calls)
        return lambda images, prompts: [str(value)] * len(prompts)

    def factory(probe: Any, loaded: Any) -> ProbeSuite:
        return ProbeSuite(
            items=[ProbeItem("q1", "fake", None, "Say a number.", ("1",))],
            generator=make_generator,
            score=lambda prediction, answers: float(prediction),
        )

    return factory


def test_retention_floor_stops_and_keeps_the_last_good_state(data, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    hooks = TrainHooks(probe_suite=_fake_suite([1.0, 0.95, 0.5]), console=None)
    probe = {"data": str(data["world"]), "every_steps": 2, "retention_floor": 0.9}
    train_keys = {"max_steps": 8, "save_every_steps": 100, "keep_checkpoints": 1}
    outcome = _run(data, tmp_path / "run", hooks=hooks, probe=probe, train=train_keys)
    stopped = outcome.summary["stopped_early"]
    assert stopped["reason"] == "retention_floor"
    assert (stopped["step"], stopped["kept_step"]) == (4, 2)
    assert stopped["retention"] == pytest.approx(0.5)
    assert outcome.summary["final_step"] == 2
    assert len(read_jsonl(tmp_path / "run" / "train_log.jsonl")) == 4  # stopped at step 4
    kept = load_file(
        str(tmp_path / "run" / "checkpoints" / "step-000002" / "trainable.safetensors")
    )
    final = load_file(str(tmp_path / "run" / "final" / "adapter_model.safetensors"))
    lora_a = next(k for k in kept if "lora_A" in k)
    saved = [v for k, v in final.items() if "lora_A" in k and k.split(".lora_A")[0] in lora_a]
    assert any((v == kept[lora_a]).all() for v in saved)


def test_floor_breached_at_the_first_probe_keeps_the_start(data, tmp_path: Path) -> None:
    hooks = TrainHooks(probe_suite=_fake_suite([1.0, 0.1]), console=None)
    probe = {"data": str(data["world"]), "every_steps": 2, "retention_floor": 0.9}
    outcome = _run(
        data, tmp_path / "run", hooks=hooks, probe=probe, train={"save_every_steps": 100}
    )
    assert outcome.summary["stopped_early"]["kept_step"] == 0
    assert outcome.summary["final_step"] == 0


def test_failure_before_training_leaves_no_run_folder(data, tmp_path: Path) -> None:
    from vlm_retain.errors import InputError

    with pytest.raises(InputError, match="replay"):
        _run(data, tmp_path / "run", data={"replay": [{"manifest": str(tmp_path / "nothing")}]})
    assert not (tmp_path / "run").exists()


def _weights(folder: Path) -> dict[str, Any]:
    from vlm_retain.models.loading import load_model

    loaded = load_model(folder, device="cpu")
    return loaded, {n: p.detach().clone() for n, p in loaded.model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["llm-attn+vision", "llm-attn+vision-top-1"])
def test_vision_presets_train_exactly_the_vision_parameters_they_name(data, tmp_path, mode):
    from vlm_retain.models.registry import module_groups
    from vlm_retain.train.presets import vision_top_k_params

    _run(data, tmp_path / "run", tuning={"mode": mode}, train={"max_steps": 2})
    base_loaded, base = _weights(data["model"])
    _, final = _weights(tmp_path / "run" / "final")
    vision = module_groups(base_loaded.model, base_loaded.family)["vision"]
    named = set(vision)
    if mode.endswith("top-1"):
        named = set(vision_top_k_params(base_loaded.model, base_loaded.family, 1))
        assert named and len(named) < len(vision)
    changed = {n for n in vision if not (final[n] == base[n]).all()}
    assert changed == named, sorted(changed ^ named)[:5]
    summary = read_json(tmp_path / "run" / "train_summary.json")
    assert summary["components"] == ["vision", "llm"]


def test_ewc_fisher_is_estimated_again_when_the_inputs_change(data, tmp_path: Path) -> None:
    """The Fisher's cache key covers what the model sees: the pixel budget and the replay's
    tasks (a stale Fisher would anchor the wrong weights silently)."""
    ewc = {"ewc": {"weight": 1.0, "samples": 2, "cache_dir": str(tmp_path / "fisher")}}

    def run(name: str, max_pixels: int, tasks: list[str] | None = None) -> Any:
        raw = base_config(data, tmp_path / name, objectives=ewc, train={"max_steps": 1})
        raw["data"]["max_pixels"] = max_pixels
        if tasks:
            raw["data"]["replay"][0]["tasks"] = tasks
        return train(config_from_dict(raw), hooks=QUIET).summary["fisher"]

    first = run("a", 28 * 28 * 8)
    assert first["cached"] is False
    assert run("b", 28 * 28 * 8)["cached"] is True
    smaller = run("c", 28 * 28 * 2)  # the world's 56x56 scenes now shrink
    assert smaller["cached"] is False and smaller["path"] != first["path"]
    captions = run("d", 28 * 28 * 8, tasks=["caption"])
    assert captions["cached"] is False and captions["path"] != first["path"]


def test_overwrite_then_early_crash_leaves_no_half_written_folder(data, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _run(data, run_dir, train={"max_steps": 1})
    assert (run_dir / "final").is_dir()

    def crash(step: int) -> None:
        raise RuntimeError(f"simulated crash at step {step}")

    hooks = TrainHooks(on_step=crash, console=None)
    raw = base_config(data, run_dir, train={"max_steps": 4, "save_every_steps": 100})
    raw["data"]["max_pixels"] = 28 * 28 * 8
    with pytest.raises(RuntimeError, match="simulated crash at step 1"):
        train(config_from_dict(raw), overwrite=True, hooks=hooks)
    assert not run_dir.exists()  # the old run was replaced by design; nothing half-written
