"""``data check``: re-validate a manifest folder before anything trains or scores on it.

An import verifies its own output, but manifests are also edited by hand, merged, copied, or
their referenced source images move or get damaged. ``check`` looks again at everything a later
stage would trip over, and at what would make a score dishonest:

- images: missing, unreadable, truncated, decompression bombs, an aspect ratio Qwen's image
  processor refuses (``max/min >= 200`` raises in ``smart_resize``), or too small to hold a glyph;
- text: empty, not NFC, not stripped/collapsed (strict readers refuse such lines);
- ids: duplicated;
- leakage: the same image (same file or identical bytes) or, for OCR lines, the same text from
  the same source in train and in val/test.

Each finding has a kind, a severity (``error`` makes the CLI exit 1, ``warning`` does not), the
ids involved and a detail. docs/data-commands.md explains every kind and why it has its severity.
Images are hashed and decoded in one pass over the files, in threads (decoders and hashlib
release the GIL), and each distinct file is read once however many lines reference it.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from vlm_retain.data.images import BadImage, ImageInfo, probe_image
from vlm_retain.data.manifest import Record, iter_manifest, manifest_path
from vlm_retain.text import clean_text, is_nfc

CHECK_SCHEMA = "vlm-retain/check/1"
ERROR = "error"
WARNING = "warning"

#: Qwen2-VL/2.5-VL/3-VL ``smart_resize`` raises "absolute aspect ratio must be smaller than 200".
MAX_ASPECT = 200
#: An image whose shorter side is under this many pixels cannot hold a legible glyph at line
#: height; a warning only, because a thin sub-word crop (an isolated Arabic alif) can be narrower.
MIN_SIDE = 8
#: Texts at least this long repeated across splits are an error; shorter ones (a word, a number,
#: a sub-word, a two-letter line) recur naturally in any corpus and are only a warning.
MIN_LEAK_TEXT = 16

#: What each kind means and its severity, in report order (also used by the docs and tests).
KINDS: dict[str, tuple[str, str]] = {
    "duplicate-id": (ERROR, "the same id on several lines"),
    "image-missing": (ERROR, "the referenced image file does not exist"),
    "image-unreadable": (ERROR, "the image cannot be opened or decoded"),
    "image-truncated": (ERROR, "the image file ends early"),
    "decompression-bomb": (ERROR, "more pixels than Pillow's decompression-bomb limit"),
    "aspect-ratio": (ERROR, f"max(w, h) / min(w, h) >= {MAX_ASPECT}: Qwen's processor refuses it"),
    "empty-text": (ERROR, "the text is empty (or only whitespace)"),
    "text-not-nfc": (ERROR, "the text is not in Unicode NFC"),
    "text-not-clean": (ERROR, "the text is not stripped or has whitespace runs, tabs or newlines"),
    "leak-image": (ERROR, "the same image is in train and in val or test"),
    "leak-text": (ERROR, "the same text from the same source is in train and in val or test"),
    "image-too-small": (WARNING, f"the image's shorter side is under {MIN_SIDE} px"),
    "leak-text-short": (WARNING, f"a text under {MIN_LEAK_TEXT} characters shared across splits"),
    "leak-text-other-writer": (
        WARNING,
        "the same text written by a different writer across splits",
    ),
    "overlap-val-test": (WARNING, "the same image or text in val and in test"),
    "duplicate-image": (WARNING, "one image used by several OCR lines of the same split"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found: a :data:`KINDS` key, its severity, every id involved (so a user can
    drop or fix them all) and a detail naming the file or text that shows the problem."""

    kind: str
    severity: str
    ids: tuple[str, ...]
    detail: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (ids as a list) for ``--json``, so other tools can read findings."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "ids": list(self.ids),
            "detail": self.detail,
        }


