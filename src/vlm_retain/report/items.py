"""Per-item scores recomputed from a task's saved outputs, keyed by item id.

A paired bootstrap needs, for every item both models saw, each model's score on that item. The
results files hold only totals, so we score the predictions again with the metric layer's own
per-item functions: ``vqa_accuracy``, ``anls_item``; per-image CIDEr/ROUGE-L from pycocoevalcap
(tokenized once for the joined items, so CIDEr's IDF comes from the same references in both
models and the mean of per-image CIDEr *is* the corpus CIDEr); per-query hits@K for retrieval,
from the saved score matrix. Metrics without a per-item form (corpus BLEU, METEOR) return None.

A missing file or unavailable tool is not an error: :class:`ItemScores` carries the reason, and
the report falls back to the ratio of the point values without a CI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vlm_retain.errors import VlmRetainError
from vlm_retain.evaluate.predictions import Prediction, read_predictions
from vlm_retain.report.load import TaskResult

#: Caption metrics that are means of per-image scores (the others are corpus statistics).
PER_IMAGE_CAPTION = ("cider", "rouge_l")


@dataclass(frozen=True)
class ItemScores:
    """``ids[k]`` scored ``scores[k]``; ``reason`` says why there are none when empty."""

    ids: list[str]
    scores: np.ndarray
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.reason is None and len(self.ids) > 0


def unavailable(reason: str) -> ItemScores:
    return ItemScores([], np.zeros(0), reason)


def _anls_threshold(task: TaskResult) -> float:
    """The threshold the results were scored with (stated in its conventions), else 0.5."""
    text = str(task.results.get("conventions", {}).get("threshold", ""))
    match = re.search(r"NL > ([0-9.]+)", text)
    return float(match.group(1)) if match else 0.5


def _predictions(task: TaskResult) -> list[Prediction] | ItemScores:
    path = task.folder / "predictions.jsonl"
    if not path.is_file():
        return unavailable(f"no predictions.jsonl in {task.folder}")
    try:
        return read_predictions(path, task.family)
    except VlmRetainError as exc:
        return unavailable(f"unreadable predictions ({exc})")


def item_scores(task: TaskResult, metric: str) -> ItemScores:
    """Per-item scores of ``metric`` for one task, or an unavailable marker with its reason."""
    if task.family == "retrieval":
        return _retrieval_hits(task, metric)
    records = _predictions(task)
    if isinstance(records, ItemScores):
        return records
    ids = [r.id for r in records]
    if task.family == "vqa" and metric == "accuracy":
        from vlm_retain.evaluate.metrics.vqa import vqa_accuracy

        values = [vqa_accuracy(r.prediction, list(r.target)) for r in records]
    elif task.family == "anls" and metric == "anls":
        from vlm_retain.evaluate.metrics.anls import anls_item

        threshold = _anls_threshold(task)
        values = [anls_item(r.prediction, list(r.target), threshold) for r in records]
    else:
        return unavailable(f"{task.family}/{metric} has no per-item form here")
    return ItemScores(ids, np.asarray(values, dtype=np.float64))


def _retrieval_hits(task: TaskResult, metric: str) -> ItemScores:
    """Hits@K per query (``t2i_rK``: per caption; ``i2t_rK``: per image) from scores.npy."""
    match = re.fullmatch(r"(t2i|i2t)_r(\d+)", metric)
    scores_file = task.folder / "scores.npy"
    if match is None:
        return unavailable(f"retrieval metric {metric!r} has no per-query form")
    if not scores_file.is_file():
        return unavailable(f"no scores.npy in {task.folder}")
    from vlm_retain.evaluate.metrics.retrieval import (
        image_to_text_ranks,
        load_score_matrix,
        text_to_image_ranks,
    )

    try:
        matrix, image_ids, text_ids, owners = load_score_matrix(scores_file)
    except VlmRetainError as exc:
        return unavailable(f"unreadable score matrix ({exc})")
    direction, k = match.group(1), int(match.group(2))
    owner_array = np.asarray(owners, dtype=np.int64)
    if direction == "t2i":
        ranks, ids = text_to_image_ranks(matrix, owner_array), text_ids
    else:
        ranks, ids = image_to_text_ranks(matrix, owner_array), image_ids
    return ItemScores(list(ids), (np.asarray(ranks) <= k).astype(np.float64))


def paired_caption_scores(
    base: TaskResult, tuned: TaskResult, metric: str
) -> tuple[list[str], np.ndarray, np.ndarray] | str:
    """Per-image ``metric`` (cider or rouge_l) of both models over their common image ids.

    Both models are scored against the *same* references of the joined images, in one
    tokenizer call each, so CIDEr's document frequencies are shared and the paired ratio of
    means equals the ratio of the two corpus CIDEr values on those images. Returns a reason
    string when this cannot be done (no predictions, no Java).
    """
    if metric not in PER_IMAGE_CAPTION:
        return f"caption {metric} is a corpus statistic without a per-image form"
    base_records, tuned_records = _predictions(base), _predictions(tuned)
    for records in (base_records, tuned_records):
        if isinstance(records, ItemScores):
            return records.reason or "no predictions"
    assert not isinstance(base_records, ItemScores) and not isinstance(tuned_records, ItemScores)
    tuned_by_id = {r.id: r for r in tuned_records}
    joined = [r for r in base_records if r.id in tuned_by_id]
    if not joined:
        return "no image ids in common"
    references = [list(r.target) for r in joined]
    try:
        base_scores = _caption_per_image([r.prediction for r in joined], references, metric)
        tuned_scores = _caption_per_image(
            [tuned_by_id[r.id].prediction for r in joined], references, metric
        )
    except VlmRetainError as exc:
        return f"caption tools unavailable ({exc})"
    return [r.id for r in joined], base_scores, tuned_scores


def _caption_per_image(
    predictions: Sequence[str], references: Sequence[Sequence[str]], metric: str
) -> np.ndarray:
    """pycocoevalcap's per-image scores after its PTB tokenization (Java; no METEOR JVM)."""
    from vlm_retain.evaluate.metrics.caption import (
        _quiet_stdout,
        _require_tools,
        tokenize_captions,
    )

    _require_tools()
    gts, res = tokenize_captions(predictions, references)
    if metric == "cider":
        from pycocoevalcap.cider.cider import Cider as Scorer
    else:
        from pycocoevalcap.rouge.rouge import Rouge as Scorer
    with _quiet_stdout():
        _, per_image = Scorer().compute_score(gts, res)
    return np.asarray(per_image, dtype=np.float64)
