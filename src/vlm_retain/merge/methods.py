"""The merge arithmetic, as pure functions on ``{name: tensor}`` dicts.

Why pure functions: every merge method is a few lines of tensor arithmetic, and the cost of a
mistake (a sign flipped, a rescale forgotten) is a silently worse model. Keeping the math apart
from files, PEFT and transformers lets tests check each method against numbers worked out by
hand, and lets the same code serve full fine-tunes (task vectors on checkpoint tensors) and LoRA
adapters (effective deltas ``scaling * B @ A``).

Conventions:

- a *task vector* is ``theta_ft - theta_base`` (Ilharco et al. 2023);
- every function computes in float32 and returns float32 (callers cast back to the checkpoint's
  dtype), so bf16 inputs do not lose the small deltas DARE and TIES work with;
- ``weights`` are per-input multipliers (default 1.0 each) and ``scale`` is the paper's
  lambda applied to the merged task vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch

from vlm_retain.errors import InputError

Tensors = Mapping[str, torch.Tensor]


def _f32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float32)


def check_same_keys(dicts: Sequence[Tensors], labels: Sequence[str]) -> None:
    """Refuse inputs whose tensor names or shapes differ: merging them has no meaning."""
    first, first_label = dicts[0], labels[0]
    for other, label in zip(dicts[1:], labels[1:], strict=True):
        missing = sorted(set(first) - set(other))
        extra = sorted(set(other) - set(first))
        if missing or extra:
            name = (missing or extra)[0]
            side = label if missing else first_label
            raise InputError(
                f"tensor {name!r} is missing from {side} "
                f"({len(missing) + len(extra)} names differ)",
                hint="the models have different architectures",
            )
        for name, tensor in first.items():
            if tuple(tensor.shape) != tuple(other[name].shape):
                raise InputError(
                    f"tensor {name!r} has shape {list(tensor.shape)} in {first_label} but "
                    f"{list(other[name].shape)} in {label}",
                    hint="the models have different sizes or architectures",
                )


def interpolate(base: torch.Tensor, finetuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * base + alpha * finetuned`` in float32.

    Written as two products rather than ``base + alpha * (ft - base)`` so that alpha 0 and 1
    return the endpoints bit for bit (the WiSE-FT tests rely on it).
    """
    return (1.0 - alpha) * _f32(base) + alpha * _f32(finetuned)


