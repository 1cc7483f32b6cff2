"""The frozen-vision-tower cache on a tiny Qwen2.5-VL: exactly the plain path's loss and
gradients (first pass misses, second pass hits, mixed batches), off when vision trains, and a
real run with the same losses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_json, read_jsonl
from tests.test_models_tiny import line_image
from tests.test_train_trainer import base_config, make_data

PROMPTS = ["Transcribe the text.", "What is it?"]
ANSWERS = ["a line of text", "a line"]


def _tuned(qwen_folder, spec: str):
    from vlm_retain.models.loading import load_model
    from vlm_retain.train.presets import LoraOptions, TuningSpec, apply_tuning

    lm = load_model(qwen_folder)
    tuned = apply_tuning(lm.model, lm.family, TuningSpec.parse(spec, lora=LoraOptions(r=4)))
    return lm, tuned.model


def _batch(lm, images):
    from vlm_retain.models.encoding import encode

    n = len(images)
    return encode(lm, images, (PROMPTS * n)[:n], (ANSWERS * n)[:n], padding_side="right")


def _loss_and_grads(model, batch):
    import torch

    from vlm_retain.train.objectives import CrossEntropy, model_inputs

    torch.manual_seed(0)  # LoRA dropout draws the same masks on both paths
    model.zero_grad(set_to_none=True)
    loss = CrossEntropy()(batch, model(**model_inputs(batch)))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _same(a, b) -> None:
    import torch

    assert torch.equal(a[0], b[0]), (a[0], b[0])
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        assert torch.equal(a[1][name], b[1][name]), name


@pytest.mark.parametrize("spec", ["lora", "llm-attn"])
def test_cached_loss_and_grads_equal_the_plain_path(qwen_folder, spec):
    from vlm_retain.train.vision_cache import VisionCache, wants_cache

    lm, model = _tuned(qwen_folder, spec)
    assert wants_cache("auto", model, lm.family)
    batch = _batch(lm, [line_image(), line_image(112, 28)])
    plain = _loss_and_grads(model, batch)
    cache = VisionCache().install(model)
    first = _loss_and_grads(model, batch)
    assert (cache.misses, cache.hits) == (2, 0)
    second = _loss_and_grads(model, batch)
    assert (cache.misses, cache.hits) == (2, 2)
    _same(plain, first)
    _same(plain, second)
    cache.remove()
    _same(plain, _loss_and_grads(model, batch))


def test_a_batch_of_cached_and_new_images_equals_the_plain_path(qwen_folder):
    import torch

    from vlm_retain.train.objectives import model_inputs
    from vlm_retain.train.vision_cache import VisionCache

    lm, model = _tuned(qwen_folder, "lora")
    model.eval()
    a, b, c = line_image(), line_image(112, 28), line_image(168, 56)
    mixed = _batch(lm, [b, a, c, a])
    with torch.no_grad():
        plain = model(**model_inputs(mixed)).logits
    cache = VisionCache().install(model)
    with torch.no_grad():
        model(**model_inputs(_batch(lm, [a])))  # a is cached, b and c are not
        assert (cache.misses, cache.hits) == (1, 0)
        cached = model(**model_inputs(mixed)).logits
    assert (cache.misses, cache.hits) == (3, 2)
    assert torch.equal(plain, cached)
    _same(_loss_and_grads(model, mixed), (_loss_and_grads(model, mixed)))


def test_lru_limit_bounds_memory(qwen_folder):
    import torch

    from vlm_retain.train.objectives import model_inputs
    from vlm_retain.train.vision_cache import VisionCache

    lm, model = _tuned(qwen_folder, "lora")
    cache = VisionCache(limit_mib=0).install(model)
    with torch.no_grad():
        model(**model_inputs(_batch(lm, [line_image()])))
    assert cache.misses == 1 and cache.bytes == 0 and not cache.entries
    big = VisionCache().install(model)
    with torch.no_grad():
        model(**model_inputs(_batch(lm, [line_image()])))
    assert big.bytes > 0
    big.limit_bytes = big.bytes  # room for exactly one image: the older one goes
    with torch.no_grad():
        model(**model_inputs(_batch(lm, [line_image(112, 28)])))
    assert len(big.entries) == 1


@pytest.mark.parametrize("spec", ["full", "llm-all+vision", "llm-all+projector", "lora+vision"])
def test_auto_is_off_when_vision_trains_and_the_plain_path_is_used(qwen_folder, spec):
    from vlm_retain.errors import InputError
    from vlm_retain.train.vision_cache import VisionCache, wants_cache

    lm, model = _tuned(qwen_folder, spec)
    assert not wants_cache("auto", model, lm.family)
    assert not wants_cache("off", model, lm.family)
    with pytest.raises(InputError, match="frozen vision"):
        wants_cache("on", model, lm.family)
    # even if installed by hand, a training tower takes the plain path
    batch = _batch(lm, [line_image()])
    cache = VisionCache().install(model)
    _loss_and_grads(model, batch)
    assert (cache.misses, cache.hits) == (0, 0)


def test_off_for_a_frozen_tower_is_the_plain_path(qwen_folder):
    from vlm_retain.train.vision_cache import wants_cache

    lm, model = _tuned(qwen_folder, "lora")
    assert not wants_cache("off", model, lm.family)
    assert wants_cache("on", model, lm.family)


def test_config_default_and_yaml_bools(tmp_path: Path) -> None:
    from vlm_retain.train.config import config_from_dict

    raw = base_config({"model": tmp_path, "htr": tmp_path, "world": tmp_path}, tmp_path / "o")
    assert config_from_dict(raw).train.vision_cache == "auto"
    raw["train"]["vision_cache"] = False
    assert config_from_dict(raw).train.vision_cache == "off"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_data(tmp_path_factory.mktemp("vc-data"))


@pytest.mark.parametrize("objectives", [{}, {"kl_to_base": {"weight": 0.5}}])
def test_a_lora_run_has_the_same_losses_with_the_cache_on_and_off(data, tmp_path, objectives):
    from tests.test_train_e2e import QUIET
    from vlm_retain.train.config import config_from_dict
    from vlm_retain.train.trainer import train

    logs = {}
    for setting in ("off", "auto"):
        out = tmp_path / setting
        raw = base_config(data, out, objectives=objectives)
        raw["data"]["max_pixels"] = 28 * 28 * 8
        raw["train"].update({"max_steps": 10, "vision_cache": setting, "save_every_steps": 100})
        train(config_from_dict(raw), hooks=QUIET)
        logs[setting] = read_jsonl(out / "train_log.jsonl")
        summary = read_json(out / "train_summary.json")
        if setting == "off":
            assert summary["vision_cache"] is None
        else:
            assert summary["vision_cache"]["hits"] > 0  # a later epoch reused the images
    drop = {"seconds"}
    strip = [[{k: v for k, v in r.items() if k not in drop} for r in logs[s]] for s in logs]
    assert strip[0] == strip[1]
