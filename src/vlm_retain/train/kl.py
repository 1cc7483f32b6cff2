"""KL between the base model's and the trained model's next-token distributions.

Why this is the retention term to trust most: it anchors what the model *says* rather than
its weights, on the very inputs (images included) where drift matters. It is LwF (Li & Hoiem)
applied to a VLM, and methods.md §3.3-3.4 lists what existing stacks get wrong: the reference
forward without pixels, a second model copy for LoRA, full-vocabulary memory.

Direction. ``forward`` (default) is ``KL(p_base || p_model) = sum p_base (log p_base - log
p_model)``: the trained model is penalized wherever the base put probability mass that it
dropped (mass-covering), which is what "keep what the base could do" means; it is LwF's and
GKD's ``beta = 0`` choice. ``reverse`` ``KL(p_model || p_base)`` is mode-seeking: the model may
drop base modes as long as what it keeps is likely under the base (used by on-policy
distillation); it is weaker as a retention anchor.

Temperature ``T`` softens both distributions; the result is multiplied by ``T**2`` so gradient
magnitudes stay comparable across temperatures (Hinton et al. 2015).

Memory. The reference is asked only for logits at the selected positions (``N x V``). The
per-position KL runs in chunks of ``chunk_size`` positions, each under activation
checkpointing, so only one chunk's float32 ``log_softmax`` exists at a time, forward and
backward. ``top_k`` keeps, per position, the ``k`` most likely tokens of the first argument of
the KL plus one "rest" bucket (a (k+1)-way KL: a lower bound that is exact when the tail is
empty); in the forward direction the reference is then reduced to ``k`` log-probabilities and
indices per position right after its forward, so its ``N x V`` logits are freed at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.train.packing import per_cell
from vlm_retain.train.positions import POSITIONS, logits_at, next_token_positions
from vlm_retain.train.reference import ReferenceModel

DIRECTIONS = ("forward", "reverse")
APPLY_ON = ("replay", "all")
_EPS = 1e-12


def kl_sum(
    model_logits: Any,
    ref: Any,
    *,
    direction: str = "forward",
    temperature: float = 1.0,
    top_k: int | None = None,
    chunk_size: int | None = None,
) -> Any:
    """Sum over positions of the per-position KL; ``model_logits`` is ``(N, V)`` with grad.

    ``ref`` is the reference's ``(N, V)`` logits, or the ``(log_probs, indices)`` pair from
    :func:`reduce_reference` (forward direction with ``top_k``).
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    n = model_logits.shape[0]
    step = chunk_size or n
    total = model_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, n, max(step, 1)):
        sl = slice(start, start + step)
        args = (ref[0][sl], ref[1][sl]) if isinstance(ref, tuple) else (ref[sl],)
        fn = _chunk_topk_ref if isinstance(ref, tuple) else _chunk_full
        if model_logits.requires_grad and chunk_size:
            part = checkpoint(
                fn, model_logits[sl], *args, direction, temperature, top_k, use_reentrant=False
            )
        else:
            part = fn(model_logits[sl], *args, direction, temperature, top_k)
        total = total + part
    return total * temperature**2


def reduce_reference(ref_logits: Any, temperature: float, top_k: int, chunk_size: int | None):
    """The reference's top-``k`` log-probabilities and indices per position (no grad)."""
    import torch

    vals, idx = [], []
    step = chunk_size or ref_logits.shape[0]
    for start in range(0, ref_logits.shape[0], max(step, 1)):
        lp = torch.log_softmax(ref_logits[start : start + step].float() / temperature, dim=-1)
        top = lp.topk(min(top_k, lp.shape[-1]), dim=-1)
        vals.append(top.values)
        idx.append(top.indices)
    return torch.cat(vals), torch.cat(idx)


def _chunk_full(z: Any, r: Any, direction: str, temperature: float, top_k: int | None) -> Any:
    import torch

    lq = torch.log_softmax(z.float() / temperature, dim=-1)
    lp = torch.log_softmax(r.float() / temperature, dim=-1)
    if direction == "reverse":
        lp, lq = lq, lp
    if top_k is None or top_k >= lp.shape[-1]:
        return (lp.exp() * (lp - lq)).sum()
    idx = lp.detach().topk(top_k, dim=-1).indices
    return _bucketed(lp.gather(-1, idx), lq.gather(-1, idx))


