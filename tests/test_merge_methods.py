"""The merge arithmetic against numbers worked out by hand (comments show the sums)."""

from __future__ import annotations

import pytest
import torch

from vlm_retain.errors import InputError
from vlm_retain.merge import methods


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_wise_ft_endpoints_and_midpoint() -> None:
    base = {"w": t(1.0, 2.0, -4.0), "step": torch.tensor([3])}
    ft = {"w": t(3.0, 0.0, 4.0), "step": torch.tensor([3])}
    assert torch.equal(methods.wise_ft(base, ft, 0.0)["w"], base["w"])
    assert torch.equal(methods.wise_ft(base, ft, 1.0)["w"], ft["w"])
    # 0.5 * (1, 2, -4) + 0.5 * (3, 0, 4) = (2, 1, 0)
    assert torch.equal(methods.wise_ft(base, ft, 0.5)["w"], t(2.0, 1.0, 0.0))
    # 0.25: 0.75 * 1 + 0.25 * 3 = 1.5; 0.75 * 2 + 0 = 1.5; 0.75 * -4 + 0.25 * 4 = -2
    assert torch.allclose(methods.wise_ft(base, ft, 0.25)["w"], t(1.5, 1.5, -2.0))
    assert torch.equal(methods.wise_ft(base, ft, 0.5)["step"], torch.tensor([3]))


def test_wise_ft_refuses_bad_inputs() -> None:
    with pytest.raises(InputError, match="shape"):
        methods.wise_ft({"w": t(1.0, 2.0)}, {"w": t(1.0)}, 0.5)
    with pytest.raises(InputError, match="missing"):
        methods.wise_ft({"w": t(1.0)}, {"v": t(1.0)}, 0.5)
    with pytest.raises(InputError, match=r"alpha must be in \[0, 1\]"):
        methods.wise_ft({"w": t(1.0)}, {"w": t(1.0)}, 1.5)


def test_task_vector_and_linear() -> None:
    base = {"w": t(1.0, 1.0, 1.0)}
    tau = methods.task_vector({"w": t(2.0, 0.0, 1.5)}, base)
    assert torch.equal(tau["w"], t(1.0, -1.0, 0.5))
    a, b = {"w": t(1.0, -2.0, 3.0)}, {"w": t(3.0, 2.0, -1.0)}
    # default weights 1: (1+3, -2+2, 3-1) = (4, 0, 2)
    assert torch.equal(methods.linear([a, b])["w"], t(4.0, 0.0, 2.0))
    # weights (0.5, 0.25), scale 2: 2 * (0.5 + 0.75, -1 + 0.5, 1.5 - 0.25) = (2.5, -1, 2.5)
    merged = methods.linear([a, b], [0.5, 0.25], scale=2.0)["w"]
    assert torch.allclose(merged, t(2.5, -1.0, 2.5))
    with pytest.raises(InputError, match="1 weights for 2 inputs"):
        methods.linear([a, b], [1.0])


def test_linear_treats_a_missing_tensor_as_zero() -> None:
    merged = methods.linear([{"w": t(1.0), "v": t(5.0)}, {"w": t(2.0)}])
    assert torch.equal(merged["w"], t(3.0)) and torch.equal(merged["v"], t(5.0))