@dataclass
class CheckReport:
    """All findings of one check, with counts; printable as tables and serializable as JSON."""

    manifest: Path
    lines: int
    images: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """Number of error findings: the CLI exits 1 when it is not zero."""
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        """Number of warning findings: reported, but they do not fail the check."""
        return sum(1 for f in self.findings if f.severity == WARNING)

    def by_kind(self) -> dict[str, list[Finding]]:
        """Findings grouped by kind, in the order of :data:`KINDS`."""
        grouped: dict[str, list[Finding]] = defaultdict(list)
        for finding in self.findings:
            grouped[finding.kind].append(finding)
        return {kind: grouped[kind] for kind in KINDS if kind in grouped}

    def print(self, console: Console, max_rows: int = 20) -> None:
        """One table per kind of problem with up to ``max_rows`` examples, then a summary."""
        for kind, findings in self.by_kind().items():
            severity, meaning = KINDS[kind]
            style = "red" if severity == ERROR else "yellow"
            console.print(Text(f"{kind} ({severity}): {len(findings)} - {meaning}", style=style))
            table = Table(show_lines=False)
            table.add_column("ids", overflow="fold", max_width=48)
            table.add_column("detail", overflow="fold")
            for finding in findings[: max(0, max_rows)]:
                table.add_row(Text(_short_ids(finding.ids)), Text(finding.detail))
            console.print(table)
            if len(findings) > max_rows:
                console.print(Text(f"... and {len(findings) - max_rows} more {kind} (see --json)"))
        verdict = "FAILED" if self.errors else "OK"
        console.print(
            Text(
                f"{verdict}: {self.manifest}: {self.lines} lines, {self.images} images, "
                f"{self.errors} errors, {self.warnings} warnings",
                style="bold red" if self.errors else "bold green",
            )
        )

    def to_json(self) -> dict[str, Any]:
        """Every finding (not just the printed examples), with the counts."""
        return {
            "schema": CHECK_SCHEMA,
            "manifest": str(self.manifest),
            "lines": self.lines,
            "images": self.images,
            "errors": self.errors,
            "warnings": self.warnings,
            "counts": {kind: len(found) for kind, found in self.by_kind().items()},
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True, slots=True)
class _ImageResult:
    """What one pass over one distinct file found: its digest and size, or why it is bad."""

    digest: str | None
    info: ImageInfo | None
    problem: BadImage | None


def check_manifest(folder: Path, *, workers: int | None = None) -> CheckReport:
    """Re-validate the manifest in ``folder`` (or the ``manifest.jsonl`` itself).

    Malformed lines (bad JSON, missing fields, unknown split) still raise ``InputError``: there
    is nothing to check in a file that cannot be read. Everything else becomes a finding.
    """
    manifest_file = manifest_path(folder)
    base = manifest_file.parent
    records = list(iter_manifest(manifest_file, strict=False))
    findings: list[Finding] = []
    findings += _duplicate_ids(records, _line_numbers(manifest_file))
    findings += _text_findings(records)
    real_paths = [os.path.realpath(record.image_path(base)) for record in records]
    results = _scan_images(dict.fromkeys(real_paths), workers=workers)
    findings += _image_findings(records, real_paths, results)
    findings += _image_leaks(records, real_paths, results)
    findings += _text_leaks(records)
    order = list(KINDS)
    findings.sort(key=lambda f: order.index(f.kind))  # stable: file order within a kind
    return CheckReport(
        manifest=manifest_file, lines=len(records), images=len(results), findings=findings
    )


def _finding(kind: str, ids: Iterable[str], detail: str) -> Finding:
    return Finding(kind, KINDS[kind][0], tuple(ids), detail)


def _line_numbers(manifest_file: Path) -> list[int]:
    """File line of each record (``iter_manifest`` skips blank lines, so they can differ)."""
    with open(manifest_file, "rb") as handle:
        return [number for number, raw in enumerate(handle, start=1) if raw.strip()]


def _duplicate_ids(records: list[Record], line_numbers: list[int]) -> list[Finding]:
    lines: dict[str, list[int]] = defaultdict(list)
    for record, number in zip(records, line_numbers, strict=True):
        lines[record.id].append(number)
    findings = []
    for id_, found in lines.items():
        if len(found) > 1:
            shown = ", ".join(map(str, found[:10])) + (", ..." if len(found) > 10 else "")
            findings.append(_finding("duplicate-id", [id_], f"{len(found)} lines: {shown}"))
    return findings


