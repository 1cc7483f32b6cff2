"""Exact resume: a run killed mid-way and resumed ends with the same weights as one that ran
straight through (CPU, same seed); a checkpoint from another config is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_train_trainer import base_config, make_data
from vlm_retain.errors import InputError
from vlm_retain.train.config import config_from_dict
from vlm_retain.train.trainer import TrainHooks, train


class Crash(Exception):
    """Stands in for a killed process."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("resume-data"))


def _config(data: dict[str, Path], out: Path, **train: Any) -> Any:
    # LoRA dropout (RNG), KL on replay (reference), grad accumulation across epoch ends
    raw = base_config(data, out, objectives={"kl_to_base": {"weight": 0.5}})
    raw["train"].update({"max_steps": 6, "grad_accum": 2, "save_every_steps": 2, **train})
    return config_from_dict(raw)


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    import torch

    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name


def _crash_after(step: int) -> TrainHooks:
    def on_step(s: int) -> None:
        if s == step:
            raise Crash(f"killed after step {s}")

    return TrainHooks(on_step=on_step, console=None)


def test_killed_and_resumed_equals_uninterrupted(data: dict[str, Path], tmp_path: Path) -> None:
    straight = train(_config(data, tmp_path / "a"), hooks=TrainHooks(console=None))
    with pytest.raises(Crash):
        train(_config(data, tmp_path / "b"), hooks=_crash_after(3))  # last checkpoint: step 2
    assert (tmp_path / "b" / "checkpoints" / "step-000002").is_dir()
    resumed = train(_config(data, tmp_path / "b"), resume=True, hooks=TrainHooks(console=None))
    assert resumed.summary["resumed_from"].endswith("step-000002")
    _assert_same(_weights(straight.final), _weights(resumed.final))
    from tests.conftest import read_jsonl

    log_a = read_jsonl(tmp_path / "a" / "train_log.jsonl")
    log_b = read_jsonl(tmp_path / "b" / "train_log.jsonl")
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]  # the killed run's step 3 replaced
    assert [r["ce"] for r in log_a] == pytest.approx([r["ce"] for r in log_b], abs=1e-6)


@pytest.mark.slow
def test_longer_max_steps_on_resume(data: dict[str, Path], tmp_path: Path) -> None:
    """A finished run extended with a larger max_steps ends like a run that was that long from
    the start (constant schedule: the horizon does not change the learning rates)."""
    constant = {"scheduler": "constant", "save_every_steps": 3}
    straight = train(_config(data, tmp_path / "a", **constant), hooks=TrainHooks(console=None))
    short = {**constant, "max_steps": 4, "save_every_steps": 2}
    train(_config(data, tmp_path / "b", **short), hooks=TrainHooks(console=None))
    resumed = train(
        _config(data, tmp_path / "b", **{**short, "max_steps": 6}),
        resume=True,
        hooks=TrainHooks(console=None),
    )
    _assert_same(_weights(straight.final), _weights(resumed.final))


def test_resume_with_another_config_is_refused(data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(Crash):
        train(_config(data, tmp_path / "r"), hooks=_crash_after(2))
    with pytest.raises(InputError, match=r"another config \(differs in train\.lr\)"):
        train(_config(data, tmp_path / "r", lr=5e-4), resume=True, hooks=TrainHooks(console=None))
