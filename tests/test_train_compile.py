"""Regional torch.compile of the decoder layers: the eager losses and gradients up to rounding,
on a tiny Qwen2.5-VL with LoRA (compilation takes a while on CPU: slow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_train_positions import _batch
from tests.test_train_trainer import base_config
from vlm_retain.errors import InputError
from vlm_retain.models.registry import get_family


def _loss_and_grads(model, batch):
    from vlm_retain.train.objectives import CrossEntropy, combine, model_inputs

    model.zero_grad(set_to_none=True)
    total, parts = combine([CrossEntropy()], batch, model(**model_inputs(batch)))
    total.backward()
    return parts["ce"], {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="inductor on CPU needs a C++ compiler")
def test_compiled_layers_match_eager(tmp_path):
    import torch

    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny
    from vlm_retain.train.compile import compile_layers, decoder_layers, uncompile_layers
    from vlm_retain.train.presets import LoraOptions, TuningSpec, apply_tuning

    lm = load_model(build_tiny("qwen2_5_vl", tmp_path / "m", size="xs"))
    tuned = apply_tuning(lm.model, lm.family, TuningSpec.parse("lora", lora=LoraOptions(r=4)))
    model = tuned.model
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    batch = _batch(lm)
    eager_loss, eager_grads = _loss_and_grads(model, batch)
    assert compile_layers(model, lm.family) == len(decoder_layers(model, lm.family)) > 0
    assert all(layer._compiled_call_impl is not None for layer in decoder_layers(model, lm.family))
    compiled_loss, compiled_grads = _loss_and_grads(model, batch)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    assert compiled_grads.keys() == eager_grads.keys() and eager_grads
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    # the state dict keeps its names (in-place compile: no _orig_mod prefix)
    assert not any("_orig_mod" in key for key in model.state_dict())
    uncompile_layers(model, lm.family)
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(model, lm.family))


def test_setting_and_errors(tmp_path: Path) -> None:
    import torch

    from vlm_retain.train.compile import decoder_layers
    from vlm_retain.train.config import config_from_dict

    raw = base_config({"model": tmp_path, "htr": tmp_path, "world": tmp_path}, tmp_path / "o")
    assert config_from_dict(raw).train.compile == "auto"
    raw["train"]["compile"] = True  # YAML's bare on
    assert config_from_dict(raw).train.compile == "on"
    family = type("Family", (), {"title": "Toy", "module_paths": {"llm": "body"}})()
    with pytest.raises(InputError, match=r"train\.compile"):
        decoder_layers(torch.nn.Linear(2, 2), family)


def test_auto_compiles_on_cuda_only(monkeypatch):
    import torch
    import torch._dynamo

    from vlm_retain.models.tiny import build_tiny_in_memory
    from vlm_retain.train.compile import compile_for_run, decoder_layers, uncompile_layers

    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)
    model, _ = build_tiny_in_memory("qwen2_5_vl", size="xs")
    family = get_family("qwen2_5_vl")
    layers = decoder_layers(model, family)
    assert compile_for_run("off", model, family, torch.device("cuda")) == 0
    assert compile_for_run("auto", model, family, torch.device("cpu")) == 0
    assert all(layer._compiled_call_impl is None for layer in layers)
    assert not torch._dynamo.config.suppress_errors
    # (compiling is lazy: nothing runs until the first forward, so no GPU is needed here)
    assert compile_for_run("auto", model, family, torch.device("cuda")) == len(layers)
    assert torch._dynamo.config.suppress_errors  # a layer that fails runs eagerly
    uncompile_layers(model, family)
    assert compile_for_run("on", model, family, torch.device("cpu")) == len(layers)
    assert all(layer._compiled_call_impl is not None for layer in layers)
    assert not torch._dynamo.config.suppress_errors  # on: errors stop the run
