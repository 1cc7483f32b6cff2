"""Tuning presets train exactly what they name, for several families; param groups get the lrs."""

from __future__ import annotations

import copy
import re

import pytest

from vlm_retain.errors import InputError
from vlm_retain.models.registry import get_family, module_groups
from vlm_retain.train.presets import LoraOptions, TuningSpec, apply_tuning

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "idefics3", "paligemma", "internvl")
ATTN = re.compile(r"\.layers\.\d+\.self_attn\.(q|k|v|o)_proj\.(weight|bias)$")
GATE_UP = re.compile(r"\.layers\.\d+\.mlp\.(gate|up)_proj\.weight$")
LLM_LINEAR = re.compile(r"\.layers\.\d+\.(self_attn\.(q|k|v|o)|mlp\.(gate|up|down))_proj$")


@pytest.fixture(scope="module")
def pristine():
    from vlm_retain.models.tiny import build_tiny_in_memory

    return {name: build_tiny_in_memory(name, size="xs")[0] for name in FAMILIES}


def _tune(pristine, name, text, **kw):
    model = copy.deepcopy(pristine[name])
    family = get_family(name)
    tuned = apply_tuning(model, family, TuningSpec.parse(text, **kw))
    groups = module_groups(model, family)  # bare names (before any PEFT wrap, for selective)
    return tuned, family, groups


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _last_vision_block(groups):
    blocks = re.compile(r"^.*\.(?:blocks|layers?)\.(\d+)\.")
    top = max(int(m.group(1)) for n in groups["vision"] if (m := blocks.match(n)))
    names = [n for n in groups["vision"] if (m := blocks.match(n)) and int(m.group(1)) == top]
    last = max(i for i, n in enumerate(groups["vision"]) if blocks.match(n))
    return set(names) | set(groups["vision"][last + 1 :])


@pytest.mark.parametrize("name", FAMILIES)
def test_selective_presets_train_exactly_what_they_name(pristine, name):
    tuned, _, groups = _tune(pristine, name, "llm-attn")
    llm = groups["llm"]
    assert _trainable(tuned.model) == {n for n in llm if ATTN.search(n)}
    tuned, _, _ = _tune(pristine, name, "llm-mlp-gate-up")
    assert _trainable(tuned.model) == {n for n in llm if GATE_UP.search(n)}
    assert not any("down_proj" in n for n in _trainable(tuned.model))
    tuned, _, _ = _tune(pristine, name, "llm-all")
    assert _trainable(tuned.model) == set(llm)


@pytest.mark.parametrize("name", FAMILIES)
def test_additions_add_their_component_and_vision_only_when_asked(pristine, name):
    tuned, _, groups = _tune(pristine, name, "llm-attn+projector")
    trainable = _trainable(tuned.model)
    assert set(groups["projector"]) <= trainable
    assert not trainable & set(groups["vision"])
    assert not trainable & set(groups["embeddings"])
    tuned, _, _ = _tune(pristine, name, "llm-attn+vision")
    assert set(groups["vision"]) <= _trainable(tuned.model)
    tuned, _, _ = _tune(pristine, name, "llm-all+vision-top-1")
    assert _trainable(tuned.model) & set(groups["vision"]) == _last_vision_block(groups)
    tuned, _, _ = _tune(pristine, name, "llm-attn+vision-top-k", vision_top_k=2)
    assert set(groups["vision"]) - _trainable(tuned.model)  # patch embedding stays frozen
    assert _trainable(tuned.model) & set(groups["vision"])


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_lora_targets_only_llm_linears(pristine, name, mode):
    from peft.tuners.lora import LoraLayer

    tuned, family, _groups = _tune(pristine, name, mode)
    wrapped = {
        n.removeprefix("base_model.model.")
        for n, m in tuned.model.named_modules()
        if isinstance(m, LoraLayer)
    }
    llm_linears = {
        n for n, _ in pristine[name].named_modules() if LLM_LINEAR.search(n) and "vision" not in n
    }
    llm_linears = {n for n in llm_linears if family.component_of(n + ".weight") == "llm"}
    assert wrapped == llm_linears
    trainable = _trainable(tuned.model)
    assert trainable and all(re.search(r"\.lora_(A|B|magnitude_vector)\.", n) for n in trainable)
    assert any("lora_magnitude_vector" in n for n in trainable) == (mode == "dora")
    for n in trainable:
        assert family.component_of(n.removeprefix("base_model.model.")) == "llm"


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_with_full_rank_projector(pristine, name):
    from vlm_retain.train.groups import trainable_summary

    tuned, family, _ = _tune(pristine, name, "lora+projector")
    summary = trainable_summary(tuned.model, family)
    assert summary["projector"][0] > 0
    assert summary["vision"][0] == 0
    assert summary["embeddings"][0] == 0
    saved = [n for n in _trainable(tuned.model) if ".modules_to_save." in n]
    assert saved and all(
        family.component_of(n[len("base_model.model.") :]) == "projector" for n in saved
    )


