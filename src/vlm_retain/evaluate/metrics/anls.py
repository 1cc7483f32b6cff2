"""ANLS: average normalized Levenshtein similarity, for DocVQA-style free-text answers.

Definition (Biten et al., ST-VQA, ICCV 2019; used by DocVQA and InfographicVQA): per item,
the best over its reference answers of 1 - NL, where NL is the Levenshtein distance divided by
the longer string's length, and a match counts 0 when NL reaches the threshold tau = 0.5, so
a half-wrong answer earns nothing while an OCR slip costs only a little. The score is the mean
over items.

Implementation choices, those of the reference implementations (the DocVQA/InfographicVQA
evaluation script, VLMEvalKit ``vlmeval/dataset/utils/vqa_eval.py`` ``anls_compute`` +
``hit_calculate``, and lmms-eval):

- the distance is taken between the *normalized* strings: lowercased, stripped, whitespace
  runs collapsed to one space;
- the length it is divided by is that of the *raw* strings, exactly as ``anls_compute`` does:
  ``max(len(answer.upper()), len(prediction.upper()))``. Stripped or collapsed whitespace thus
  still counts in the length ("  abc  " vs "abd": 1 edit / 7 -> 0.857, not 1 / 3), and
  ``upper()`` can lengthen a string ("ß" -> "SS");
- the comparison at the threshold is ``NL > threshold -> 0``: those scripts zero a similarity
  *below* 0.5, so an item at exactly NL = 0.5 keeps 0.5 (the paper's formula would give 0; only
  exact ties differ, e.g. one edit in a two-character answer);
- two empty strings are identical (similarity 1); whitespace-only strings normalize to empty, so
  they match each other too (distance 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from vlm_retain.evaluate.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, mean_ci
from vlm_retain.evaluate.metrics.common import MISSING, group_labels, item_ids, mean_breakdown
from vlm_retain.evaluate.metrics.report import MetricReport

DEFAULT_THRESHOLD = 0.5

REFERENCE = (
    "ST-VQA/DocVQA ANLS (Biten et al., ICCV 2019; rrc.cvc.uab.es DocVQA evaluation) as "
    "implemented in open-compass/VLMEvalKit vlmeval/dataset/utils/vqa_eval.py (anls_compute, "
    "hit_calculate) and lmms-eval"
)


def _normalize(text: str) -> str:
    """Lowercase and collapse whitespace (which also strips the ends)."""
    return " ".join(text.lower().split())


def normalized_distance(prediction: str, answer: str) -> float:
    """NL: Levenshtein distance of the normalized strings over the longer *raw* string's length.

    As VLMEvalKit's ``anls_compute``: the length is ``max(len(answer.upper()),
    len(prediction.upper()))`` of the strings as given; 0 for two empty strings.
    """
    length = max(len(prediction.upper()), len(answer.upper()))
    if length == 0:
        return 0.0
    return Levenshtein.distance(_normalize(prediction), _normalize(answer)) / length


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


def _conventions(threshold: float) -> dict[str, object]:
    """What was done, in words, for results.json and docs/metrics.md."""
    return {
        "metric": "ANLS: per item, max over reference answers of 1 - NL; NL = Levenshtein "
        "distance between the normalized answer and prediction / max(len(answer.upper()), "
        "len(prediction.upper())) of the raw strings; overall = mean over items",
        "reference": REFERENCE,
        "normalization": "the distance compares both sides lowercased, stripped and with "
        "whitespace runs collapsed to one space (no punctuation or article handling); the "
        "length divides by the raw strings as given (upper-cased), as VLMEvalKit anls_compute, "
        "the DocVQA script and lmms-eval do, so '  abc  ' vs 'abd' scores 1 - 1/7",
        "threshold": f"applies to NL (a distance), as in the ANLS paper: a match scores 0 when "
        f"NL > {threshold}, so NL exactly {threshold} keeps {1 - threshold:g}; at the default 0.5 "
        "this is the DocVQA script's and VLMEvalKit's rule (similarity < 0.5 -> 0), while the "
        "paper's formula (NL >= 0.5 -> 0) differs only at exact ties",
        "empty": "two empty strings count as identical (1); an empty prediction against a "
        "non-empty answer has NL = 1 (0)",
        "edit_distance": "rapidfuzz.distance.Levenshtein (unit costs)",
        "breakdown": "per group value (sorted): n and the mean ANLS of its items; an item "
        f"without the field is grouped as {MISSING!r}",
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
    ids = item_ids(ids, n)
    labels = group_labels(groups, n)
    for item, refs in zip(ids, answers, strict=True):
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
        breakdown=mean_breakdown(scores, labels, "anls"),
        per_item=[
            {"id": item, "prediction": pred, "best_answer": refs[index], "anls": score}
            for item, pred, refs, (score, index) in zip(
                ids, predictions, answers, best, strict=True
            )
        ],
    )