def _chunk_topk_ref(
    z: Any, ref_vals: Any, ref_idx: Any, direction: str, temperature: float, top_k: int | None
) -> Any:
    import torch

    lq = torch.log_softmax(z.float() / temperature, dim=-1)
    return _bucketed(ref_vals, lq.gather(-1, ref_idx))


def _bucketed(a: Any, b: Any) -> Any:
    """KL over ``k`` named tokens plus one bucket for the rest (``a``, ``b``: log-probs)."""
    pa = a.exp()
    head = (pa * (a - b)).sum(-1)
    tail_p = (1 - pa.sum(-1)).clamp_min(_EPS)
    tail_q = (1 - b.exp().sum(-1)).clamp_min(_EPS)
    return (head + tail_p * (tail_p.log() - tail_q.log())).sum()


@dataclass
class KLToBase:
    """Objective: mean per-position KL between base and trained model (see module docstring).

    ``on="replay"`` applies it only to rows with ``batch["replay"]`` True (the collator's
    per-row flag); rows of target data are left free to move. A batch without selected rows
    costs nothing (no reference forward) and gives 0. ``on="all"`` uses every row (LwF-style).
    ``extra`` holds ``positions`` (how many positions were compared) for logging.
    """

    reference: ReferenceModel
    weight: float = 1.0
    direction: str = "forward"
    temperature: float = 1.0
    top_k: int | None = None
    chunk_size: int | None = 512
    positions: str = "supervised"
    on: str = "replay"
    name: str = "kl"
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise InputError(f"unknown KL direction {self.direction!r}", hint=f"{DIRECTIONS}")
        if self.on not in APPLY_ON:
            raise InputError(f"unknown KL 'on' {self.on!r}", hint=f"use {', '.join(APPLY_ON)}")
        if self.positions not in POSITIONS:
            raise InputError(f"unknown KL positions {self.positions!r}", hint=f"{POSITIONS}")
        if self.temperature <= 0:
            raise InputError("KL temperature must be > 0", field="kl.temperature")
        if self.top_k is not None and self.top_k < 1:
            raise InputError("KL top_k must be >= 1", field="kl.top_k")

    def __call__(self, batch: Mapping[str, Any], outputs: Any) -> Any:
        from vlm_retain.train.objectives import model_inputs

        logits = outputs.logits
        mask = self.select(batch)
        count = int(mask.sum())
        self.extra = {"positions": float(count)}
        if count == 0:  # zero, on the graph (a step may have no other term to backpropagate)
            return logits.sum().float() * 0.0
        ref = self.reference.logits(model_inputs(batch), positions=mask)
        if self.top_k is not None and self.direction == "forward":
            ref = reduce_reference(ref, self.temperature, self.top_k, self.chunk_size)
        total = kl_sum(
            logits_at(outputs, mask),
            ref,
            direction=self.direction,
            temperature=self.temperature,
            top_k=self.top_k,
            chunk_size=self.chunk_size,
        )
        return total / count

    def logit_positions(self, batch: Mapping[str, Any]) -> Any:
        """The logits this objective reads (see :mod:`vlm_retain.train.positions`)."""
        return self.select(batch)

    def normaliser(self, batch: Mapping[str, Any]) -> int:
        """What the mean divides by: the positions compared (see ``CrossEntropy.normaliser``)."""
        return int(self.select(batch).sum())

    def select(self, batch: Mapping[str, Any]) -> Any:
        """The ``(B, T)`` positions this objective compares for ``batch``."""
        mask = next_token_positions(batch, self.positions)
        if self.on == "replay":
            if "replay" not in batch:
                raise InputError(
                    "KL on replay batches needs batch['replay'] (one bool per row)",
                    field="kl.on",
                    hint="have the collator add it, or set kl.on: all",
                )
            mask = mask & per_cell(batch, batch["replay"].to(mask.device))
        return mask
