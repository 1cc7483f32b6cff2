"""Predictions file -> metric report, one function per metric, shared by ``vlm-retain score``
and the evaluation runner so both score the same way.

Metric functions take plain lists and raise ``ValueError``/``TypeError`` on inconsistent items;
here those become :class:`InputError` naming the predictions file, as the CLI contract wants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.report import MetricReport
from vlm_retain.evaluate.predictions import (
    MISSING,
    Prediction,
    field_values,
    manifest_fields,
    read_predictions,
)

#: Metrics that score a predictions file (retrieval scores a matrix instead).
PREDICTION_METRICS = ("ocr", "vqa", "anls", "caption")


def breakdown_groups(
    records: Sequence[Prediction], by: Sequence[str], manifest: Path | None = None
) -> dict[str, list[str]]:
    """Per-item values of each ``--by`` field, joined from a manifest by id when given."""
    joined = manifest_fields(manifest) if manifest is not None else None
    return {name: field_values(records, name, joined) for name in by}


def score_file(
    metric: str,
    predictions: Path,
    *,
    by: Sequence[str] = (),
    manifest: Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> tuple[MetricReport, list[Prediction]]:
    """Read ``predictions`` for ``metric`` and score them; also return the records read.

    ``options`` carries metric-specific settings: ``profile`` and ``top_errors`` (ocr),
    ``threshold`` (anls).
    """
    if metric not in PREDICTION_METRICS:
        raise InputError(f"unknown metric {metric!r}; known: {', '.join(PREDICTION_METRICS)}")
    options = dict(options or {})
    records = read_predictions(predictions, metric)
    ids = [r.id for r in records]
    if metric == "vqa":
        by = [name for name in by if name != "answer_type"]  # always broken down when present
    groups = breakdown_groups(records, by, manifest)
    common: dict[str, Any] = {"ids": ids, "groups": groups, "resamples": resamples, "seed": seed}
    compute: Callable[..., MetricReport]
    if metric == "ocr":
        from vlm_retain.evaluate.metrics.ocr import score_ocr as compute

        args: tuple[Any, ...] = ([str(r.target) for r in records], [r.prediction for r in records])
        common.update(
            profile=options.get("profile", "raw"), top_errors=options.get("top_errors", 20)
        )
    elif metric == "vqa":
        from vlm_retain.evaluate.metrics.vqa import score_vqa as compute

        types = field_values(records, "answer_type")
        if any(t != MISSING for t in types):
            common["answer_types"] = [None if t == MISSING else t for t in types]
        args = ([r.prediction for r in records], [list(r.target) for r in records])
    elif metric == "anls":
        from vlm_retain.evaluate.metrics.anls import score_anls as compute

        common["threshold"] = options.get("threshold", 0.5)
        args = ([r.prediction for r in records], [list(r.target) for r in records])
    else:
        from vlm_retain.evaluate.metrics.caption import score_captions as compute

        args = ([r.prediction for r in records], [list(r.target) for r in records])
    try:
        report = compute(*args, **common)
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc), path=predictions) from None
    return report, records


def split_of(records: Sequence[Prediction], split: str | None = None) -> str:
    """The split to record: the given one, else the items' common ``split``, else unspecified."""
    if split:
        return split
    seen = {
        str(r.fields.get("split") or (r.fields.get("meta") or {}).get("split") or "")
        for r in records
    }
    seen.discard("")
    return seen.pop() if len(seen) == 1 else "unspecified"
