"""``train.chunk_rows: auto``: how many samples one forward/backward holds, and whether gradient
checkpointing is needed, chosen by trying on the GPU at the start of a run.

Why trying and not a formula: activation memory depends on the attention kernel, compilation,
the vision tower, LoRA or full tuning and the KL teacher pass; a forward and backward of the
worst chunk the run will see (the longest samples of each modality in epoch 0, through the
run's own objectives) measures all of it at once. A trial takes the step's time; a run tries at
most ``2 log2(batch_size) + 4`` of them, once (a resumed run reuses the recorded choice).

The order follows what was measured on an H200 (7B shape, LoRA, docs/performance.md):
gradient checkpointing made a step 2.9x slower, while a quarter of the micro-batch (64 -> 16)
cost 1.25-1.6x in tokens/s. So, without checkpointing, rows ``B, ceil(B/2), ... 1`` are tried
and the first that fits is taken; if it is the whole micro-batch, nothing more is tried. Under
``gradient_checkpointing: auto`` and a smaller fit, checkpointing is tried with more rows, and
when it holds more, both are timed (a second pass each: the first may compile) and the one with
more tokens per second wins. Checkpointing ``on`` or ``off`` fixes that half of the choice.

"Fits": the trial's peak allocated memory, plus what the step will hold that a trial does not
(:func:`step_reserve`: AdamW's state, allocated at the first step; the gradients already
accumulated when a pass is not the step's only one; the vision cache's room), is at most
``(1 - headroom)`` of what this process may use (the device's memory less what other processes
hold). The headroom (10%) covers later batches a little longer than epoch 0's (replay is
redrawn every epoch) and the allocator's fragmentation; an out-of-memory first step still
halves the chunk (the trainer's fallback).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from vlm_retain.errors import InputError
from vlm_retain.models.loading import is_oom, release_accelerator_memory

HEADROOM = 0.10
GIB = 1024**3


@dataclass
class Trial:
    """One tried setting: did it fit, its peak (GiB, None after out of memory), the seconds
    and tokens of a timed pass (None when not timed)."""

    rows: int
    checkpointing: bool
    fits: bool
    peak_gib: float | None
    need_gib: float | None
    seconds: float | None = None
    tokens: int | None = None

    @property
    def tokens_per_s(self) -> float | None:
        if not self.seconds or self.tokens is None:
            return None
        return self.tokens / self.seconds


@dataclass
class MemoryPlan:
    """The choice, why, and every trial (written to ``train_summary.json``)."""

    rows: int
    checkpointing: bool
    reason: str
    capacity_gib: float
    trials: list[Trial]

    def summary(self) -> dict[str, Any]:
        return {
            "chunk_rows": self.rows,
            "gradient_checkpointing": self.checkpointing,
            "reason": self.reason,
            "capacity_gib": round(self.capacity_gib, 2),
            "trials": [{k: _rounded(v) for k, v in asdict(t).items()} for t in self.trials],
        }


class MemoryGauge(Protocol):
    """Peak memory of a trial and what the process may use (bytes)."""

    def reset(self) -> None: ...

    def peak_bytes(self) -> int: ...

    def capacity_bytes(self) -> int: ...


class CudaGauge:
    """The CUDA caching allocator's peak, and the device's memory less other processes'."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def reset(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        import torch

        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device))

    def capacity_bytes(self) -> int:
        import torch

        free, total = torch.cuda.mem_get_info(self.device)
        others = total - free - torch.cuda.memory_reserved(self.device)
        return int(total - max(others, 0))


class CappedGauge:
    """Another gauge with at most ``cap_bytes`` to use (``vlm-retain bench gpu
    --memory-cap-gib``: the plan a smaller card would get, on a large one)."""

    def __init__(self, gauge: MemoryGauge, cap_bytes: float) -> None:
        self.gauge = gauge
        self.cap_bytes = cap_bytes

    def reset(self) -> None:
        self.gauge.reset()

    def peak_bytes(self) -> int:
        return self.gauge.peak_bytes()

    def capacity_bytes(self) -> int:
        return int(min(self.gauge.capacity_bytes(), self.cap_bytes))

    def close(self) -> None:
        close = getattr(self.gauge, "close", None)
        if close is not None:
            close()


