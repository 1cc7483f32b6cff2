"""Write a report folder atomically: report.json, report.md, report.html and plots/*.png.

Everything is rendered in a staging folder beside ``out`` and renamed into place at the end
(:func:`~vlm_retain.fsutil.staged_output_dir`), with the tool's marker, so a failed render never
leaves half a report and ``--overwrite`` only ever replaces a folder this tool wrote.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vlm_retain.fsutil import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    staged_output_dir,
    write_marker,
)
from vlm_retain.report.plots import make_figures
from vlm_retain.report.render_html import render_html
from vlm_retain.report.render_md import render_markdown


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: an undefined number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_report(doc: dict[str, Any], out: Path, *, overwrite: bool = False) -> list[Path]:
    """Render and write every output; returns the written files (paths under ``out``)."""
    out = Path(out)
    doc = _json_safe(doc)
    figures = make_figures(doc)
    names = ["report.json", "report.md", "report.html"]
    with staged_output_dir(out, overwrite=overwrite) as staging:
        atomic_write_json(staging / "report.json", doc)
        atomic_write_text(staging / "report.md", render_markdown(doc, figures))
        atomic_write_text(staging / "report.html", render_html(doc, figures))
        for figure in figures:
            atomic_write_bytes(staging / "plots" / figure.filename, figure.png)
            names.append(f"plots/{figure.filename}")
        write_marker(staging, "report", schema=doc.get("schema"), runs=len(doc["runs"]))
    return [out / name for name in names]
