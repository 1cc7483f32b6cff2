"""Retention, the gate and the choice of a sweep point: pure functions on numbers.

Why pure: which alpha gets deployed is the decision the whole sweep exists for, so the rule must
be readable in one place and testable on hand-made fixtures, with no model or file in sight.

The rule (the same as the report's gate):

- retention of a general metric = point / base for higher-is-better metrics (base / point for
  lower-is-better ones, so above 1 always means "better than the base");
- a metric on which the base scores 0 has no defined retention; it is listed as ungated and
  does not count (a ratio to zero says nothing about forgetting);
- a point **passes** when every gated metric's retention is at or above the floor;
- among passing points, the best OCR score wins (lowest CER by default); ties go to the higher
  mean retention, then to the smaller alpha (closer to the base, less to go wrong).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlm_retain.errors import InputError


def check_floor(floor: float) -> None:
    """``--min-retention`` is the share of the base's score a run must keep: in (0, 1] (1 = no
    loss allowed). One rule and one message for ``sweep`` and ``report``."""
    if not 0.0 < floor <= 1.0:  # NaN fails too
        raise InputError(f"--min-retention must be in (0, 1], got {floor:g}")


def retention_ratio(
    value: float | None, base: float | None, higher_is_better: bool
) -> float | None:
    """``value / base`` (inverted for lower-is-better metrics); None when undefined."""
    if value is None or base is None:
        return None
    if higher_is_better:
        return value / base if base > 0 else None
    return base / value if value > 0 else (None if base > 0 else 1.0)


def mean_retention(retention: Mapping[str, float | None]) -> float | None:
    """Mean over the metrics with a defined retention (None when there is none)."""
    values = [v for v in retention.values() if v is not None]
    return sum(values) / len(values) if values else None


def gate(retention: Mapping[str, float | None], floor: float) -> tuple[bool, list[str]]:
    """``(passes, failing metrics)``: PASS when every defined retention is >= ``floor``."""
    failing = sorted(k for k, v in retention.items() if v is not None and v < floor)
    return not failing, failing


@dataclass(frozen=True)
class Choice:
    """The chosen alpha (None when no point passes) and a sentence saying why."""

    alpha: float | None
    reason: str
    passing: list[float] = field(default_factory=list)


def choose_point(
    points: Sequence[Mapping[str, Any]], floor: float, *, lower_is_better: bool = True
) -> Choice:
    """Pick the point to deploy from ``points`` (each with ``alpha``, ``ocr_score`` and
    ``retention``: metric -> ratio or None), following the rule in the module docstring."""
    passing = []
    for point in points:
        ok, _ = gate(point["retention"], floor)
        if ok and point.get("ocr_score") is not None:
            passing.append(point)
    if not passing:
        return Choice(None, _why_none(points, floor))

    def key(point: Mapping[str, Any]) -> tuple[float, float, float]:
        score = float(point["ocr_score"])
        mean = mean_retention(point["retention"])
        return (score if lower_is_better else -score, -(mean or 0.0), float(point["alpha"]))

    best = min(passing, key=key)
    alphas = sorted(float(p["alpha"]) for p in passing)
    direction = "lowest" if lower_is_better else "highest"
    mean = mean_retention(best["retention"])
    mean_text = "n/a" if mean is None else f"{mean:.3f}"
    reason = (
        f"alpha {best['alpha']:g} has the {direction} OCR score ({best['ocr_score']:.4f}) of the "
        f"{len(passing)} point(s) whose every general metric keeps >= {floor:g} of the base "
        f"(mean retention {mean_text})"
    )
    if float(best["alpha"]) == 0.0:
        reason += "; that is the base itself: no fine-tuned mix improves OCR within the floor"
    return Choice(float(best["alpha"]), reason, alphas)


def _why_none(points: Sequence[Mapping[str, Any]], floor: float) -> str:
    scored = [p for p in points if p.get("ocr_score") is not None]
    if not scored:
        return "no point has an OCR score"
    closest = max(points, key=lambda p: mean_retention(p["retention"]) or 0.0)
    _, failing = gate(closest["retention"], floor)
    return (
        f"no point keeps every general metric at >= {floor:g} of the base; closest is alpha "
        f"{closest['alpha']:g}, failing {', '.join(failing) or 'none'}"
    )
