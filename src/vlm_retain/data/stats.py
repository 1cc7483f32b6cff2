"""``data stats``: what a manifest holds, per split, before deciding how to train on it.

The numbers answer the questions that come before training: how big is each split and in which
languages and sources; which characters appear (a model's tokenizer and a CER both depend on
it); which characters of val/test never occur in train (the model cannot learn them from this
data, so they cap the reachable CER); and how long the lines and how large the images are
(which sets ``max_new_tokens``, the image-pixel budget and the batch size).

Image sizes come from the image headers (no decoding), read in threads; images that cannot be
opened are counted as unmeasured (``data check`` says why).
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from vlm_retain.data.card import charset
from vlm_retain.data.images import ImageInfo, probe_many
from vlm_retain.data.manifest import SPLITS, iter_manifest, manifest_path

STATS_SCHEMA = "vlm-retain/stats/1"
_EXAMPLES = 5


def manifest_stats(folder: Path, *, workers: int | None = None) -> dict[str, Any]:
    """Counts, charsets, unseen characters and length/size distributions as a JSON-able dict.

    Reads leniently (``strict=False``) so a manifest that ``data check`` would flag can still be
    described; malformed lines remain an ``InputError``.
    """
    manifest_file = manifest_path(folder)
    base = manifest_file.parent
    records = list(iter_manifest(manifest_file, strict=False))
    splits = [s for s in SPLITS if any(r.split == s for r in records)]

    counts: dict[str, Counter[str]] = {
        "split": Counter(),
        "lang": Counter(),
        "source": Counter(),
        "task": Counter(),
    }
    per_split: dict[str, Counter[str]] = defaultdict(Counter)
    texts: dict[str, list[str]] = defaultdict(list)
    for record in records:
        counts["split"][record.split] += 1
        counts["lang"][record.lang] += 1
        counts["source"][record.source] += 1
        counts["task"][record.task] += 1
        per_split[record.split][f"{record.source}/{record.lang}"] += 1
        texts[record.split].append(record.text)

    real_paths = [Path(os.path.realpath(r.image_path(base))) for r in records]
    probed = dict(
        probe_many(
            dict.fromkeys(real_paths),
            decode=False,
            workers=workers or max(1, min(8, os.cpu_count() or 1)),
        )
    )
    sizes: dict[str, list[ImageInfo]] = defaultdict(list)
    unmeasured: Counter[str] = Counter()
    for record, path in zip(records, real_paths, strict=True):
        info = probed[path]
        if isinstance(info, ImageInfo):
            sizes[record.split].append(info)
        else:
            unmeasured[record.split] += 1

    return {
        "schema": STATS_SCHEMA,
        "manifest": str(manifest_file),
        "total": len(records),
        "counts": {
            **{key: dict(sorted(counter.items())) for key, counter in counts.items()},
            "split": {s: counts["split"][s] for s in splits},
            "per_split": {s: dict(sorted(per_split[s].items())) for s in splits},
        },
        "charset": {s: charset(texts[s]) for s in splits},
        "charset_size": {s: len(charset(texts[s])) for s in splits},
        "unseen_in_train": {
            s: _unseen(
                records_of=[r for r in records if r.split == s],
                known=set(charset(texts.get("train", []))),
            )
            for s in splits
            if s != "train"
        },
        "text_chars": {s: distribution([len(t) for t in texts[s]]) for s in splits},
        "text_words": {s: distribution([len(t.split()) for t in texts[s]]) for s in splits},
        "image": {
            s: {
                "measured": len(sizes[s]),
                "unmeasured": unmeasured[s],
                "width": distribution([i.width for i in sizes[s]]),
                "height": distribution([i.height for i in sizes[s]]),
                "aspect": distribution([i.width / i.height for i in sizes[s] if i.height]),
            }
            for s in splits
        },
    }


def _unseen(records_of: Sequence[Any], known: set[str]) -> list[dict[str, Any]]:
    """Characters of these records absent from train: count, lines and example ids, most first."""
    occurrences: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for record in records_of:
        found = Counter(c for c in record.text if c not in known)
        occurrences.update(found)
        for char in found:
            lines[char] += 1
            if len(examples[char]) < _EXAMPLES:
                examples[char].append(record.id)
    return [
        {
            "char": char,
            "codepoint": f"U+{ord(char):04X}",
            "name": unicodedata.name(char, "?"),
            "count": count,
            "lines": lines[char],
            "examples": examples[char],
        }
        for char, count in sorted(occurrences.items(), key=lambda item: (-item[1], item[0]))
    ]


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """min, p10, median, p90, max, mean (linear-interpolated percentiles); Nones when empty."""
    if not values:
        return dict.fromkeys(("n", "min", "p10", "median", "p90", "max", "mean"), None) | {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": _round(ordered[0]),
        "p10": _round(_percentile(ordered, 0.10)),
        "median": _round(_percentile(ordered, 0.50)),
        "p90": _round(_percentile(ordered, 0.90)),
        "max": _round(ordered[-1]),
        "mean": _round(sum(ordered) / len(ordered)),
    }


def _percentile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 3)


def print_stats(result: dict[str, Any], console: Console) -> None:
    """Tables for counts, charsets, unseen characters and distributions."""
    console.print(Text(f"{result['manifest']}: {result['total']} lines", style="bold"))
    splits = list(result["counts"]["split"])

    counts = Table(title="lines per split", title_justify="left")
    counts.add_column("split")
    counts.add_column("source/lang")
    counts.add_column("lines", justify="right")
    for split in splits:
        parts = result["counts"]["per_split"][split]
        for key, count in parts.items():
            counts.add_row(split, Text(key), str(count))
        if len(parts) > 1:
            total = str(result["counts"]["split"][split])
            counts.add_row(Text(split, style="bold"), "all", Text(total, style="bold"))
    console.print(counts)
    for key in ("lang", "source", "task"):
        console.print(
            Text(f"{key}: " + ", ".join(f"{k} {v}" for k, v in result["counts"][key].items()))
        )

    chars = Table(title="characters per split", title_justify="left")
    chars.add_column("split")
    chars.add_column("distinct", justify="right")
    chars.add_column("charset", overflow="fold")
    for split in splits:
        chars.add_row(split, str(result["charset_size"][split]), Text(result["charset"][split]))
    console.print(chars)

    for split, unseen in result["unseen_in_train"].items():
        if not unseen:
            console.print(Text(f"{split}: every character also occurs in train", style="green"))
            continue
        table = Table(
            title=f"{split}: {len(unseen)} characters never seen in train",
            title_justify="left",
            title_style="yellow",
        )
        for column, justify in (
            ("char", "left"),
            ("code", "left"),
            ("name", "left"),
            ("count", "right"),
            ("lines", "right"),
            ("examples", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for item in unseen:
            table.add_row(
                Text(item["char"]),
                item["codepoint"],
                Text(item["name"]),
                str(item["count"]),
                str(item["lines"]),
                Text(", ".join(item["examples"])),
            )
        console.print(table)

    dist = Table(title="distributions (min / p10 / median / p90 / max, mean)", title_justify="left")
    dist.add_column("split")
    dist.add_column("measure")
    for column in ("min", "p10", "median", "p90", "max", "mean"):
        dist.add_column(column, justify="right")
    for split in splits:
        image = result["image"][split]
        rows = (
            ("text chars", result["text_chars"][split]),
            ("text words", result["text_words"][split]),
            ("image width", image["width"]),
            ("image height", image["height"]),
            ("image aspect w/h", image["aspect"]),
        )
        for name, values in rows:
            dist.add_row(
                split,
                name,
                *(_cell(values[c]) for c in ("min", "p10", "median", "p90", "max", "mean")),
            )
        if image["unmeasured"]:
            dist.add_row(
                split,
                Text(f"{image['unmeasured']} images unreadable (see data check)", style="yellow"),
            )
    console.print(dist)


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.2f}"