def test_ties_by_hand() -> None:
    tau1 = {"w": t(4.0, -1.0, 2.0, 0.5, -3.0)}
    tau2 = {"w": t(-2.0, 3.0, 1.0, -0.5, -1.5)}
    tau3 = {"w": t(1.0, 2.0, -5.0, 0.2, 0.1)}
    # trim, density 0.6 -> keep floor(0.6 * 5) = 3 largest magnitudes per tensor:
    #   tau1: |4|, |-3|, |2|     -> ( 4,  0,  2, 0, -3)
    #   tau2: |3|, |-2|, |-1.5|  -> (-2,  3,  0, 0, -1.5)
    #   tau3: |-5|, |2|, |1|     -> ( 1,  2, -5, 0,  0)
    trimmed2 = methods.trim(tau2["w"], 0.6)
    assert torch.equal(trimmed2, t(-2.0, 3.0, 0.0, 0.0, -1.5))
    # elect sign = sign of the column sums:
    #   (4-2+1=3 +), (0+3+2=5 +), (2+0-5=-3 -), (0 -> +), (-3-1.5+0=-4.5 -)
    # disjoint mean of the entries that agree (zeros never vote):
    #   col 0: +: 4, 1 -> 2.5 ; col 1: +: 3, 2 -> 2.5 ; col 2: -: -5 -> -5 ;
    #   col 3: nothing -> 0  ; col 4: -: -3, -1.5 -> -2.25
    merged = methods.ties([tau1, tau2, tau3], density=0.6)["w"]
    assert torch.allclose(merged, t(2.5, 2.5, -5.0, 0.0, -2.25))
    # scale (lambda) multiplies the result
    scaled = methods.ties([tau1, tau2, tau3], density=0.6, scale=0.5)["w"]
    assert torch.allclose(scaled, t(1.25, 1.25, -2.5, 0.0, -1.125))


def test_ties_negative_weight_votes_with_its_direction() -> None:
    a, b = {"w": t(2.0)}, {"w": t(1.0)}
    # weights (1, -3): weighted (2, -3); sum -1 -> sign -; only -3 agrees -> -3
    assert torch.equal(methods.ties([a, b], [1.0, -3.0], density=1.0)["w"], t(-3.0))


def test_ties_matches_peft_with_equal_weights() -> None:
    from peft.utils.merge_utils import ties as peft_ties

    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(16, 8, generator=g) for _ in range(3)]
    ours = methods.ties([{"w": x} for x in tensors], density=0.3)["w"]
    theirs = peft_ties(tensors, torch.ones(3), 0.3, "total")
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_dare_is_seeded_and_rescales() -> None:
    tau = {"w": torch.full((1000,), 2.0)}
    first = methods.dare([tau, tau], density=0.25, seed=7)["w"]
    again = methods.dare([tau, tau], density=0.25, seed=7)["w"]
    other = methods.dare([tau, tau], density=0.25, seed=8)["w"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    # each input keeps an entry as 2 / 0.25 = 8 or drops it to 0; the sum of two is 0, 8 or 16
    assert set(first.unique().tolist()) <= {0.0, 8.0, 16.0}


def test_dare_drop_is_unbiased_on_a_big_tensor() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1_000_000, generator=g) + 0.5
    dropped = methods.dare_drop(x, 0.2, torch.Generator().manual_seed(1))
    kept = (dropped != 0).float().mean()
    assert abs(float(kept) - 0.2) < 0.005  # about 20% survive
    # E[mask / p] = 1, so the mean is preserved: |mean diff| ~ sd / sqrt(n) * 2 = 0.0045
    assert abs(float(dropped.mean() - x.mean())) < 0.02
    survivors = dropped != 0
    assert torch.allclose(dropped[survivors], x[survivors] / 0.2)


def test_dare_ties_by_hand_at_density_one() -> None:
    # density 1 drops nothing, so DARE-TIES is sign election + disjoint mean:
    # (3, -1) sum 2 + -> 3 ; (-2, -4) -> mean(-2, -4) = -3
    a, b = {"w": t(3.0, -2.0)}, {"w": t(-1.0, -4.0)}
    assert torch.equal(methods.dare([a, b], density=1.0, combine="ties")["w"], t(3.0, -3.0))
    assert torch.equal(methods.dare([a, b], density=1.0)["w"], t(2.0, -6.0))
    with pytest.raises(InputError, match="density"):
        methods.dare([a, b], density=0.0)


def test_low_rank_is_exact_at_full_rank_and_reports_error() -> None:
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 2, generator=g) @ torch.randn(2, 5, generator=g)  # rank 2
    a, b, error = methods.low_rank(delta, 2)
    assert a.shape == (2, 5) and b.shape == (6, 2)
    assert torch.allclose(b @ a, delta, atol=1e-5) and error < 1e-5
    _, _, lossy = methods.low_rank(delta, 1)
    assert 0 < lossy < 1
