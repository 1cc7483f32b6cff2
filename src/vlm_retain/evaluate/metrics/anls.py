"""ANLS: average normalized Levenshtein similarity, for DocVQA-style free-text answers.

Definition (Biten et al., ST-VQA, ICCV 2019; used by DocVQA and InfographicVQA): per item,
the best over its reference answers of 1 - NL, where NL is the Levenshtein distance divided by
the longer string's length, and a match counts 0 when NL reaches the threshold tau = 0.5, so
a half-wrong answer earns nothing while an OCR slip costs only a little. The score is the mean
over items.

Implementation choices, checked against the DocVQA/InfographicVQA evaluation script and
VLMEvalKit ``vlmeval/dataset/utils/vqa_eval.py`` (``anls_compute`` + ``hit_calculate``):

- both strings are lowercased, stripped and have whitespace runs collapsed to one space;
- the distance *and* the length are taken on those normalized strings (as VLMEvalKit does; the
  DocVQA script and lmms-eval divide by the raw lengths, which differs only when stripping or
  collapsing whitespace changes a length);
- the comparison at the threshold is ``NL > threshold -> 0``: those scripts zero a similarity
  *below* 0.5, so an item at exactly NL = 0.5 keeps 0.5 (the paper's formula would give 0; only
  exact ties differ, e.g. one edit in a two-character answer);
- two empty strings are identical (similarity 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from vlm_retain.evaluate.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, mean_ci
from vlm_retain.evaluate.metrics.report import MetricReport

DEFAULT_THRESHOLD = 0.5

REFERENCE = (
    "ST-VQA/DocVQA ANLS (Biten et al., ICCV 2019; rrc.cvc.uab.es DocVQA evaluation) as "
    "implemented in open-compass/VLMEvalKit vlmeval/dataset/utils/vqa_eval.py"
)


def _normalize(text: str) -> str:
    """Lowercase and collapse whitespace (which also strips the ends)."""
    return " ".join(text.lower().split())


def normalized_distance(prediction: str, answer: str) -> float:
    """Levenshtein distance over the longer normalized string's length; 0 for two empty strings."""
    a, b = _normalize(prediction), _normalize(answer)
    length = max(len(a), len(b))
    return 0.0 if length == 0 else Levenshtein.distance(a, b) / length


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"ANLS threshold must be in (0, 1], got {threshold}")


def _best(prediction: str, answers: Sequence[str], threshold: float) -> tuple[float, int]:
    """Thresholded similarity to the nearest answer, and that answer's index (first on ties).

    The nearest answer is reported even when it scores 0, so per-item rows show what was closest.
    """
    distances = [normalized_distance(prediction, answer) for answer in answers]
    index = min(range(len(distances)), key=distances.__getitem__)
    nl = distances[index]
    return (0.0 if nl > threshold else 1.0 - nl), index


def anls_item(
    prediction: str, answers: Sequence[str], threshold: float = DEFAULT_THRESHOLD
) -> float:
    """ANLS of one prediction: max over answers of 1 - NL, or 0 when NL > ``threshold``."""
    _check_threshold(threshold)
    if len(answers) == 0:
        raise ValueError("no reference answers to score against; give at least one answer")
    return _best(prediction, answers, threshold)[0]


def _item_ids(ids: Sequence[str] | None, n: int) -> list[str]:
    """Caller's ids, or the 0-based positions as strings when none are given."""
    if ids is None:
        return [str(i) for i in range(n)]
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries but there are {n} predictions")
    return [str(i) for i in ids]


def _group_breakdown(
    scores: np.ndarray, groups: Mapping[str, Sequence[str]] | None, n: int
) -> dict[str, dict[str, dict[str, object]]]:
    """breakdown[field][value] = {"n", "metrics": {"anls": mean}} for each group field."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for name, raw in (groups or {}).items():
        if len(raw) != n:
            raise ValueError(f"group field {name!r} has {len(raw)} values for {n} items")
        values = np.array([str(v) for v in raw], dtype=object)
        out[name] = {
            value: {
                "n": int((values == value).sum()),
                "metrics": {"anls": float(scores[values == value].mean())},
            }
            for value in sorted(set(values))
        }
    return out


def _conventions(threshold: float) -> dict[str, object]:
    """What was done, in words, for results.json and docs/metrics.md."""
    return {
        "metric": "ANLS: per item, max over reference answers of 1 - NL, NL = Levenshtein "
        "distance / max(len(prediction), len(answer)); overall = mean over items",
        "reference": REFERENCE,
        "normalization": "both sides lowercased, stripped, whitespace runs collapsed to one "
        "space; lengths taken after this normalization; no punctuation or article handling",
        "threshold": f"applies to NL (a distance), as in the ANLS paper: a match scores 0 when "
        f"NL > {threshold}, so NL exactly {threshold} keeps {1 - threshold:g}; at the default 0.5 "
        "this is the DocVQA script's and VLMEvalKit's rule (similarity < 0.5 -> 0), while the "
        "paper's formula (NL >= 0.5 -> 0) differs only at exact ties",
        "empty": "two empty strings count as identical (1); an empty prediction against a "
        "non-empty answer has NL = 1 (0)",
        "edit_distance": "rapidfuzz.distance.Levenshtein (unit costs)",
        "ci95": "95% percentile bootstrap over items of the mean ANLS (seeded)",
    }


def score_anls(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    *,
    ids: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> MetricReport:
    """Mean ANLS over items with a bootstrap CI, per-group breakdowns and per-item rows.

    An item with no reference answers raises ValueError naming its id.
    """
    _check_threshold(threshold)
    n = len(predictions)
    if n == 0:
        raise ValueError("no predictions to score")
    if len(answers) != n:
        raise ValueError(f"{n} predictions but {len(answers)} answer lists; give one per item")
    item_ids = _item_ids(ids, n)
    for item, refs in zip(item_ids, answers, strict=True):
        if len(refs) == 0:
            raise ValueError(f"item {item!r} has no reference answers; give its answers")
    best = [_best(p, refs, threshold) for p, refs in zip(predictions, answers, strict=True)]
    scores = np.array([score for score, _ in best], dtype=np.float64)
    return MetricReport(
        task="anls",
        n=n,
        metrics={"anls": float(scores.mean())},
        ci95={"anls": mean_ci(scores, resamples=resamples, seed=seed)},
        conventions=_conventions(threshold),
        breakdown=_group_breakdown(scores, groups, n),
        per_item=[
            {"id": item, "prediction": pred, "best_answer": refs[index], "anls": score}
            for item, pred, refs, (score, index) in zip(
                item_ids, predictions, answers, best, strict=True
            )
        ],
    )
