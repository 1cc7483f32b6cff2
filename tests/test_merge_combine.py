"""Merging several adapters or fine-tunes: exact where it must be, loadable, and strict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_merge_fixtures import logits, lora_adapter, perturbed, tiny_base
from vlm_retain.errors import InputError
from vlm_retain.merge.combine import merge_inputs
from vlm_retain.merge.lora import read_adapter


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("combine")
    base = tiny_base(root)
    a1 = lora_adapter(base, root / "ru", seed=1, rank=2)
    a2 = lora_adapter(base, root / "en", seed=2, rank=2, preset="llm-attn")
    return root, base, a1, a2


def test_linear_adapter_merge_equals_summed_deltas(models, tmp_path: Path) -> None:
    _, base, a1, a2 = models
    # rank 4 = 2 + 2 holds the weighted sum exactly
    out = merge_inputs(
        "linear", [a1, a2], tmp_path / "lin", weights=[0.7, 0.3], rank=4, base=str(base)
    )
    merged = read_adapter(out)
    first, second = read_adapter(a1), read_adapter(a2)
    for module in first.lora:
        want = 0.7 * first.delta(module)
        if module in second.lora:
            want = want + 0.3 * second.delta(module)
        assert torch.allclose(merged.delta(module), want, atol=1e-5)
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "linear" and record["weights"] == [0.7, 0.3]
    assert record["rank"] == 4 and record["svd_relative_error"]["max"] < 1e-4
    assert [i["role"] for i in record["inputs"]] == ["base", "adapter", "adapter"]
    # loads as an adapter and matches the exact full merge
    full = merge_inputs(
        "linear", [a1, a2], tmp_path / "linfull", weights=[0.7, 0.3], base=str(base),
        merge_into_base=True,
    )  # fmt: skip
    assert torch.allclose(logits(base, out), logits(full), atol=1e-4)


@pytest.mark.parametrize(("method", "extra"), [("ties", {}), ("dare", {"combine": "ties"})])
def test_ties_and_dare_adapters_load(models, tmp_path: Path, method: str, extra: dict) -> None:
    from vlm_retain.models.loading import load_model

    _, base, a1, a2 = models
    out = merge_inputs(method, [a1, a2], tmp_path / method, density=0.5, seed=3, **extra)
    loaded = load_model(str(base), adapter=out, device="cpu")
    assert loaded.adapter == out
    record = json.loads((out / "merge.json").read_text())
    assert record["density"] == 0.5 and record["output"] == "adapter"
    assert record["seed"] == (3 if method == "dare" else None)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 2 and not config["use_dora"]


def test_default_ranks_and_lossy_svd_warning(models, tmp_path: Path, run_cli) -> None:
    _, _, a1, a2 = models
    # linear: the default rank is the sum of the input ranks (2 + 2), where it is exact
    lin = run_cli("merge", "linear", a1, a2, "--out", tmp_path / "lin")
    assert lin.code == 0, lin.err
    record = json.loads((tmp_path / "lin" / "merge.json").read_text())
    assert record["rank"] == 4 and record["svd_relative_error"]["max"] < 1e-4
    assert "warning" not in lin.err
    # ties: the largest input rank; trimming makes the deltas full-rank, so rank 2 is lossy
    ties = run_cli("merge", "ties", a1, a2, "--density", "0.5", "--out", tmp_path / "ties")
    assert ties.code == 0, ties.err
    record = json.loads((tmp_path / "ties" / "merge.json").read_text())
    assert record["rank"] == 2 and record["svd_relative_error"]["max"] > 0.05
    warning = [line for line in ties.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "--rank" in warning[0] and "--merge-into-base" in warning[0]
    assert f"{record['svd_relative_error']['max']:.1%}" in warning[0]


def test_dare_adapter_merge_is_deterministic(models, tmp_path: Path) -> None:
    _, _, a1, a2 = models
    one = merge_inputs("dare", [a1, a2], tmp_path / "d1", density=0.3, seed=5)
    two = merge_inputs("dare", [a1, a2], tmp_path / "d2", density=0.3, seed=5)
    x, y = (load_file(str(p / "adapter_model.safetensors")) for p in (one, two))
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_full_models_merge_as_task_vectors(models, tmp_path: Path) -> None:
    root, base, _, _ = models
    ft1 = perturbed(base, root / "ft1", seed=1)
    ft2 = perturbed(base, root / "ft2", seed=2)
    out = merge_inputs("linear", [ft1, ft2], tmp_path / "tv", base=str(base), weights=[0.5, 0.5])
    b, f1, f2, m = (load_file(str(p / "model.safetensors")) for p in (base, ft1, ft2, out))
    # base + 0.5 (ft1 - base) + 0.5 (ft2 - base) = (ft1 + ft2) / 2
    for key in b:
        assert torch.allclose(m[key], (f1[key] + f2[key]) / 2, atol=1e-6)
    with pytest.raises(InputError, match="--base"):
        merge_inputs("linear", [ft1, ft2], tmp_path / "nobase")


def test_bad_inputs_exit_2(models, tmp_path: Path, run_cli) -> None:
    root, base, a1, a2 = models
    other = tiny_base(root, "other", seed=9)
    alien = lora_adapter(other, root / "alien", seed=4)
    dora = lora_adapter(base, root / "dora", preset="llm-attn", dora=True)
    cases = [
        (["linear", a1, a2, "--weights", "1,2,3"], "3 --weights for 2 inputs"),
        (["ties", a1, a2, "--weights", "0.5", "0.5"], "looks like a weight"),
        (["ties", a1], "at least two inputs"),
        (["dare", a1, a2, "--density", "1.5"], "density"),
        (["linear", a1, base], "mix adapters and full models"),
        (["linear", a1, alien], "different bases"),
        (["linear", a1, alien, "--base", base], "trained on"),
        (["ties", a1, dora], "DoRA"),
    ]
    for args, message in cases:
        result = run_cli("merge", *args, "--out", tmp_path / "x")
        assert result.code == 2, (args, result)
        assert message in result.err and result.err.strip().count("\n") == 0, result.err
    assert not (tmp_path / "x").exists()
    ok = run_cli("merge", "linear", "--adapters", a1, a2, "--weights", "0.5,0.5", "--out",
                 tmp_path / "ok")  # fmt: skip
    assert ok.code == 0, ok.err
    assert json.loads((tmp_path / "ok" / "merge.json").read_text())["weights"] == [0.5, 0.5]
