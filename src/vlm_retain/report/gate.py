"""The retention gate: PASS when every general metric keeps at least the floor.

Rule (documented in docs/report.md): a run PASSES when the *point estimate* of every general
task's headline retention is at or above ``floor`` (0.95 by default). The CI does not decide
the verdict, because with small eval sets a CI-based rule would fail nearly every run (lower
bound) or pass nearly every run (upper bound); instead a metric whose CI reaches below the
floor while its point passes is listed as ``uncertain``, so a reader knows where more items
are needed. A metric with undefined retention (the base scored 0) cannot fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlm_retain.report.retention import Retention

DEFAULT_FLOOR = 0.95
PASS = "PASS"
FAIL = "FAIL"


@dataclass(frozen=True)
class Verdict:
    """The gate's decision for one run, with the metrics that decided it."""

    status: str
    failing: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.status, "failing": self.failing, "uncertain": self.uncertain}


def judge(retention: Mapping[str, Retention], floor: float = DEFAULT_FLOOR) -> Verdict:
    """Apply the gate to one run's retention values (keys ``task/metric``)."""
    failing = [
        key for key, value in retention.items() if value.ratio is not None and value.ratio < floor
    ]
    uncertain = [
        key
        for key, value in retention.items()
        if value.ratio is not None
        and value.ratio >= floor
        and value.ci95 is not None
        and value.ci95[0] < floor
    ]
    return Verdict(FAIL if failing else PASS, failing, uncertain)


RULE = (
    "PASS when the point estimate of every general task's headline retention is >= the floor; "
    "the 95% CI does not decide (metrics whose CI reaches below the floor are listed as "
    "uncertain); undefined retention (base scored 0) cannot fail"
)
