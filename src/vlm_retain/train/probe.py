"""Watching retention while training: a small general probe, KL drift, and the retention floor.

Why a probe inside the loop: forgetting shows up long before the end of a run (the demo's full
fine-tune lost 75 % of its VQA in 300 steps, demo-feasibility.md §3), and a final evaluation
only says that it happened. Every ``probe.every_steps`` the live model answers a fixed, small
set of general questions greedily; the score divided by the base model's score on the same
items (measured once, before the first step) is the *probe retention*. Beside it, the KL drift
``KL(base || model)`` on the same inputs, teacher-forced on each item's first reference answer,
moves smoothly where accuracy moves in steps. With ``probe.retention_floor`` the run stops when
retention falls below the floor and keeps the last state that was at or above it
(:class:`RetentionWatch`).

Layering: ``train`` does not import ``evaluate`` (ARCHITECTURE.md), so generation and scoring
come in as functions (:class:`ProbeSuite`): the CLI builds them from the task registry, the HF
generation backend and the VQA metric; tests can pass their own. Caption tasks are left out of
the probe: their metrics need pycocoevalcap's Java tokenizer (seconds per call), too slow to
run every few steps; VQA accuracy is cheap and moves with general skill.

The base's next-token distributions are kept as their top-``k`` log-probabilities per answer
position (k = 1024 by default: a few MB for 64 items even with a 150k vocabulary), so the
drift needs no second model copy, for full tuning as for LoRA.

Retention when the base scores 0 on the probe: 1.0 ("nothing was lost"), so a floor never
fires on a probe the base cannot do; the summary shows the base score so this is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError

#: ``generate(images, prompts) -> answers`` with the model given to the factory (greedy).
GenerateFn = Callable[[list[Any], list[str]], list[str]]


@dataclass(frozen=True)
class ProbeItem:
    """One probe question: image (a path, a decoded PIL image, or None), rendered prompt,
    reference answers, and its task's name."""

    id: str
    task: str
    image: Any
    prompt: str
    answers: tuple[str, ...]


@dataclass
class ProbeSuite:
    """The probe's items and how to answer and score them.

    ``generator(loaded) -> GenerateFn`` builds greedy generation for a
    :class:`~vlm_retain.models.loading.LoadedModel` whose ``model`` is the live model;
    ``score(prediction, answers) -> float`` in [0, 1] scores one item (VQA accuracy).
    """

    items: list[ProbeItem]
    generator: Callable[[Any], GenerateFn]
    score: Callable[[str, Sequence[str]], float]

    def __post_init__(self) -> None:
        if not self.items:
            raise InputError("the probe has no items", field="probe.data")


@dataclass
class ProbeResult:
    """One probe: mean score, per-task scores, retention and KL drift (None before a base)."""

    step: int
    score: float
    tasks: dict[str, float]
    retention: float | None = None
    kl: float | None = None
    seconds: float = 0.0

    def log_fields(self) -> dict[str, float]:
        out = {"probe/score": self.score}
        out.update({f"probe/{task}": value for task, value in self.tasks.items()})
        if self.retention is not None:
            out["probe/retention"] = self.retention
        if self.kl is not None:
            out["probe/kl_to_base"] = self.kl
        return out

    def line(self) -> str:
        text = f"probe step {self.step}: score {self.score:.4f}"
        if self.retention is not None:
            text += f", retention {self.retention:.3f}"
        if self.kl is not None:
            text += f", KL to base {self.kl:.4f}"
        tasks = ", ".join(f"{k} {v:.3f}" for k, v in self.tasks.items())
        return f"{text} ({tasks}; {self.seconds:.1f}s)"


def retention(score: float, base: float) -> float:
    """``score / base``; 1.0 when the base scores 0 (see the module docstring)."""
    return score / base if base > 0 else 1.0