def _text_findings(records: list[Record]) -> list[Finding]:
    findings: list[Finding] = []
    for record in records:
        text = record.text
        if not clean_text(text):
            findings.append(_finding("empty-text", [record.id], f"text is {text!r}"))
            continue
        if not is_nfc(text):
            findings.append(_finding("text-not-nfc", [record.id], _nfc_detail(text)))
        composed = unicodedata.normalize("NFC", text)
        if clean_text(composed) != composed:
            findings.append(_finding("text-not-clean", [record.id], _whitespace_detail(composed)))
    return findings


def _nfc_detail(text: str) -> str:
    """Name the first decomposed sequence, e.g. ``U+0435 U+0308 -> U+0451``."""
    composed = unicodedata.normalize("NFC", text)
    start = next(
        (i for i, (a, b) in enumerate(zip(text, composed, strict=False)) if a != b),
        min(len(text), len(composed)),
    )
    end = start + 1
    while end < len(text) and unicodedata.combining(text[end]):
        end += 1
    before = " ".join(f"U+{ord(c):04X}" for c in text[start:end])
    after = unicodedata.normalize("NFC", text[start:end])
    return (
        f"at character {start}: {before} -> {' '.join(f'U+{ord(c):04X}' for c in after)} "
        f"({after!r}); re-import or run the text through NFC"
    )


def _whitespace_detail(text: str) -> str:
    problems = []
    if text != text.strip():
        problems.append("leading or trailing whitespace")
    inner = text.strip()
    if "  " in inner:
        problems.append("runs of spaces")
    odd = sorted({c for c in inner if c.isspace() and c != " "})
    if odd:
        problems.append(
            "whitespace other than a space: " + ", ".join(f"U+{ord(c):04X}" for c in odd)
        )
    return "; ".join(problems or ["whitespace not collapsed"]) + f" in {text!r}"


def _scan_images(paths: Iterable[str], *, workers: int | None) -> dict[str, _ImageResult]:
    """Hash and decode each distinct file once, in threads, in input order."""
    unique = list(paths)
    count = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=count) as pool:
        return dict(zip(unique, pool.map(_scan_one, unique, chunksize=32), strict=True))


def _scan_one(path: str) -> _ImageResult:
    """Hash the bytes, then decode (the second read comes from the page cache)."""
    try:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return _ImageResult(None, None, BadImage("image missing"))
    except OSError as exc:
        return _ImageResult(None, None, BadImage(f"unreadable image ({exc.strerror})"))
    try:
        return _ImageResult(digest, probe_image(Path(path)), None)
    except BadImage as problem:
        return _ImageResult(digest, None, problem)


def _problem_kind(problem: BadImage) -> str:
    message = str(problem)
    for prefix, kind in (
        ("image missing", "image-missing"),
        ("truncated", "image-truncated"),
        ("decompression bomb", "decompression-bomb"),
    ):
        if message.startswith(prefix):
            return kind
    return "image-unreadable"


def _image_findings(
    records: list[Record], real_paths: list[str], results: dict[str, _ImageResult]
) -> list[Finding]:
    """Per-file problems, reported once per file with every id that references it."""
    ids_by_path: dict[str, list[str]] = defaultdict(list)
    shown: dict[str, str] = {}
    for record, path in zip(records, real_paths, strict=True):
        ids_by_path[path].append(record.id)
        shown.setdefault(path, record.image)
    findings: list[Finding] = []
    for path, ids in ids_by_path.items():
        result = results[path]
        if result.problem is not None:
            findings.append(
                _finding(_problem_kind(result.problem), ids, f"{shown[path]}: {result.problem}")
            )
            continue
        assert result.info is not None
        width, height = result.info.width, result.info.height
        short, long = min(width, height), max(width, height)
        if short > 0 and long / short >= MAX_ASPECT:
            findings.append(
                _finding(
                    "aspect-ratio",
                    ids,
                    f"{shown[path]}: {width}x{height} (ratio {long / short:.0f}); "
                    "split or pad the image",
                )
            )
        if short < MIN_SIDE:
            findings.append(
                _finding("image-too-small", ids, f"{shown[path]}: {width}x{height}; check the crop")
            )
    return findings