def test_lora_on_vision_only_when_asked(pristine):
    lora = LoraOptions(r=4, targets=("llm", "vision"))
    tuned, family, _ = _tune(pristine, "qwen2_5_vl", "lora", lora=lora)
    comps = {
        family.component_of(n.removeprefix("base_model.model.")) for n in _trainable(tuned.model)
    }
    assert comps == {"llm", "vision"}


def test_full_trains_everything(pristine):
    tuned, _, _ = _tune(pristine, "idefics3", "full")
    assert all(p.requires_grad for p in tuned.model.parameters())


def test_param_groups_get_component_lrs(pristine):
    from vlm_retain.train.groups import param_groups

    tuned, family, _groups = _tune(pristine, "qwen2_5_vl", "llm-attn+projector+vision-top-1")
    lrs = {"vision": 1e-6, "projector": 1e-5, "llm": 1e-4}
    built = param_groups(tuned.model, family, lrs, weight_decay=0.1)
    by_id = {id(p): g for g in built for p in g["params"]}
    params = dict(tuned.model.named_parameters())
    assert set(by_id) == {id(p) for p in params.values() if p.requires_grad}
    for pname, p in params.items():
        if not p.requires_grad:
            continue
        group = by_id[id(p)]
        component = family.component_of(pname)
        assert group["lr"] == lrs[component]
        assert group["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0)
    # PEFT names land in their components too; lm_head etc. fall back to llm / default
    tuned, family, _ = _tune(pristine, "qwen2_5_vl", "lora+projector")
    built = param_groups(tuned.model, family, {"default": 2e-4, "projector": 1e-5})
    assert {g["component"]: g["lr"] for g in built} == {"llm": 2e-4, "projector": 1e-5}
    import torch

    torch.optim.AdamW(built)  # the extra keys are accepted by torch optimizers


def test_spec_parsing_and_errors(pristine):
    spec = TuningSpec.parse("llm-attn+projector+vision-top-3")
    assert (spec.mode, spec.llm, spec.add, spec.vision_top_k) == (
        "selective",
        "llm-attn",
        ("projector", "vision-top-k"),
        3,
    )
    assert str(spec) == "llm-attn+projector+vision-top-3"
    assert TuningSpec.parse("projector").add == ("projector",)
    assert TuningSpec.parse("dora", lora=LoraOptions(r=8)).lora.lora_alpha == 16.0
    bad = [
        "attn",
        "full+projector",
        "llm-attn+nope",
        "llm-attn+vision+vision-top-2",
        "llm-attn+vision-top-k",
        "lora+projector+projector",
    ]
    for text in bad:
        with pytest.raises(InputError):
            TuningSpec.parse(text)
    with pytest.raises(InputError, match="both LoRA and full-rank"):
        TuningSpec.parse("lora+vision", lora=LoraOptions(targets=("llm", "vision")))
    with pytest.raises(InputError, match="tied"):
        _tune(pristine, "paligemma", "llm-attn+lm_head")
    with pytest.raises(InputError, match="only 2 blocks"):
        _tune(pristine, "qwen2_5_vl", "llm-attn+vision-top-5")
    from vlm_retain.train.groups import param_groups

    with pytest.raises(InputError, match="unknown learning-rate key"):
        param_groups(pristine["qwen2_5_vl"], get_family("qwen2_5_vl"), {"vit": 1.0})
