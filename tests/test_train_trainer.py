"""The trainer's parts: run-folder rules, resume compatibility, retention floor, OOM advice,
accelerate configs, and the CLI's config check before anything loads.

``make_data`` and ``base_config`` are shared with the end-to-end and resume tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vlm_retain.errors import InputError
from vlm_retain.train.config import config_from_dict

REPO = Path(__file__).resolve().parents[1]


# --- shared helpers --------------------------------------------------------------------------


def make_data(root: Path) -> dict[str, Path]:
    """A tiny Qwen2.5-VL, a few synthetic English lines and a small synthetic world (seconds)."""
    from vlm_retain.data.synthetic.htr import HtrOptions, synth_htr
    from vlm_retain.data.synthetic.world import WorldOptions, synth_world
    from vlm_retain.models.tiny import build_tiny

    paths = {"model": root / "model", "htr": root / "htr", "world": root / "world"}
    build_tiny("qwen2_5_vl", paths["model"], size="xs")
    synth_htr(
        paths["htr"], HtrOptions(langs=("en",), per_lang=16, workers=1, height=28), progress=False
    )
    synth_world(
        paths["world"],
        WorldOptions(n=16, workers=1, sign_share=0.0, image_size=56, sign_image_size=168),
        progress=False,
    )
    return paths


def base_config(paths: dict[str, Path], out: Path, **sections: Any) -> dict[str, Any]:
    """A small valid config dict: LoRA, 25 % world replay, 4 steps of batch 4."""
    raw: dict[str, Any] = {
        "model": {"path": str(paths["model"])},
        "tuning": {"mode": "lora"},
        "data": {
            "target": [{"manifest": str(paths["htr"])}],
            "replay": [{"world": str(paths["world"])}],
            "replay_share": 0.25,
        },
        "train": {
            "output_dir": str(out),
            "max_steps": 4,
            "batch_size": 4,
            "lr": 1e-3,
            "save_every_steps": 2,
            "warmup_ratio": 0.0,
        },
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return raw


# --- run folder ------------------------------------------------------------------------------


def test_existing_run_folder_is_refused(tmp_path: Path) -> None:
    from vlm_retain.train.trainer import check_run_dir

    run = tmp_path / "run"
    assert check_run_dir(run, resume=False, overwrite=False) is None  # absent: fine
    run.mkdir()
    assert check_run_dir(run, resume=False, overwrite=False) is None  # empty: fine
    (run / "config.yaml").write_text("x: 1\n")
    with pytest.raises(InputError, match=r"already holds a run.*--resume"):
        check_run_dir(run, resume=False, overwrite=False)
    assert check_run_dir(run, resume=False, overwrite=True) is None
    with pytest.raises(InputError, match="contradict"):
        check_run_dir(run, resume=True, overwrite=True)


def test_overwrite_refuses_a_foreign_folder(tmp_path: Path) -> None:
    from vlm_retain.train.trainer import check_run_dir

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not written by vlm-retain"):
        check_run_dir(tmp_path, resume=False, overwrite=True)


def test_resume_needs_a_run(tmp_path: Path) -> None:
    from vlm_retain.train.trainer import check_run_dir

    with pytest.raises(InputError, match="nothing to resume"):
        check_run_dir(tmp_path / "absent", resume=True, overwrite=False)


# --- resume compatibility --------------------------------------------------------------------


def _cfg(tmp_path: Path, **train: Any) -> Any:
    data = {"model": tmp_path, "htr": tmp_path, "world": tmp_path}
    raw = base_config(data, tmp_path / "run")
    raw["train"].update(train)
    return config_from_dict(raw)


def test_resume_hash_ignores_length_and_reporting(tmp_path: Path) -> None:
    from vlm_retain.train.checkpoint import config_differences, resume_hash
    from vlm_retain.train.config import resolve

    a = _cfg(tmp_path)
    assert resume_hash(a) == resume_hash(_cfg(tmp_path, max_steps=400, keep_checkpoints=5))
    assert resume_hash(a) == resume_hash(_cfg(tmp_path, output_dir=str(tmp_path / "moved")))
    b = _cfg(tmp_path, lr=5e-4)
    assert resume_hash(a) != resume_hash(b)
    assert config_differences(resolve(a), resolve(b)) == ["train.lr"]


def test_resume_refusal_lists_every_key_allowed_to_change(tmp_path: Path) -> None:
    import re

    from vlm_retain.train.checkpoint import RESUME_FREE_KEYS, check_compatible, resume_hash
    from vlm_retain.train.config import resolve

    old = _cfg(tmp_path)
    state = {"resume_hash": resume_hash(old), "config": resolve(old), "num_processes": 1}
    with pytest.raises(InputError, match=r"differs in train\.lr") as info:
        check_compatible(state, _cfg(tmp_path, lr=5e-4), tmp_path, 1)
    for key in RESUME_FREE_KEYS:
        assert key in str(info.value), key
    # a checkpoint from a version that had no packing key and hashed the speed settings
    older = resolve(old)
    del older["train"]["packing"]
    state = {"resume_hash": "sha256:older", "config": older, "num_processes": 1}
    check_compatible(state, _cfg(tmp_path), tmp_path, 1)
    with pytest.raises(InputError, match=r"differs in train\.lr"):
        check_compatible(state, _cfg(tmp_path, lr=5e-4), tmp_path, 1)
    with pytest.raises(InputError, match=r"not recorded"):
        check_compatible({"resume_hash": "x", "num_processes": 1}, _cfg(tmp_path), tmp_path, 1)
    docs = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    paragraph = docs[docs.index("A checkpoint written with another config") :].split("\n\n")[0]
    documented = set(re.findall(r"`([a-z_.]+)`", paragraph.split("may change")[0]))
    assert documented == set(RESUME_FREE_KEYS)


def test_model_adapter_is_refused_before_anything_loads(tmp_path: Path) -> None:
    from vlm_retain.train.trainer import train

    raw = base_config({"model": tmp_path / "m", "htr": tmp_path, "world": tmp_path}, tmp_path / "r")
    raw["model"]["adapter"] = str(tmp_path / "adapter")
    with pytest.raises(InputError, match=r"model\.adapter.*not supported.*merge-into-base"):
        train(config_from_dict(raw))
    assert not (tmp_path / "r").exists()


class _FakePlugin:
    """What ``accelerator.state.deepspeed_plugin`` exposes: the live DeepSpeed config dict, as
    accelerate's default ZeRO-2 plugin fills it from configs/accelerate/deepspeed-zero2.yaml."""

    def __init__(self) -> None:
        self.deepspeed_config = {
            "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "zero_optimization": {"stage": 2},
        }


