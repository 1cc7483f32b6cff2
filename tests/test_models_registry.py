"""Family registry: detection, component partition and LoRA presets on real (tiny) modules."""

from __future__ import annotations

import re

import pytest

from vlm_retain.errors import InputError
from vlm_retain.models.registry import (
    COMPONENTS,
    FAMILIES,
    detect_family,
    get_family,
    module_groups,
)

TINY = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "idefics3", "paligemma", "internvl")


@pytest.fixture(scope="module")
def models():
    from vlm_retain.models.tiny import build_tiny_in_memory

    return {name: build_tiny_in_memory(name, size="xs")[0] for name in TINY}


def test_every_family_has_a_tiny_model_and_all_components():
    assert set(FAMILIES) == set(TINY)
    for family in FAMILIES.values():
        assert set(family.components) == set(COMPONENTS)
        assert {"llm", "llm-attn", "llm-mlp", "vision", "projector"} <= set(family.lora_targets)


@pytest.mark.parametrize("name", TINY)
def test_detect_family_from_config_dict_and_object(models, name):
    config = models[name].config
    assert detect_family(config).name == name
    assert detect_family(config.to_dict()).name == name


def test_unknown_architecture_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llava_next"}')
    with pytest.raises(InputError) as err:
        detect_family(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "llava_next" in message
    for family in FAMILIES.values():
        assert family.title in message
    with pytest.raises(InputError, match="qwen2_5_vl"):
        get_family("llava")


def test_remote_code_internvl_points_to_the_native_conversion(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "internvl_chat"}')
    with pytest.raises(InputError, match=r"-hf.*model_type internvl") as err:
        detect_family(tmp_path)
    assert "InternVL" in str(err.value)


def test_folder_without_config_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"no config\.json"):
        detect_family(tmp_path)


@pytest.mark.parametrize("name", TINY)
def test_module_groups_partition_all_parameters(models, name):
    model = models[name]
    groups = module_groups(model, FAMILIES[name])
    assert groups["other"] == []
    flat = [n for names in groups.values() for n in names]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    assert len(flat) == len(set(flat))
    for component in ("vision", "projector", "embeddings", "llm"):
        assert groups[component], component
    # module_paths really are modules of the model
    modules = dict(model.named_modules())
    for component, path in FAMILIES[name].module_paths.items():
        assert path.split(" ")[0] in modules, (component, path)


def _linears(model):
    import torch

    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("name", TINY)
def test_lora_presets_match_only_linears_of_their_component(models, name):
    family = FAMILIES[name]
    model = models[name]
    linears = _linears(model)
    names = [n for n, _ in model.named_modules()]
    owner = {"llm": "llm", "llm-attn": "llm", "llm-mlp": "llm"}
    for preset, regex in family.lora_targets.items():
        hits = [n for n in names if re.fullmatch(regex, n)]
        assert hits, preset
        assert set(hits) <= linears, preset
        want = owner.get(preset, preset)
        assert {family.component_of(n + ".weight") for n in hits} == {want}, preset
    # "llm" covers every linear of the language model (lm_head is its own component)
    llm_linears = {n for n in linears if family.component_of(n + ".weight") == "llm"}
    assert {n for n in names if re.fullmatch(family.lora_regex("llm"), n)} == llm_linears
    attn_mlp = family.lora_regex(["llm-attn", "llm-mlp"])
    assert {n for n in names if re.fullmatch(attn_mlp, n)} == llm_linears


def test_peft_llm_preset_leaves_vision_alone():
    from peft import LoraConfig, get_peft_model

    from vlm_retain.models.tiny import build_tiny_in_memory

    family = FAMILIES["qwen2_5_vl"]
    model = build_tiny_in_memory("qwen2_5_vl", size="xs")[0]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=family.lora_regex("llm")))
    lora = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora and not [n for n in lora if "visual" in n]
    groups = module_groups(peft_model, family)
    assert groups["other"] == []
    assert set(lora) <= set(groups["llm"])


def test_unknown_lora_preset():
    with pytest.raises(InputError, match="unknown LoRA target preset"):
        FAMILIES["qwen2_5_vl"].lora_regex("everything")
