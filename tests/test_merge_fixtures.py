"""Builders shared by the merge and sweep tests (no tests here): a tiny base, a "fine-tune"
that is the base with perturbed weights, and real PEFT LoRA adapters with non-zero B."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch


def tiny_base(root: Path, name: str = "base", seed: int = 0) -> Path:
    from vlm_retain.models.tiny import build_tiny

    return build_tiny("qwen2_5_vl", root / name, size="xs", seed=seed)


def perturbed(base: Path, out: Path, *, seed: int = 1, std: float = 0.05) -> Path:
    """A copy of ``base`` with every floating tensor moved by Gaussian noise."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, out)
    tensors = load_file(str(base / "model.safetensors"))
    g = torch.Generator().manual_seed(seed)
    moved = {
        k: v + std * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in tensors.items()
    }
    save_file(moved, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def lora_adapter(
    base: Path,
    out: Path,
    *,
    seed: int = 0,
    preset: str = "llm",
    rank: int = 4,
    dora: bool = False,
    modules_to_save: list[str] | None = None,
) -> Path:
    """A real PEFT adapter on ``base`` with random (non-zero) A and B."""
    from peft import LoraConfig, get_peft_model

    from vlm_retain.models.loading import load_model

    loaded = load_model(str(base), device="cpu")
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=loaded.family.lora_regex(preset),
        init_lora_weights=False,
        use_dora=dora,
        modules_to_save=modules_to_save,
    )
    torch.manual_seed(seed)
    model = get_peft_model(loaded.model, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
            if "modules_to_save" in name:
                param.add_(0.1)
    model.save_pretrained(str(out))
    return out


def greedy(model_dir: Path, adapter: Path | None = None, n: int = 6) -> list[list[int]]:
    """Greedy token ids for two fixed prompts with a fixed image."""
    from PIL import Image

    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import batch_to, load_model

    loaded = load_model(str(model_dir), adapter=adapter, device="cpu")
    image = Image.new("RGB", (56, 56), (120, 40, 200))
    batch = encode(loaded, [image, image], ["Read the line.", "What colour is it?"])
    with torch.no_grad():
        out = loaded.model.generate(
            **batch_to(batch, loaded), max_new_tokens=n, do_sample=False, min_new_tokens=n
        )
    return out[:, batch["input_ids"].shape[1] :].tolist()


def logits(model_dir: Path, adapter: Path | None = None) -> Any:
    from PIL import Image

    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import batch_to, load_model

    loaded = load_model(str(model_dir), adapter=adapter, device="cpu")
    image = Image.new("RGB", (56, 56), (10, 200, 30))
    batch = encode(loaded, [image], ["Read the line."])
    with torch.no_grad():
        return loaded.model(**batch_to(batch, loaded)).logits
