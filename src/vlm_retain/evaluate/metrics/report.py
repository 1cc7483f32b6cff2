"""The in-memory result of one scoring run, before it becomes ``results.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MetricReport:
    """What a metric family returns.

    ``metrics`` are fractions in [0, 1] for rates and accuracies (CIDEr on pycocoevalcap's scale);
    ``None`` marks a metric that could not be computed, with the reason in ``conventions``.
    ``breakdown`` maps a field name to its values, each with its own ``n`` and ``metrics``.
    ``analysis`` holds family-specific extras (e.g. the most frequent OCR confusions).
    ``per_item`` rows feed the per-line CSV.
    """

    task: str
    n: int
    metrics: dict[str, float | None]
    ci95: dict[str, list[float]] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)
    breakdown: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    per_item: list[dict[str, Any]] = field(default_factory=list)