class SavedTensorGauge:
    """On CPU, where no allocator keeps a peak: the bytes autograd saves for backward between
    ``reset`` and ``peak_bytes`` (the activations, the part of a step's memory that grows with
    the rows; weights saved by reference are counted too). Capacity: ``capacity`` bytes. The
    bench's CPU check and the tests plan with it; a GPU run uses :class:`CudaGauge`."""

    def __init__(self, capacity: float = float("inf")) -> None:
        self.capacity = capacity
        self.saved = 0
        self.peaks: list[int] = []
        self._hooks: Any = None

    def reset(self) -> None:
        import torch

        self.close()
        self.saved = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()

    def _pack(self, tensor: Any) -> Any:
        self.saved += tensor.numel() * tensor.element_size()
        return tensor

    def peak_bytes(self) -> int:
        self.close()
        self.peaks.append(self.saved)
        return self.saved

    def capacity_bytes(self) -> int:
        return int(min(self.capacity, 2**62))

    def close(self) -> None:
        """Stop counting (a trial that failed never asked for its peak)."""
        if self._hooks is not None:
            hooks, self._hooks = self._hooks, None
            hooks.__exit__(None, None, None)


def candidate_rows(batch_size: int, above: int = 0) -> list[int]:
    """``batch_size, ceil(batch_size / 2), ... 1``, keeping only those above ``above``."""
    rows, out = batch_size, []
    while True:
        if rows > above and rows not in out:
            out.append(rows)
        if rows == 1:
            return out
        rows = math.ceil(rows / 2)


def choose_plan(
    batch_size: int,
    try_rows: Callable[[int, bool, bool], Trial],
    checkpointing: str,
    capacity_gib: float,
) -> MemoryPlan:
    """The plan (see the module docstring); ``try_rows(rows, checkpointing, timed)`` runs one
    trial. Nothing fitting at one row is an :class:`InputError` saying what to lower."""
    trials: list[Trial] = []

    def largest(ckpt: bool, above: int = 0) -> Trial | None:
        for rows in candidate_rows(batch_size, above):
            trial = try_rows(rows, ckpt, False)
            trials.append(trial)
            if trial.fits:
                return trial
        return None

    def plan(rows: int, ckpt: bool, reason: str) -> MemoryPlan:
        return MemoryPlan(rows, ckpt, reason, capacity_gib, trials)

    plain = largest(False) if checkpointing != "on" else None
    if plain is not None and (plain.rows == batch_size or checkpointing == "off"):
        whole = plain.rows == batch_size
        return plan(plain.rows, False, "the whole micro-batch fits" if whole else "largest fit")
    if checkpointing == "off":
        raise _nothing_fits(batch_size, "off")
    held = largest(True, above=plain.rows if plain is not None else 0)
    if held is None:
        if plain is None:
            raise _nothing_fits(batch_size, checkpointing)
        return plan(plain.rows, False, "checkpointing holds no more rows")
    if checkpointing == "on":
        whole = held.rows == batch_size
        return plan(held.rows, True, "the whole micro-batch fits" if whole else "largest fit")
    if plain is None:
        return plan(held.rows, True, "fits only with checkpointing")
    timed = [try_rows(plain.rows, False, True), try_rows(held.rows, True, True)]
    trials.extend(timed)
    fast_plain, fast_held = (t.tokens_per_s or 0.0 for t in timed)
    if fast_held > fast_plain:
        return plan(held.rows, True, f"faster with checkpointing ({fast_held:.0f} tokens/s)")
    return plan(plain.rows, False, f"faster without checkpointing ({fast_plain:.0f} tokens/s)")


def _nothing_fits(batch_size: int, checkpointing: str) -> InputError:
    tips = ["lower data.max_pixels"]
    if checkpointing == "off":
        tips.insert(0, "set train.gradient_checkpointing: auto")
    return InputError(
        f"out of GPU memory with one sample per forward (train.batch_size {batch_size}, "
        f"gradient checkpointing {checkpointing})",
        field="train.chunk_rows",
        hint="; ".join(tips) + ", or train a smaller part of the model (tuning)",
    )


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def longest_by_modality(samples: Sequence[Any]) -> list[list[Any]]:
    """The worst chunks a run will see: per modality (image rows, text-only rows; batches
    never mix them), the samples by decreasing estimated tokens."""
    by_modality: dict[bool, list[Any]] = {}
    for sample in samples:
        by_modality.setdefault(sample.image is not None, []).append(sample)
    return [sorted(group, key=lambda s: -s.tokens) for _, group in sorted(by_modality.items())]


