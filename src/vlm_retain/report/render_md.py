"""report.md: the tables in GitHub Markdown, figures linked as PNGs in ``plots/`` beside it."""

from __future__ import annotations

from typing import Any

from vlm_retain.report.plots import Figure
from vlm_retain.report.tables import Table, all_tables


def _cell(text: str) -> str:
    """Keep user text (run names, group values) from breaking the table or injecting markup."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def markdown_table(table: Table) -> str:
    """One table as Markdown (a 'none' line when it has no rows)."""
    if not table.rows:
        return "_none_\n"
    lines = [
        "| " + " | ".join(_cell(h) for h in table.header) + " |",
        "|" + "---|" * len(table.header),
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def _figure(figure: Figure) -> str:
    return f"![{figure.title}](plots/{figure.filename})\n"


def render_markdown(doc: dict[str, Any], figures: list[Figure]) -> str:
    """The whole report.md."""
    tables = {table.key: table for table in all_tables(doc)}
    by_section: dict[str, list[Figure]] = {}
    for figure in figures:
        by_section.setdefault(figure.section, []).append(figure)
    parts = [
        "# Retention report\n",
        f"Baseline: `{_cell(doc['baseline']['path'])}`. Floor: **{doc['floor']:g}**. "
        f"Passed: {len(doc['summary']['passed'])}, failed: {len(doc['summary']['failed'])}.\n",
    ]

    def section(title: str, key: str | None, figure_section: str | None, text: str = "") -> None:
        parts.append(f"## {title}\n")
        if text:
            parts.append(text + "\n")
        for figure in by_section.get(figure_section or "", []):
            parts.append(_figure(figure))
        if key is not None:
            table = tables[key]
            if table.caption:
                parts.append(table.caption + "\n")
            parts.append(markdown_table(table))

    section("Verdicts", "verdicts", None)
    section("OCR gain vs retention", None, "frontier")
    section("Retention per benchmark", "retention", "retention")
    section("OCR", "ocr", None)
    section("OCR by language and source", "ocr_by", None)
    if "training" in by_section:
        section("Training curves", None, "training")
    section("All metrics", "deltas", None)
    definitions = "\n".join(f"- **{k}**: {_cell(v)}" for k, v in doc["definitions"].items())
    section("Definitions", None, None, definitions)
    notes = [
        f"- {_cell(run['name'])}: {_cell(note)}" for run in doc["runs"] for note in run["notes"]
    ]
    if notes:
        section("Notes", None, None, "\n".join(notes))
    return "\n".join(parts)
