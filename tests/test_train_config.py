"""The run config: example configs validate, unknown keys and contradictions are named errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlm_retain.errors import InputError
from vlm_retain.train.config import (
    CONFIG_NAME,
    DEFAULT_OCR_PROMPT,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_hash,
    load_config,
    resolve,
    save_resolved,
)

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def minimal(**sections) -> dict:
    raw = {
        "model": {"path": "m"},
        "data": {"target": [{"manifest": "t"}]},
        "train": {"output_dir": "out"},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(InputError) as info:
        config_from_dict(raw, source="c.yaml")
    return str(info.value)


def test_there_are_example_configs_for_every_required_recipe():
    names = {p.stem for p in CONFIGS}
    assert {
        "tiny-demo",
        "qwen2.5-vl-3b-lora-peter",
        "qwen2.5-vl-7b-lora-peter",
        "multilingual-replay-kl",
        "preset-llm-attn",
        "preset-llm-mlp-gate-up",
        "preset-llm-all",
        "preset-llm-attn+projector",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_validates_and_round_trips(path, tmp_path):
    config = load_config(path)
    saved = save_resolved(config, tmp_path)
    assert saved.name == CONFIG_NAME
    again = load_config(saved)
    assert again == config
    assert config_hash(again) == config_hash(config)


def test_peter_recipe_is_the_current_workflow():
    config = load_config(next(p for p in CONFIGS if p.stem == "qwen2.5-vl-7b-lora-peter"))
    assert config.tuning.mode == "lora"
    assert config.tuning.lora is not None
    assert (config.tuning.lora.r, config.tuning.lora.alpha) == (64, 128)
    assert config.tuning.lora.targets == ["llm"]
    assert (config.train.lr, config.train.scheduler) == (5e-4, "cosine")


def test_defaults_are_filled_and_documented():
    config = config_from_dict(minimal())
    resolved = resolve(config)
    assert resolved["tuning"]["lora"] == {
        "r": 16,
        "alpha": 32.0,
        "dropout": 0.05,
        "targets": ["llm"],
    }
    assert resolved["data"]["prompt"] == DEFAULT_OCR_PROMPT
    assert resolved["train"]["report_to"] == ["none"]
    assert resolved["objectives"]["kl_to_base"]["weight"] == 0
    assert resolved["model"]["trust_remote_code"] is False
    for section in RunConfig.model_fields.values():
        model = section.annotation
        for name, field in getattr(model, "model_fields", {}).items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_train_uses_the_evaluation_prompt():
    from vlm_retain.evaluate.generate.prompts import DEFAULT_OCR_PROMPT as EVAL_PROMPT

    assert DEFAULT_OCR_PROMPT == EVAL_PROMPT


def test_unknown_keys_name_the_path_and_the_allowed_keys():
    message = error_of(minimal(data={"target": [{"manifest": "t", "wieght": 2}]}))
    assert "c.yaml" in message
    assert "data.target[0].wieght: unknown key" in message
    assert "allowed keys: manifest, split, tasks, weight, name" in message
    message = error_of({**minimal(), "optim": {}})
    assert "optim: unknown key" in message and "model, tuning, data" in message


def test_bad_values_name_the_key_and_the_allowed_values():
    message = error_of(minimal(train={"output_dir": "o", "scheduler": "cosin"}))
    assert "train.scheduler" in message and "'cosine'" in message and "cosin" in message
    message = error_of(minimal(data={"target": [{"manifest": "t"}], "replay_share": 1.0}))
    assert "data.replay_share" in message
    assert "train.output_dir: required key is missing" in error_of(
        {"model": {"path": "m"}, "data": {"target": [{"manifest": "t"}]}, "train": {}}
    )


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"data": {"target": [{"manifest": "t"}], "replay_share": 0.2}}, "no replay data"),
        (
            {"data": {"target": [{"manifest": "t"}], "replay": [{"world": "w"}]}},
            "replay_share is 0",
        ),
        ({"objectives": {"kl_to_base": {"weight": 1.0}}}, "kl_to_base.scope is 'replay'"),
        ({"probe": {"retention_floor": 0.95}}, "retention_floor needs probe.data"),
        ({"tuning": {"mode": "full", "lora": {"r": 8}}}, "LoRA options only apply"),
        ({"tuning": {"mode": "llm-attn+vison"}}, "tuning.mode: unknown tuning addition +vison"),
        ({"tuning": {"mode": "qlora"}}, "unknown tuning 'qlora'; start with one of full,"),
        ({"tuning": {"mode": "full+projector"}}, "full tuning already trains everything"),
        (
            {"tuning": {"mode": "lora+projector", "lora": {"targets": ["llm", "projector"]}}},
            "both LoRA and full-rank",
        ),
        ({"tuning": {"mode": "llm-all+vision-top-k"}}, "set tuning.vision_top_k"),
        ({"tuning": {"mode": "llm-all", "vision_top_k": 2}}, "has no +vision-top-k"),
        ({"tuning": {"mode": "lora", "lr": {"vision": 1e-6}}}, "trains no vision"),
        ({"tuning": {"lora": {"targets": ["llm", "mlp"]}}}, "unknown LoRA target mlp"),
        ({"objectives": {"ewc": {"weight": 1.0}}}, "ewc needs general data"),
        ({"objectives": {"ce": {"weight": 0}}}, "nothing would train"),
        (
            {"data": {"target": [{"manifest": "t"}], "self_replay": {"enabled": True}}},
            "needs data.self_replay.prompts_from",
        ),
        (
            {
                "data": {
                    "target": [{"manifest": "t"}],
                    "replay": [{"world": "w", "manifest": "m"}],
                    "replay_share": 0.1,
                }
            },
            "exactly one of manifest, world, benchmark (got manifest, world)",
        ),
        ({"train": {"output_dir": "o", "report_to": ["none", "wandb"]}}, "cannot be combined"),
    ],
)
def test_contradictions_are_clear_errors(sections, expected):
    assert expected in error_of(minimal(**sections))


def test_consistent_combinations_validate():
    config = config_from_dict(
        minimal(
            tuning={"mode": "llm-attn+projector+vision-top-k", "vision_top_k": 2},
            data={
                "target": [{"manifest": "t"}],
                "self_replay": {"enabled": True, "prompts_from": "w"},
                "replay_share": 0.3,
            },
            objectives={"kl_to_base": {"weight": 0.5}, "ewc": {"weight": 1.0, "data": "w"}},
            probe={"data": "w", "retention_floor": 0.9},
        )
    )
    assert config.tuning.lora is None
    assert config.tuning.trains("vision") and config.tuning.trains("projector")
    spec = config.tuning.spec()
    assert (spec.mode, spec.llm, spec.add, spec.vision_top_k) == (
        "selective",
        "llm-attn",
        ("projector", "vision-top-k"),
        2,
    )
    lora = config_from_dict(minimal(tuning={"lora": {"targets": "vision"}}))
    assert lora.tuning.lora is not None and lora.tuning.lora.targets == ["vision"]
    assert not lora.tuning.trains("llm")
    assert lora.tuning.spec().lora.targets == ("vision",)
    mixed = config_from_dict(minimal(tuning={"mode": "lora+projector"}))
    assert mixed.tuning.uses_lora and mixed.tuning.lora is not None
    assert mixed.tuning.trains("projector") and not mixed.tuning.trains("vision")
    assert config_from_dict(minimal(tuning={"lora": {"r": 64}})).tuning.lora.alpha == 128
    top = config_from_dict(minimal(tuning={"mode": "lora+vision-top-k", "vision_top_k": 2}))
    assert top.tuning.uses_lora and top.tuning.trains("vision")
    literal = config_from_dict(minimal(tuning={"mode": "llm-all+vision-top-3"}))
    assert literal.tuning.spec().vision_top_k == 3


def test_yaml_on_off_words_are_read_as_meant():
    config = config_from_dict(minimal(train={"output_dir": "o", "gradient_checkpointing": False}))
    assert config.train.gradient_checkpointing == "off"


def test_overrides_are_typed_and_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal()), encoding="utf-8")
    config = load_config(
        path,
        [
            "train.lr=3e-4",
            "train.report_to=[tensorboard, wandb]",
            "data.replay.0.world=worlds/w",
            "data.replay_share=0.25",
            "data.target.0.weight=2",
            "tuning.lora.r=8",
            "objectives.kl_to_base.top_k=null",
            "model.trust_remote_code=true",
        ],
    )
    assert config.train.lr == 3e-4
    assert config.train.report_to == ["tensorboard", "wandb"]
    assert config.data.replay[0].world == "worlds/w"
    assert config.data.replay_share == 0.25
    assert config.data.target[0].weight == 2.0
    assert config.tuning.lora is not None and config.tuning.lora.r == 8
    assert config.model.trust_remote_code is True


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.replay_shar=0.2", "unknown key 'replay_shar' in data; allowed keys: target,"),
        ("optim.lr=1", "unknown key 'optim' in the top level; allowed keys: name, model,"),
        ("tuning.lora.rank=8", "allowed keys: r, alpha, dropout, targets"),
        ("train.lr.llm=1", "train.lr is a value, not a section"),
        ("data.target.5.weight=1", "data.target is a list of 1"),
        ("train.lr", "expected key.path=value"),
    ],
)
def test_bad_overrides_are_errors(override, expected):
    with pytest.raises(InputError) as info:
        apply_overrides(minimal(), [override])
    assert expected in str(info.value)


def test_override_values_are_validated_like_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal()), encoding="utf-8")
    with pytest.raises(InputError, match=r"train\.batch_size"):
        load_config(path, ["train.batch_size=0"])


def test_unreadable_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(InputError, match="invalid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(InputError, match="mapping of sections"):
        load_config(listing)


def test_tiny_demo_config_is_the_demos_replay_kl_recipe():
    """configs/tiny-demo.yaml must not drift from what the demo trains."""
    from vlm_retain.demo import recipe

    chosen = next(r for r in recipe.RECIPES if r.slug == "lora-replay-kl")
    raw = recipe.finetune_config(
        chosen,
        Path("src/vlm_retain/demo/base"),
        Path("demo-out/model-path/data/manuscripts"),
        Path("demo-out/model-path/data/world"),
        Path("runs/tiny-demo"),
        recipe.DEMO_SCALES["full"],
    )
    raw["name"] = "tiny-demo"
    file = next(p for p in CONFIGS if p.stem == "tiny-demo")
    assert load_config(file) == config_from_dict(raw, source="demo")
