"""Parsers of option values shared by several command groups."""

from __future__ import annotations


def comma_list(value: str | None) -> tuple[str, ...]:
    """``"ru, en,"`` -> ``("ru", "en")``: the items of a comma-separated option, blanks dropped."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())