def _image_leaks(
    records: list[Record], real_paths: list[str], results: dict[str, _ImageResult]
) -> list[Finding]:
    """Same file or identical bytes across splits; one image reused by OCR lines of one split."""
    by_digest: dict[str, list[tuple[Record, str]]] = defaultdict(list)  # record, real path
    for record, path in zip(records, real_paths, strict=True):
        digest = results[path].digest
        if digest is not None:
            by_digest[digest].append((record, path))
    findings: list[Finding] = []
    for digest, group in by_digest.items():
        if len(group) < 2:
            continue
        files = sorted({record.image for record, _ in group})
        distinct = len({path for _, path in group})
        if distinct == 1:
            what = f"same file {files[0]}" + (
                f" (also referenced as {', '.join(files[1:4])})" if len(files) > 1 else ""
            )
        else:
            what = (
                f"identical bytes (sha256 {digest[:12]}) in {distinct} files: "
                + ", ".join(files[:3])
                + (", ..." if len(files) > 3 else "")
            )
        findings += _cross_split([record for record, _ in group], "leak-image", what)
        for split in ("train", "val", "test"):
            ocr = [r.id for r, _ in group if r.split == split and r.task == "ocr"]
            if len(ocr) > 1:
                findings.append(
                    _finding("duplicate-image", ocr, f"{what}, {len(ocr)} lines in {split}")
                )
    return findings


def _text_leaks(records: list[Record]) -> list[Finding]:
    """OCR lines whose cleaned text repeats across splits within one source.

    Only OCR: a VQA answer such as "yes" or a caption phrase is expected to recur.
    """
    by_text: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        text = clean_text(record.text)
        if record.task == "ocr" and text:
            by_text[(record.source, text)].append(record)
    findings: list[Finding] = []
    for (source, text), group in by_text.items():
        if len({record.split for record in group}) < 2:
            continue
        what = f"source {source}: {text!r}"
        if len(text) < MIN_LEAK_TEXT:
            findings += _cross_split(group, "leak-text-short", what, val_test=False)
        elif _different_writers(group):
            findings += _cross_split(group, "leak-text-other-writer", what, val_test=False)
        else:
            findings += _cross_split(group, "leak-text", what)
    return findings


def _different_writers(group: list[Record]) -> bool:
    """True when train and val/test copies all name a writer and none is shared.

    IAM asked many writers to copy the same LOB passages: the same text by another hand in test
    is the benchmark's design, not a leak of the image.
    """
    writers: dict[str, set[str]] = defaultdict(set)
    for record in group:
        writer = record.meta.get("writer")
        if writer in (None, ""):
            return False
        writers[record.split].add(str(writer))
    train = writers.get("train", set())
    others = writers.get("val", set()) | writers.get("test", set())
    return not (train & others)


def _cross_split(
    group: list[Record], kind: str, what: str, *, val_test: bool = True
) -> list[Finding]:
    """A ``kind`` finding for train vs val/test, and an ``overlap-val-test`` one for val vs test.

    Train against val or test inflates the score; val against test only lets checkpoint
    selection peek at test, so it is a warning.
    """
    ids = {split: [r.id for r in group if r.split == split] for split in ("train", "val", "test")}
    findings: list[Finding] = []
    if ids["train"] and (ids["val"] or ids["test"]):
        where = ", ".join(f"{split} {len(found)}" for split, found in ids.items() if found)
        findings.append(
            _finding(kind, ids["train"] + ids["val"] + ids["test"], f"{what} ({where})")
        )
    elif val_test and ids["val"] and ids["test"]:
        findings.append(
            _finding(
                "overlap-val-test",
                ids["val"] + ids["test"],
                f"{what} (val {len(ids['val'])}, test {len(ids['test'])})",
            )
        )
    return findings


def _short_ids(ids: tuple[str, ...], limit: int = 6) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... (+{len(ids) - limit})" if len(ids) > limit else "")
