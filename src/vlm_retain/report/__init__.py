"""The retention report: OCR gain and general-skill loss side by side, with CIs and a gate.

Pipeline, one module per step:

- ``load``: run, eval and sweep folders -> :class:`~vlm_retain.report.load.EvalSet` objects;
- ``items``: per-item scores recomputed from saved predictions (for paired bootstraps);
- ``retention``: retention (fine-tuned / base) per general task with paired bootstrap CIs;
- ``ocr``: OCR metrics, change against the base, by language and source;
- ``gate``: the PASS/FAIL verdict against the retention floor;
- ``build``: all of it as one JSON-ready document (``report.json``);
- ``plots``, ``render_md``, ``render_html``, ``write``: the human-readable outputs.

The report reads only files (results.json, predictions.jsonl, scores.npy, train_log.jsonl), so
it works on runs made anywhere, and never loads a model.
"""

from vlm_retain.report.build import REPORT_SCHEMA, build_report
from vlm_retain.report.write import write_report

__all__ = ["REPORT_SCHEMA", "build_report", "write_report"]
