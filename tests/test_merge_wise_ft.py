"""WiSE-FT on a tiny model: endpoints equal the inputs (weights and greedy predictions), the
midpoint is the mean, adapters scale and load, bad inputs are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_merge_fixtures import greedy, logits, lora_adapter, perturbed, tiny_base
from vlm_retain.errors import InputError
from vlm_retain.merge.wise_ft import wise_ft_adapter, wise_ft_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("wise")
    base = tiny_base(root)
    ft = perturbed(base, root / "ft")
    adapter = lora_adapter(base, root / "lora")
    return root, base, ft, adapter


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_full_wise_ft_endpoints_and_midpoint(models, tmp_path: Path) -> None:
    _, base, ft, _ = models
    points = {a: wise_ft_models(str(base), ft, a, tmp_path / f"a{a}") for a in (0.0, 0.5, 1.0)}
    b, f = _weights(base), _weights(ft)
    w0, w5, w1 = (_weights(points[a]) for a in (0.0, 0.5, 1.0))
    assert all(torch.equal(w0[k], b[k]) for k in b)
    assert all(torch.equal(w1[k], f[k]) for k in f)
    assert all(torch.allclose(w5[k], (b[k] + f[k]) / 2, atol=1e-7) for k in b)
    # predictions: alpha 0 reads like the base, alpha 1 like the fine-tune (which differs)
    assert greedy(points[0.0]) == greedy(base)
    assert greedy(points[1.0]) == greedy(ft)
    assert greedy(base) != greedy(ft)
    record = json.loads((points[0.5] / "merge.json").read_text())
    assert record["method"] == "wise-ft" and record["alpha"] == 0.5 and record["output"] == "model"
    assert [i["role"] for i in record["inputs"]] == ["base", "finetuned"]
    assert record["inputs"][0]["weights"]["model.safetensors"].startswith("sha256:")
    assert (points[0.5] / "tokenizer.json").is_file() and (
        points[0.5] / ".vlm-retain.json"
    ).is_file()


def test_adapter_wise_ft_scales_b_and_loads(models, tmp_path: Path) -> None:
    _, base, _, adapter = models
    one = wise_ft_adapter(str(base), adapter, 1.0, tmp_path / "a1")
    zero = wise_ft_adapter(str(base), adapter, 0.0, tmp_path / "a0")
    half = wise_ft_adapter(str(base), adapter, 0.5, tmp_path / "a5")
    src = load_file(str(adapter / "adapter_model.safetensors"))
    scaled = load_file(str(half / "adapter_model.safetensors"))
    for key, value in src.items():
        factor = 0.5 if "lora_B" in key else 1.0
        assert torch.allclose(scaled[key], value * factor)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in src.items())
    assert greedy(base, one) == greedy(base, adapter)
    assert greedy(base, zero) == greedy(base)
    assert greedy(base, adapter) != greedy(base)
    # the scaled adapter is the exact interpolation: same logits as the merged full model
    full = wise_ft_adapter(str(base), adapter, 0.5, tmp_path / "m5", merge_into_base=True)
    assert torch.allclose(logits(base, half), logits(full), atol=1e-4)
    assert json.loads((full / "merge.json").read_text())["output"] == "model"


def test_dora_needs_merge_into_base_and_is_exact_there(models, tmp_path: Path) -> None:
    root, base, _, _ = models
    dora = lora_adapter(base, root / "dora", preset="llm-attn", dora=True)
    with pytest.raises(InputError, match="DoRA"):
        wise_ft_adapter(str(base), dora, 0.5, tmp_path / "d")
    zero = wise_ft_adapter(str(base), dora, 0.0, tmp_path / "d0", merge_into_base=True)
    one = wise_ft_adapter(str(base), dora, 1.0, tmp_path / "d1", merge_into_base=True)
    assert torch.allclose(logits(zero), logits(base), atol=1e-5)
    assert torch.allclose(logits(one), logits(base, dora), atol=1e-4)


def test_modules_to_save_are_interpolated(models, tmp_path: Path) -> None:
    root, base, _, _ = models
    saved = lora_adapter(
        base, root / "saved", preset="llm-attn", modules_to_save=["model.visual.merger"]
    )
    half = wise_ft_adapter(str(base), saved, 0.5, tmp_path / "s5")
    full = wise_ft_adapter(str(base), saved, 0.5, tmp_path / "s5m", merge_into_base=True)
    assert torch.allclose(logits(base, half), logits(full), atol=1e-4)


def test_bad_inputs_exit_2_with_one_line(models, tmp_path: Path, run_cli) -> None:
    root, base, ft, adapter = models
    other = tiny_base(root, "other-size", seed=3)
    bigger = root / "bigger"
    if not bigger.exists():
        from vlm_retain.models.tiny import build_tiny

        build_tiny("qwen2_5_vl", bigger, size="s")
    cases = [
        (["--finetuned", bigger, "--alpha", "0.5"], "shape"),
        (["--finetuned", ft, "--alpha", "1.5"], "alpha must be in [0, 1]"),
        (["--finetuned", ft, "--adapter", adapter, "--alpha", "0.5"], "exactly one"),
        (["--adapter", root / "missing", "--alpha", "0.5"], "not found"),
    ]
    for args, message in cases:
        result = run_cli("merge", "wise-ft", "--base", base, "--out", tmp_path / "x", *args)
        assert result.code == 2, result
        assert message in result.err and result.err.strip().count("\n") == 0, result.err
    # an adapter recorded for another base
    result = run_cli(
        "merge", "wise-ft", "--base", other, "--adapter", adapter, "--alpha", "0.5",
        "--out", tmp_path / "y",
    )  # fmt: skip
    assert result.code == 2 and "trained on" in result.err
    # an adapter whose shapes do not fit (renamed base accepted, shapes still checked)
    result = run_cli(
        "merge", "wise-ft", "--base", bigger, "--adapter", adapter, "--alpha", "0.5",
        "--out", tmp_path / "z", "--no-strict-base",
    )  # fmt: skip
    assert result.code == 2 and "does not fit" in result.err
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    ok = run_cli(
        "merge", "wise-ft", "--base", base, "--finetuned", ft, "--alpha", "0.3",
        "--out", tmp_path / "ok",
    )  # fmt: skip
    assert ok.code == 0, ok.err
    assert json.loads((tmp_path / "ok" / "merge.json").read_text())["alpha"] == 0.3