def wise_ft(base: Tensors, finetuned: Tensors, alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT (Wortsman et al. 2022): interpolate every floating tensor of two models.

    Non-floating tensors (integer buffers) cannot be interpolated; they must be equal and are
    taken as they are.
    """
    check_alpha(alpha)
    check_same_keys([base, finetuned], ["the base", "the fine-tuned model"])
    out: dict[str, torch.Tensor] = {}
    for name, tensor in base.items():
        other = finetuned[name]
        if tensor.is_floating_point():
            out[name] = interpolate(tensor, other, alpha)
        elif torch.equal(tensor, other):
            out[name] = tensor
        else:
            raise InputError(f"non-floating tensor {name!r} differs between the models")
    return out


def check_alpha(alpha: float) -> None:
    """WiSE-FT's alpha lives in [0, 1]: outside it the result is extrapolation, not a mix."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha:g}")


def task_vector(finetuned: Tensors, base: Tensors) -> dict[str, torch.Tensor]:
    """``finetuned - base`` per floating tensor (non-floating tensors are left out)."""
    check_same_keys([base, finetuned], ["the base", "the fine-tuned model"])
    return {
        name: _f32(finetuned[name]) - _f32(tensor)
        for name, tensor in base.items()
        if tensor.is_floating_point()
    }


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise InputError(f"{len(weights)} weights for {n} inputs", hint="give one weight each")
    return [float(w) for w in weights]


def _check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise InputError(f"density must be in (0, 1], got {density:g}")


def _union_names(vectors: Sequence[Tensors]) -> list[str]:
    """Names in any input (a LoRA that skips a module contributes a zero delta there)."""
    names: dict[str, None] = {}
    for vector in vectors:
        names.update(dict.fromkeys(vector))
    return list(names)


def _stack(vectors: Sequence[Tensors], name: str) -> torch.Tensor:
    """The inputs' tensors for ``name`` stacked on dim 0 (zeros where an input lacks it)."""
    present = [v[name] for v in vectors if name in v]
    shape = present[0].shape
    rows = []
    for vector in vectors:
        tensor = vector.get(name)
        if tensor is None:
            rows.append(torch.zeros(shape, dtype=torch.float32))
        elif tensor.shape != shape:
            raise InputError(
                f"tensor {name!r} has shape {list(tensor.shape)} in one input and "
                f"{list(shape)} in another",
                hint="the inputs were made for different models",
            )
        else:
            rows.append(_f32(tensor))
    return torch.stack(rows)


def _column(weights: list[float], like: torch.Tensor) -> torch.Tensor:
    """Weights shaped to broadcast over a stack ``(n, *shape)``."""
    return torch.tensor(weights, dtype=torch.float32).view(-1, *([1] * (like.dim() - 1)))


def linear(
    vectors: Sequence[Tensors], weights: Sequence[float] | None = None, *, scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """Task arithmetic: ``scale * sum_i w_i * tau_i``.

    With the default weights (1.0 each) this is the plain sum of Ilharco et al.; pass
    ``weights=[1/n] * n`` for an average.
    """
    w = _weights(len(vectors), weights)
    out = {}
    for name in _union_names(vectors):
        stack = _stack(vectors, name)
        out[name] = scale * (stack * _column(w, stack)).sum(dim=0)
    return out


def trim(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """TIES step 1: keep the ``density`` fraction of entries with the largest magnitude.

    ``k = floor(density * numel)`` entries survive (at least one), as in PEFT; ties at the
    threshold are broken by ``torch.topk``'s order.
    """
    _check_density(density)
    if density >= 1.0:
        return _f32(tensor)
    flat = _f32(tensor).reshape(-1)
    k = max(1, int(density * flat.numel() + 1e-9))  # 1e-9: 0.29 * 100 is 28.99...
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat.abs(), k).indices] = True
    return (flat * keep).reshape(tensor.shape)


def elect_sign(stack: torch.Tensor) -> torch.Tensor:
    """TIES step 2: per entry, the sign with the larger total magnitude across inputs.

    ``sum(positive values) >= sum(|negative values|)`` is the same test as ``sum(values) >= 0``,
    so the elected sign is the sign of the sum (+1 where the sum is exactly 0).
    """
    return torch.where(stack.sum(dim=0) >= 0, 1.0, -1.0)


def disjoint_mean(stack: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """TIES step 3: mean over the inputs whose (non-zero) entry agrees with the elected sign."""
    agree = (torch.sign(stack) == sign) & (stack != 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (stack * agree).sum(dim=0) / count


def ties(
    vectors: Sequence[Tensors],
    weights: Sequence[float] | None = None,
    *,
    density: float = 0.2,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean, then ``scale``.

    The per-input weights multiply the trimmed vectors *before* the sign election, so a
    negative weight (forgetting a task) votes with its real direction; with the default weights
    this is the paper's algorithm exactly. Trimming is per tensor.
    """
    _check_density(density)
    w = _weights(len(vectors), weights)
    out = {}
    for name in _union_names(vectors):
        stack = _stack(vectors, name)
        trimmed = torch.stack([trim(row, density) for row in stack])
        weighted = trimmed * _column(w, trimmed)
        out[name] = scale * disjoint_mean(weighted, elect_sign(weighted))
    return out


def seed_for(seed: int, name: str, index: int) -> int:
    """A per-(tensor, input) seed, so DARE's masks do not depend on the order tensors are
    visited in (streamed shard by shard or all at once: the same result)."""
    digest = hashlib.sha256(f"{seed}:{index}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def dare_drop(tensor: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE (Yu et al. 2024): drop each entry with probability ``1 - density``, rescale the
    survivors by ``1 / density`` so the expected value of every entry is unchanged."""
    _check_density(density)
    if density >= 1.0:
        return _f32(tensor)
    keep = torch.rand(tensor.shape, generator=generator) < density
    return _f32(tensor) * keep / density


def dare(
    vectors: Sequence[Tensors],
    weights: Sequence[float] | None = None,
    *,
    density: float = 0.5,
    seed: int = 0,
    combine: str = "linear",
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """DARE each input (seeded), then combine linearly or with TIES' sign election.

    ``combine="ties"`` is DARE-TIES as in PEFT and mergekit: the random drop replaces TIES'
    magnitude trim, then sign election and the disjoint mean follow.
    """
    if combine not in ("linear", "ties"):
        raise InputError(f"unknown DARE combination {combine!r}", hint="use linear or ties")
    _check_density(density)
    w = _weights(len(vectors), weights)
    out = {}
    for name in _union_names(vectors):
        stack = _stack(vectors, name)
        dropped = torch.stack(
            [
                dare_drop(row, density, torch.Generator().manual_seed(seed_for(seed, name, i)))
                for i, row in enumerate(stack)
            ]
        )
        weighted = dropped * _column(w, dropped)
        if combine == "linear":
            out[name] = scale * weighted.sum(dim=0)
        else:
            out[name] = scale * disjoint_mean(weighted, elect_sign(weighted))
    return out


def add_delta(base: Tensors, delta: Tensors) -> dict[str, torch.Tensor]:
    """``base + delta`` for the tensors in ``delta``; the rest of ``base`` unchanged (float32
    where changed)."""
    unknown = sorted(set(delta) - set(base))
    if unknown:
        raise InputError(f"delta for {unknown[0]!r}, which the base model lacks")
    return {
        name: _f32(tensor) + delta[name] if name in delta else tensor
        for name, tensor in base.items()
    }


def low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Factor ``delta`` (out x in) as ``B @ A`` of rank ``rank`` by truncated SVD.

    Returns ``(A, B, relative_error)`` where ``A`` is (rank x in), ``B`` is (out x rank) and the
    error is ``||delta - B @ A||_F / ||delta||_F`` (0 for a zero delta). The singular values
    are split evenly (``sqrt(S)`` on each side) so A and B have similar scales, which keeps a
    further fine-tune of the merged adapter well conditioned.
    """
    d = _f32(delta)
    rank = max(1, min(rank, *d.shape))
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    root = s[:rank].sqrt()
    b = u[:, :rank] * root
    a = root[:, None] * vh[:rank]
    norm = torch.linalg.norm(d)
    error = float(torch.linalg.norm(d - b @ a) / norm) if norm > 0 else 0.0
    return a, b, error