def test_deepspeed_config_gets_batch_accumulation_and_clipping_from_the_run(tmp_path: Path):
    from vlm_retain.train.trainer import configure_deepspeed

    assert configure_deepspeed(None, _cfg(tmp_path), 1) == {}  # no DeepSpeed: nothing to do
    plugin = _FakePlugin()
    config = _cfg(tmp_path, batch_size=3, grad_accum=4, max_grad_norm=0.5)
    configure_deepspeed(plugin, config, 2)
    ds = plugin.deepspeed_config
    assert ds["train_micro_batch_size_per_gpu"] == 3  # accelerate refuses "auto" w/o a loader
    assert ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 3 * 4 * 2
    assert ds["gradient_clipping"] == 0.5  # accelerate would fill "auto" with 1.0
    assert ds["zero_optimization"] == {"stage": 2}
    plugin = _FakePlugin()
    configure_deepspeed(plugin, _cfg(tmp_path, max_grad_norm=None), 1)
    assert plugin.deepspeed_config["gradient_clipping"] == 0.0  # DeepSpeed: no clipping


def test_grad_norm_is_null_when_deepspeed_reports_none() -> None:
    import contextlib

    import torch

    from vlm_retain.train.trainer import _optimizer_step

    class Accel:
        from accelerate.utils import DistributedType

        sync_gradients = True
        distributed_type = DistributedType.NO

        def accumulate(self, model):
            return contextlib.nullcontext()

        def backward(self, loss):
            loss.backward()

        def clip_grad_norm_(self, params, max_norm):
            return None  # DeepSpeed without a norm to report

    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    batch = {"attention_mask": torch.ones(1, 2)}
    parts, tokens, grad_norm = _optimizer_step(
        Accel(),
        lambda **kw: None,
        optimizer,
        [],
        [(0, 0, [batch])],
        None,
        [weight],
        1.0,
        lambda objectives, b, out, scale: ((weight**2).sum(), {"ce": 1.0, "total": 1.0}),
        lambda model, b: model(),
        lambda b, loaded: b,
    )
    assert grad_norm is None and tokens == 2 and parts == {"ce": [1.0], "total": [1.0]}


