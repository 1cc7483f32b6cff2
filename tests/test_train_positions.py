"""Answer-only logits: the same losses and gradients as full logits, on tiny real models."""

from __future__ import annotations

import pytest

from tests.test_models_tiny import line_image
from vlm_retain.errors import InputError

PROMPTS = ["Transcribe the text.", "What is it?", "Transcribe the text."]
ANSWERS = ["Вѣра і Ѳома", "a line", "ب"]


def _batch(lm):
    import torch

    from vlm_retain.models.encoding import encode

    images = [line_image(), line_image(112, 28), line_image(56, 28)]
    out = encode(lm, images, PROMPTS, ANSWERS, padding_side="right")
    out["replay"] = torch.tensor([True, False, True])
    out["source_ids"] = torch.tensor([0, 1, 0])
    return out


def _losses_and_grads(tuned, objectives, batch, *, kept: bool):
    from vlm_retain.train.objectives import combine, model_inputs
    from vlm_retain.train.positions import forward_kept

    model = tuned.model
    model.zero_grad(set_to_none=True)
    if kept:
        outputs = forward_kept(model, model_inputs(batch), objectives, batch)
    else:
        outputs = model(**model_inputs(batch))
    total, parts = combine(objectives, batch, outputs)
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return parts, grads


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
@pytest.mark.parametrize("spec", ["full", "lora"])
def test_kept_logits_give_the_same_loss_and_gradients(tmp_path, family, spec):
    import torch

    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny
    from vlm_retain.train.kl import KLToBase
    from vlm_retain.train.objectives import CrossEntropy, model_inputs
    from vlm_retain.train.positions import KeptLogits, forward_kept, supports_kept_logits
    from vlm_retain.train.presets import LoraOptions, TuningSpec, apply_tuning
    from vlm_retain.train.reference import ReferenceModel

    lm = load_model(build_tiny(family, tmp_path / "m", size="xs"))
    tuned = apply_tuning(lm.model, lm.family, TuningSpec.parse(spec, lora=LoraOptions(r=4)))
    assert supports_kept_logits(tuned.model)
    tuned.model.eval()  # LoRA dropout off: both forwards must see the same function
    batch = _batch(lm)
    objectives = [
        CrossEntropy(source_names=["a", "b"]),
        KLToBase(ReferenceModel(tuned.model), weight=0.5, on="replay", positions="all"),
    ]
    # move the weights off the base so the KL term and its gradient are not zero
    torch.manual_seed(0)
    with torch.no_grad():
        for param in tuned.model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    outputs = forward_kept(tuned.model, model_inputs(batch), objectives, batch)
    assert isinstance(outputs, KeptLogits)
    # KL on "all" positions of the replay rows, CE on the answers: far fewer than B x T
    assert 0 < outputs.logits.shape[0] < batch["input_ids"].numel()

    full_parts, full_grads = _losses_and_grads(tuned, objectives, batch, kept=False)
    kept_parts, kept_grads = _losses_and_grads(tuned, objectives, batch, kept=True)
    assert full_parts["kl"] > 0 and full_parts["ce"] > 0
    assert kept_parts == full_parts  # exactly, on CPU
    assert kept_grads.keys() == full_grads.keys() and full_grads
    for name, grad in full_grads.items():
        assert torch.equal(kept_grads[name], grad), name


def test_logits_at_rejects_a_position_that_was_not_kept() -> None:
    import torch

    from vlm_retain.train.positions import KeptLogits, logits_at

    kept = torch.tensor([[False, True, True], [True, False, False]])
    outputs = KeptLogits(logits=torch.arange(6.0).view(3, 2), positions=kept)
    # row-major order of the kept cells: (0,1) -> row 0, (0,2) -> row 1, (1,0) -> row 2
    inside = torch.tensor([[False, False, True], [True, False, False]])
    assert logits_at(outputs, inside).tolist() == [[2.0, 3.0], [4.0, 5.0]]
    with pytest.raises(RuntimeError, match="did not keep"):
        logits_at(outputs, torch.tensor([[True, False, False], [False, False, False]]))


def test_objectives_without_positions_keep_every_logit() -> None:
    import torch

    from vlm_retain.train.positions import forward_kept, read_positions

    class Anchor:  # like L2-SP: reads no logits
        weight = 1.0

    calls = []

    def model(**kwargs):
        calls.append(kwargs)
        return "plain"

    batch = {"labels": torch.tensor([[-100, 1]])}
    assert read_positions([Anchor()], batch) is None
    assert forward_kept(model, {"input_ids": 1}, [Anchor()], batch) == "plain"
    assert calls == [{"input_ids": 1}]


def test_answer_only_setting(tmp_path) -> None:
    import torch

    from vlm_retain.train.trainer import _answer_only

    plain = torch.nn.Linear(2, 2)
    assert _answer_only("auto", plain) is False
    assert _answer_only("off", plain) is False
    with pytest.raises(InputError, match="answer_only_logits"):
        _answer_only("on", plain)
