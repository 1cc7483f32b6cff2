"""The transcription loop shared by ``vlm-retain transcribe`` (and reusable by the eval runner):
items in, one JSON line per item out, resumable, with errors counted instead of fatal.

Output line: ``{"id", "image", "prediction", "reference" (when the input has one), "meta"}``;
``meta`` holds the manifest record's lang, source and split with the record's own ``meta`` fields
merged in at the same level (not nested), then ``n_tokens`` and, for an image that could not be
used, ``error`` (the prediction is then empty, so a scorer counts it wrong
rather than silently skipping it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.evaluate.generate.base import Backend, Request, Result
from vlm_retain.evaluate.generate.inputs import Item
from vlm_retain.evaluate.generate.resume import ResumableJsonl
from vlm_retain.progress import progress_bar

#: Lines are made durable at least this often (seconds), and after every batch's worth of lines.
FLUSH_SECONDS = 2.0


@dataclass
class Summary:
    """What a run did, for the one-line report."""

    out: Path
    total: int
    resumed: int = 0
    generated: int = 0
    retried: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    first_error: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.generated / self.seconds if self.seconds > 0 else 0.0
        text = f"transcribed {self.generated} of {self.total} images"
        if self.resumed:
            text += f" ({self.resumed} done before, resumed"
            text += f"; {self.retried} failed ones retried)" if self.retried else ")"
        text += f" in {self.seconds:.1f} s ({rate:.2f} lines/s)"
        n_errors = sum(self.errors.values())
        if n_errors:
            kinds = ", ".join(f"{reason}: {n}" for reason, n in self.errors.most_common(3))
            assert self.first_error is not None
            text += (
                f"; {n_errors} errors ({kinds}; first: {self.first_error[0]}: "
                f"{self.first_error[1]})"
            )
        else:
            text += "; no errors"
        for note in self.notes:
            text += f"; {note}"
        return f"{text} -> {self.out}"


def output_line(item: Item, result: Result) -> dict[str, Any]:
    """The JSON object written for ``item``."""
    line: dict[str, Any] = {
        "id": item.id,
        "image": item.image.as_posix(),
        "prediction": result.text,
    }
    if item.reference is not None:
        line["reference"] = item.reference
    meta: dict[str, Any] = {**item.meta, "n_tokens": result.n_tokens}
    if result.error is not None:
        meta["error"] = result.error
    line["meta"] = meta
    return line


def _kind(error: str) -> str:
    """The error's kind for the summary: the text before its first parenthesis or colon."""
    return error.split("(")[0].split(":")[0].strip() or error


def transcribe_items(
    backend: Backend,
    items: Sequence[Item],
    out: Path,
    *,
    prompt: str,
    settings: Mapping[str, Any],
    overwrite: bool = False,
    progress: bool = True,
    flush_every: int = 16,
) -> Summary:
    """Transcribe ``items`` into ``out`` (resumable; see :mod:`.resume`); return the summary."""
    writer = ResumableJsonl(out, settings, overwrite=overwrite)
    done = writer.start()
    ids = {item.id for item in items}
    summary = Summary(out=Path(out), total=len(items), retried=writer.retried)
    summary.resumed = sum(1 for i in done if i in ids)
    todo = [item for item in items if item.id not in done]
    by_id = {item.id: item for item in todo}
    requests = [Request(item.id, item.image, prompt) for item in todo]
    console = Console(stderr=True)
    bar = progress_bar(progress and console.is_terminal)
    pending: list[dict[str, Any]] = []
    start = last_flush = time.perf_counter()
    try:
        with bar:
            task = bar.add_task(f"{backend.name}: transcribing", total=len(todo))
            for result in backend.generate(requests):
                pending.append(output_line(by_id[result.id], result))
                summary.generated += 1
                if result.error is not None:
                    summary.errors[_kind(result.error)] += 1
                    summary.first_error = summary.first_error or (result.id, result.error)
                now = time.perf_counter()
                if len(pending) >= flush_every or now - last_flush >= FLUSH_SECONDS:
                    writer.write(pending)
                    pending, last_flush = [], now
                bar.advance(task)
            writer.write(pending)
            pending = []
    finally:
        if pending:  # interrupted: keep what was finished, so the rerun skips it
            writer.write(pending)
        writer.close()
    summary.seconds = time.perf_counter() - start
    writer.finish([item.id for item in items])
    return summary