def test_retention_watch_keeps_the_last_good_step() -> None:
    from vlm_retain.train.probe import ProbeResult, RetentionWatch, retention

    assert retention(0.5, 1.0) == 0.5
    assert retention(0.0, 0.0) == 1.0  # nothing to lose
    watch = RetentionWatch(0.9)
    assert not watch.observe(ProbeResult(10, 0.95, {}, retention=0.95))
    assert not watch.observe(ProbeResult(20, 0.9, {}, retention=0.9))  # at the floor is good
    assert watch.observe(ProbeResult(30, 0.5, {}, retention=0.5))
    assert (watch.last_good_step, watch.breached_at) == (20, 30)
    assert not RetentionWatch(None).observe(ProbeResult(1, 0.0, {}, retention=0.0))


# --- precision, memory -----------------------------------------------------------------------


def test_precision_on_cpu() -> None:
    from vlm_retain.train.trainer import mixed_precision, weights_dtype

    assert mixed_precision("auto", "cpu") == "no"
    assert mixed_precision("fp32", "cpu") == "no"
    with pytest.raises(InputError, match="no GPU"):
        mixed_precision("bf16", "cpu")
    assert weights_dtype("auto", "fp16") == "fp32"
    assert weights_dtype("auto", "bf16") == "auto"


def test_out_of_memory_says_what_to_lower(tmp_path: Path) -> None:
    from vlm_retain.train.trainer import is_oom, oom_error

    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_oom(RuntimeError("shape mismatch"))
    message = str(oom_error(_cfg(tmp_path), checkpointing=False))
    for key in ("train.chunk_rows (now 4", "data.max_pixels", "train.gradient_checkpointing"):
        assert key in message
    message = str(oom_error(_cfg(tmp_path), checkpointing=True, chunk_rows=1))
    assert "train.batch_size (now 4" in message and "gradient_checkpointing" not in message
    assert InputError("x").exit_code == 2


# --- accelerate configs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "distributed_type", "keys"),
    [
        ("ddp.yaml", "MULTI_GPU", ["num_processes", "mixed_precision"]),
        ("deepspeed-zero2.yaml", "DEEPSPEED", ["deepspeed_config"]),
        ("deepspeed-zero3.yaml", "DEEPSPEED", ["deepspeed_config"]),
        ("fsdp.yaml", "FSDP", ["fsdp_config"]),
    ],
)
def test_accelerate_configs_parse(name: str, distributed_type: str, keys: list[str]) -> None:
    config = yaml.safe_load((REPO / "configs" / "accelerate" / name).read_text())
    assert config["compute_environment"] == "LOCAL_MACHINE"
    assert config["distributed_type"] == distributed_type
    for key in keys:
        assert key in config
    if distributed_type == "DEEPSPEED":
        stage = int(name.split("zero")[1][0])
        assert config["deepspeed_config"]["zero_stage"] == stage
        # left out so accelerate fills it from train.grad_accum ("auto")
        assert "gradient_accumulation_steps" not in config["deepspeed_config"]
    if distributed_type == "FSDP":
        assert config["fsdp_config"]["fsdp_version"] == 2


# --- the CLI checks the config before loading anything ---------------------------------------


def test_cli_config_error_names_the_key_before_loading(tmp_path: Path, monkeypatch) -> None:
    import vlm_retain.models.loading as loading
    from vlm_retain.cli import train as train_cli

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model must not load for a bad config")

    monkeypatch.setattr(loading, "load_model", boom)
    config = tmp_path / "c.yaml"
    raw = base_config({"model": tmp_path, "htr": tmp_path, "world": tmp_path}, tmp_path / "r")
    raw["train"]["lrr"] = 1
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=r"train\.lrr: unknown key") as info:
        train_cli.train(config=config, set_=[], resume=False, overwrite=False, quiet=True)
    assert info.value.exit_code == 2
    del raw["train"]["lrr"]
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=r"train\.scheduler"):
        train_cli.train(
            config=config, set_=["train.scheduler=wavy"], resume=False, overwrite=False, quiet=True
        )
    assert not (tmp_path / "r").exists()


def test_cli_main_exit_code_when_registered(tmp_path: Path, run_cli) -> None:
    from vlm_retain.cli.main import app

    names = {getattr(c, "name", None) for c in app.registered_commands}
    if "train" not in names:
        pytest.skip("train is not registered in cli/main.py yet")
    config = tmp_path / "c.yaml"
    config.write_text("model: {path: x}\n")
    result = run_cli("train", config)
    assert result.code == 2
    assert "data: required key is missing" in result.err