class ChunkTrials:
    """``try_rows`` for :func:`choose_plan` on the run's own model, objectives and data.

    Each trial collates the first ``rows`` items of each of ``groups`` (worst first:
    :func:`longest_by_modality`) and runs forward, the objectives and backward on them, as a
    training chunk does, but without an optimizer step: gradients are dropped after, and the
    torch RNG is restored (dropout draws in a trial do not shift the run's). What a trial
    cannot hold is added by ``reserve_bytes(rows)`` (:func:`step_reserve`). Under DDP
    (``accelerator``) every process tries the same settings and they agree (a setting fits
    only if it fits everywhere; time is the slowest process's); without one, one process.
    """

    def __init__(
        self,
        *,
        model: Any,
        groups: Sequence[Sequence[Any]],
        collate: Callable[[list[Any]], dict[str, Any]],
        prepare: Callable[[dict[str, Any]], dict[str, Any]],
        loss: Callable[[Any, dict[str, Any]], Any],
        set_checkpointing: Callable[[bool], None],
        gauge: MemoryGauge,
        reserve_bytes: Callable[[int], int],
        accelerator: Any = None,
        headroom: float = HEADROOM,
    ) -> None:
        self.accelerator = accelerator
        self.model = model
        self.groups = [list(group) for group in groups if group]
        self.collate = collate
        self.prepare = prepare
        self.loss = loss
        self.set_checkpointing = set_checkpointing
        self.gauge = gauge
        self.reserve_bytes = reserve_bytes
        self.capacity_bytes = gauge.capacity_bytes()
        self.limit_bytes = (1 - headroom) * self.capacity_bytes

    def __call__(self, rows: int, checkpointing: bool, timed: bool) -> Trial:
        import torch

        from vlm_retain.train.packing import count_tokens

        self.set_checkpointing(checkpointing)
        peak, seconds, tokens, fits = 0, 0.0, 0, True
        device = next(self.model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        no_sync = self.accelerator.no_sync(self.model) if self.accelerator else nullcontext()
        with torch.random.fork_rng(devices=devices), no_sync:
            # every pass is run even after one ran out of memory, so that every process
            # makes the same calls (the trainer's DDP does not broadcast buffers at forward)
            for group in self.groups:
                for _ in range(2 if timed else 1):
                    try:
                        batch = self.prepare(self.collate(group[:rows]))
                        self.gauge.reset()
                        start = time.perf_counter()
                        self.loss(self.model, batch).backward()
                        peak = max(peak, self.gauge.peak_bytes())
                        took = time.perf_counter() - start
                    except Exception as exc:  # only out-of-memory means "does not fit"
                        if not is_oom(exc):
                            raise
                        fits, took = False, 0.0
                    finally:
                        close = getattr(self.gauge, "close", None)
                        if close is not None:
                            close()  # a failed pass never asked for its peak
                        self.model.zero_grad(set_to_none=True)
                        release_accelerator_memory()
                seconds += took  # the last pass's: the first may have compiled
                tokens += count_tokens(batch) if fits else 0
        need = peak + self.reserve_bytes(rows)
        fits, seconds = self._agree(fits and need <= self.limit_bytes, seconds)
        return Trial(
            rows=rows,
            checkpointing=checkpointing,
            fits=fits,
            peak_gib=peak / GIB if peak else None,
            need_gib=need / GIB if peak else None,
            seconds=seconds if timed and fits else None,
            tokens=tokens if timed and fits else None,
        )

    def _agree(self, fits: bool, seconds: float) -> tuple[bool, float]:
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return fits, seconds
        import torch

        local = torch.tensor([0.0 if fits else 1.0, seconds], device=self.accelerator.device)
        every = self.accelerator.gather(local[None]).reshape(-1, 2)
        return bool(every[:, 0].max() == 0), float(every[:, 1].max())


def optimizer_reserve_bytes(optimizer: Any, trainable: Sequence[Any]) -> int:
    """AdamW's state still to be allocated: two tensors like each trainable parameter, unless
    the state exists already (a resumed run, whose trials then include it)."""
    if len(getattr(optimizer, "state", {})) > 0:
        return 0
    return sum(2 * p.numel() * p.element_size() for p in trainable)


def step_reserve(
    optimizer: Any,
    trainable: Sequence[Any],
    *,
    batch_size: int,
    grad_accum: int,
    extra_bytes: int = 0,
) -> Callable[[int], int]:
    """``reserve(rows)``: what a step at ``rows`` per pass holds that a trial does not see.
    AdamW's state (:func:`optimizer_reserve_bytes`); ``extra_bytes`` (the vision cache's room
    still to fill); and, when the pass is not the step's only one (chunks, or
    ``grad_accum > 1``), the gradients already accumulated, which a trial starting from none
    never holds during its forward (a whole copy of the trainable weights: small for LoRA,
    the size of the model for full fine-tuning)."""
    state = optimizer_reserve_bytes(optimizer, trainable)
    grads = sum(p.numel() * p.element_size() for p in trainable)

    def reserve(rows: int) -> int:
        several = rows < batch_size or grad_accum > 1
        return state + extra_bytes + (grads if several else 0)

    return reserve
