"""Tiny models: build, save, load back through load_model, forward with labels, generate."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image, ImageDraw

from vlm_retain.errors import InputError

TINY = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "idefics3", "paligemma", "internvl")


def line_image(width: int = 224, height: int = 56) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((4, 4), "Hello", fill="black")
    return image


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from vlm_retain.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {name: build_tiny(name, root / name, size="xs") for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_build_load_forward_generate(folders, name):
    import torch

    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import batch_to, load_model

    folder = folders[name]
    assert (folder / "model.safetensors").is_file()
    marker = json.loads((folder / ".vlm-retain.json").read_text())
    assert marker["kind"] == "tiny-model" and marker["family"] == name
    saved = json.loads((folder / "processor_config.json").read_text())
    assert not saved.get("processor_class", "").startswith("ImageOnly")
    from vlm_retain.models.processor import torchvision_available
    from vlm_retain.models.registry import FAMILIES

    if FAMILIES[name].needs_video_shim:  # so the standard class loads where torchvision is
        assert saved["video_processor"]["video_processor_type"].endswith("VideoProcessor")
    if torchvision_available():  # a plain transformers folder (vLLM loads it like this)
        from transformers import AutoProcessor

        plain = AutoProcessor.from_pretrained(str(folder))
        assert type(plain).__name__ == FAMILIES[name].processor_class

    loaded = load_model(folder)
    assert loaded.family.name == name
    assert type(loaded.model).__name__ == loaded.family.model_class
    assert not loaded.model.training
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert loaded.image_backend == "pil"
    assert loaded.attn_implementation == "sdpa"

    images = [line_image(), line_image(112, 28)]
    batch = encode(loaded, images, ["Transcribe the text.", "What is it?"], ["Вѣра", "ok"])
    with torch.no_grad():
        loss = loaded.model(**batch_to(batch, loaded)).loss
    assert math.isfinite(loss.item())

    prompt = encode(loaded, images, ["Transcribe the text.", "What is it?"])
    out = loaded.model.generate(**batch_to(prompt, loaded), max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > prompt["input_ids"].shape[1]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    from vlm_retain.models.tiny import build_tiny

    a = build_tiny("qwen2_5_vl", tmp_path / "a", seed=3, size="xs")
    b = build_tiny("qwen2_5_vl", tmp_path / "b", seed=3, size="xs")
    c = build_tiny("qwen2_5_vl", tmp_path / "c", seed=4, size="xs")
    weights = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_size_s_is_model_s(tmp_path):
    from vlm_retain.models.tiny import build_tiny_in_memory

    model, _ = build_tiny_in_memory("qwen2_5_vl", size="s")
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (128, 2, 256)
    assert model.config.vision_config.hidden_size == 64
    assert text.initializer_range == 0.1
    assert 0.6e6 < sum(p.numel() for p in model.parameters()) < 0.9e6


def test_bad_family_and_size(tmp_path):
    from vlm_retain.models.tiny import build_tiny

    with pytest.raises(InputError, match="qwen2_5_vl"):
        build_tiny("llava", tmp_path / "x")
    with pytest.raises(InputError, match="size"):
        build_tiny("qwen2_5_vl", tmp_path / "x", size="xxl")
    assert not (tmp_path / "x").exists()


def test_existing_output_refused(folders):
    from vlm_retain.models.tiny import build_tiny

    with pytest.raises(InputError, match="already exists"):
        build_tiny("qwen2_5_vl", folders["qwen2_5_vl"], size="xs")
