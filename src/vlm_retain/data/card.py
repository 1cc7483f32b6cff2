"""``card.json``: what a manifest holds and how it was made, written beside it.

The card makes a dataset auditable without opening it: counts per split and language, the
character set, a content hash (to tie results to data), the importer and its options, and every
item that was skipped, counted under its reason with a few example ids so nothing vanishes
silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vlm_retain import __version__
from vlm_retain.data.manifest import CARD_NAME, SPLITS, Record
from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json

CARD_SCHEMA = "vlm-retain/card/1"
_EXAMPLES_PER_REASON = 5


@dataclass
class SkipLog:
    """Counts skipped items per reason, keeping the first few examples of each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, example: str) -> None:
        """Count one skipped item under ``reason``; ``example`` names it (id or file)."""
        self.counts[reason] += 1
        if len(self.examples[reason]) < _EXAMPLES_PER_REASON:
            self.examples[reason].append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            reason: {"count": count, "examples": list(self.examples[reason])}
            for reason, count in sorted(self.counts.items())
        }


def manifest_hash(manifest_file: Path) -> str:
    """SHA-256 of the manifest bytes: the identity of the data used in a run."""
    return "sha256:" + hashlib.sha256(manifest_file.read_bytes()).hexdigest()


def charset(texts: Sequence[str]) -> str:
    """Sorted distinct characters of ``texts`` as one string (space included when present)."""
    return "".join(sorted(set("".join(texts))))


def build_card(
    records: Sequence[Record],
    *,
    manifest_file: Path,
    importer: str,
    options: dict[str, Any],
    source_path: Path | None,
    skipped: SkipLog,
    notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the card for ``records`` already written to ``manifest_file``."""
    counts: dict[str, dict[str, int]] = {}
    by_split: dict[str, list[str]] = defaultdict(list)
    for record in records:
        counts.setdefault(record.split, {}).setdefault(record.lang, 0)
        counts[record.split][record.lang] += 1
        by_split[record.split].append(record.text)
    ordered = {split: dict(sorted(counts[split].items())) for split in SPLITS if split in counts}
    languages: Counter[str] = Counter(record.lang for record in records)
    return {
        "schema": CARD_SCHEMA,
        "total": len(records),
        "counts": ordered,
        "languages": dict(sorted(languages.items())),
        "charset": charset([record.text for record in records]),
        "charset_per_split": {
            split: charset(by_split[split]) for split in SPLITS if split in by_split
        },
        "content_hash": manifest_hash(manifest_file),
        "importer": {
            "name": importer,
            "options": _jsonable(options),
            "source": str(source_path.resolve()) if source_path else None,
            "tool_version": __version__,
        },
        "skipped": skipped.to_json(),
        "skipped_total": skipped.total,
        "notes": _jsonable(notes or {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_card(folder: Path, card: dict[str, Any]) -> None:
    atomic_write_json(folder / CARD_NAME, card)


def read_card(folder: Path) -> dict[str, Any]:
    """Load ``card.json`` from a manifest folder, with a clear error when absent or malformed."""
    path = Path(folder) / CARD_NAME
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            "no card.json", path=path, hint="was this folder written by 'data import'?"
        ) from None
    except ValueError as exc:
        raise InputError(f"malformed JSON ({exc})", path=path) from None
    if not isinstance(card, dict):
        raise InputError("expected a JSON object", path=path)
    return card


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value