class Probe:
    """Runs a :class:`ProbeSuite` on the live model and measures KL drift to the base.

    Call :meth:`baseline` once on the untrained model (it records the base score and the base
    log-probabilities), then :meth:`run` at probe steps. The model's per-module train/eval
    flags are restored after each call.
    """

    def __init__(
        self,
        suite: ProbeSuite,
        loaded: Any,
        *,
        batch_size: int = 16,
        top_k: int = 1024,
        max_pixels: int | None = None,
    ) -> None:
        self.suite = suite
        self.loaded = loaded
        self.batch_size = batch_size
        self.top_k = top_k
        self.max_pixels = max_pixels
        self.base: ProbeResult | None = None
        self._base_logprobs: list[tuple[Any, Any]] = []
        self._batches: list[dict[str, Any]] | None = None

    def baseline(self, model: Any) -> ProbeResult:
        """Score the base model (step 0) and keep its top-k next-token log-probabilities."""
        from vlm_retain.train.kl import reduce_reference

        result = self._score(model, step=0)
        with _eval_mode(model):
            self._base_logprobs = [
                reduce_reference(self._logits(model, batch), 1.0, self.top_k, 512)
                for batch in self._kl_batches()
            ]
        result.retention, result.kl = 1.0, 0.0
        self.base = result
        return result

    def run(self, model: Any, step: int) -> ProbeResult:
        """Score the live model; retention against :meth:`baseline`'s score; KL drift."""
        from vlm_retain.train.kl import kl_sum

        if self.base is None:
            raise RuntimeError("Probe.baseline must run before Probe.run")
        result = self._score(model, step=step)
        result.retention = retention(result.score, self.base.score)
        total, count = 0.0, 0
        with _eval_mode(model):
            for batch, ref in zip(self._kl_batches(), self._base_logprobs, strict=True):
                logits = self._logits(model, batch)
                total += float(kl_sum(logits, ref, top_k=self.top_k, chunk_size=512))
                count += int(logits.shape[0])
        result.kl = total / count if count else 0.0
        return result

    # ------------------------------------------------------------------ internals
    def _score(self, model: Any, step: int) -> ProbeResult:
        import dataclasses
        import time

        start = time.perf_counter()
        live = dataclasses.replace(self.loaded, model=model)
        generate = self.suite.generator(live)
        items = self.suite.items
        with _eval_mode(model):
            answers = generate([i.image for i in items], [i.prompt for i in items])
        per_task: dict[str, list[float]] = {}
        for item, answer in zip(items, answers, strict=True):
            per_task.setdefault(item.task, []).append(self.suite.score(answer, item.answers))
        scores = [s for values in per_task.values() for s in values]
        return ProbeResult(
            step=step,
            score=sum(scores) / len(scores),
            tasks={k: sum(v) / len(v) for k, v in sorted(per_task.items())},
            seconds=time.perf_counter() - start,
        )

    def _kl_batches(self) -> list[dict[str, Any]]:
        """The probe items with their first reference answer, encoded once (right padded)."""
        if self._batches is None:
            from vlm_retain.models.encoding import encode
            from vlm_retain.train.collate import load_image

            facts = self.loaded.family.image
            unit = facts.unit if facts.dynamic else None
            self._batches = []
            items = [i for i in self.suite.items if i.answers]
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                images = [
                    load_image(i.image, max_pixels=self.max_pixels, unit=unit)
                    if isinstance(i.image, Path)
                    else i.image
                    for i in chunk
                ]
                self._batches.append(
                    encode(
                        self.loaded,
                        images,
                        [i.prompt for i in chunk],
                        [i.answers[0] for i in chunk],
                        padding_side="right",
                    )
                )
        return self._batches

    def _logits(self, model: Any, batch: dict[str, Any]) -> Any:
        """The model's logits at the supervised positions, ``(N, V)``, without gradients."""
        import torch

        from vlm_retain.models.loading import batch_to
        from vlm_retain.train.objectives import model_inputs
        from vlm_retain.train.positions import next_token_positions

        batch = batch_to(dict(batch), self.loaded)
        mask = next_token_positions(batch, "supervised")
        with torch.no_grad():
            logits = model(**model_inputs(batch)).logits
        return logits[mask].float()


class _eval_mode:
    """Eval mode inside the block; every module's own flag restored afterwards."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.flags: list[tuple[Any, bool]] = []

    def __enter__(self) -> None:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.flags:
            module.training = training


@dataclass
class RetentionWatch:
    """The retention floor: which states are "good", and when to stop.

    A state is good when its probe retention is at or above ``floor`` (step 0, the base, always
    is). The trainer checkpoints every good probe step and keeps the last one through rotation;
    when a probe falls below the floor, :meth:`observe` returns True and the trainer restores
    ``last_good_step`` and saves it as the final result.
    """

    floor: float | None
    last_good_step: int = 0
    last_good_retention: float = 1.0
    breached_at: int | None = None
    breach_retention: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, result: ProbeResult) -> bool:
        """Record a probe; True when it breaches the floor (the run should stop)."""
        self.history.append({"step": result.step, **result.log_fields()})
        value = result.retention
        if self.floor is None or value is None:
            return False
        if value >= self.floor:
            self.last_good_step, self.last_good_retention = result.step, value
            return False
        self.breached_at, self.breach_retention = result.step, value
        return True

    def is_good(self, result: ProbeResult) -> bool:
        return self.floor is not None and (result.retention or 0.0) >= self.floor

    def state(self) -> dict[str, Any]:
        return {
            "last_good_step": self.last_good_step,
            "last_good_retention": self.last_good_retention,
            "history": self.history,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.last_good_step = int(state.get("last_good_step", 0))
        self.last_good_retention = float(state.get("last_good_retention", 1.0))
        self.history = list(state.get("history", []))


def eval_loss(model: Any, batches: Sequence[dict[str, Any]], loaded: Any) -> float:
    """Mean answer-token cross-entropy of ``model`` on held-out batches (``data.eval``)."""
    import torch

    from vlm_retain.models.loading import batch_to
    from vlm_retain.train.objectives import CrossEntropy, model_inputs

    ce = CrossEntropy()
    total, count = 0.0, 0
    with _eval_mode(model), torch.no_grad():
        for batch in batches:
            moved = batch_to(dict(batch), loaded)
            value = ce(moved, model(**model_inputs(moved)))
            n = int((moved["labels"][:, 1:] != -100).sum())
            total += float(value) * n
            count += n
    return total / count if count else float("nan")
