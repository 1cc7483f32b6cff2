"""``unwrap``: the transformers model under DDP-style and PEFT wrappers, in that order."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from vlm_retain.models.unwrap import unwrap  # noqa: E402


def test_unwrap_peels_data_parallel_then_peft():
    from peft import LoraConfig, get_peft_model

    from vlm_retain.models.tiny import build_tiny_in_memory
    from vlm_retain.train.positions import supports_kept_logits

    base, _ = build_tiny_in_memory("qwen2_5_vl", size="xs")
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    assert unwrap(base) is base
    assert unwrap(peft_model) is base
    # DataParallel stands for DDP here (the same ``.module`` wrapper, no process group needed)
    assert unwrap(torch.nn.DataParallel(peft_model)) is base
    assert unwrap(torch.nn.DataParallel(base)) is base
    # the answer-only logits check sees the transformers model through both wrappers
    assert supports_kept_logits(torch.nn.DataParallel(peft_model))
