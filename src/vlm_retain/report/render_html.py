"""report.html: one self-contained file (inline CSS, figures as base64 PNG, no external assets).

Every piece of user text (run names, paths, group values, notes) goes through
:func:`html.escape`, so a run named ``<script>`` shows as text and cannot run.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from vlm_retain.report.plots import Figure
from vlm_retain.report.tables import Table, all_tables

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.PASS{color:#0a7a0a;font-weight:bold} td.FAIL{color:#b00;font-weight:bold}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
.caption{color:#555;font-size:.9em} code{background:#f5f5f5;padding:0 .2em}
"""


def html_table(table: Table) -> str:
    """A table with every cell escaped; verdict cells get a PASS/FAIL class for colour."""
    if not table.rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for cell in row:
            css = f' class="{cell}"' if cell in ("PASS", "FAIL") else ""
            cells.append(f"<td{css}>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return f'<img alt="{escape(figure.title)}" src="data:image/png;base64,{data}">'


def render_html(doc: dict[str, Any], figures: list[Figure]) -> str:
    """The whole report.html."""
    tables = {table.key: table for table in all_tables(doc)}
    by_section: dict[str, list[Figure]] = {}
    for figure in figures:
        by_section.setdefault(figure.section, []).append(figure)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Retention report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Retention report</h1>",
        f"<p>Baseline: <code>{escape(doc['baseline']['path'])}</code>. "
        f"Floor: <b>{doc['floor']:g}</b>. Passed: {len(doc['summary']['passed'])}, "
        f"failed: {len(doc['summary']['failed'])}.</p>",
    ]

    def section(ident: str, title: str, key: str | None, figure_section: str | None) -> None:
        parts.append(f'<section id="{ident}"><h2>{escape(title)}</h2>')
        for figure in by_section.get(figure_section or "", []):
            parts.append(_figure(figure))
        if figure_section and not by_section.get(figure_section) and key is None:
            parts.append("<p><em>no run has the numbers this figure needs</em></p>")
        if key is not None:
            table = tables[key]
            if table.caption:
                parts.append(f'<p class="caption">{escape(table.caption)}</p>')
            parts.append(html_table(table))
        parts.append("</section>")

    section("verdicts", "Verdicts", "verdicts", None)
    section("frontier", "OCR gain vs retention", None, "frontier")
    section("retention", "Retention per benchmark", "retention", "retention")
    section("ocr", "OCR", "ocr", None)
    section("ocr-by", "OCR by language and source", "ocr_by", None)
    if "training" in by_section:
        section("training", "Training curves", None, "training")
    section("deltas", "All metrics", "deltas", None)
    parts.append('<section id="definitions"><h2>Definitions</h2><ul>')
    parts += [f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in doc["definitions"].items()]
    parts.append("</ul></section>")
    notes = [(run["name"], note) for run in doc["runs"] for note in run["notes"]]
    if notes:
        parts.append('<section id="notes"><h2>Notes</h2><ul>')
        parts += [f"<li>{escape(name)}: {escape(note)}</li>" for name, note in notes]
        parts.append("</ul></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
