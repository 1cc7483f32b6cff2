"""Metrics computed the way their references do, each stating its conventions.

One module per family: ``ocr`` (CER/WER/line accuracy), ``vqa`` (VQAv2 accuracy), ``anls``,
``caption`` (pycocoevalcap), ``retrieval`` (Recall@K). Each returns a :class:`MetricReport`;
``common`` holds what they share (default ids, group labels, breakdowns), ``bootstrap`` the CIs.
Nothing here imports a model, so scores can be recomputed from saved predictions anywhere.
"""

from vlm_retain.evaluate.metrics.report import MetricReport

__all__ = ["MetricReport"]
