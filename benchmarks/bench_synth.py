"""Synthetic line throughput: 2,000 lines across ru, en, it, ar with 2 worker processes.

Times ``data synth htr`` end to end (text generation, font choice, rendering, augmentation, PNG
writing, manifest, card) for all four languages in one run, which is the target (under 60 s on
2 cores), then once per language (a quarter of the lines each) to show where the time goes.

    python benchmarks/bench_synth.py [--lines 2000] [--workers 2] [--no-per-language]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vlm_retain.data.synthetic.htr import HtrOptions, synth_htr

LANGS = ("ru", "en", "it", "ar")
TARGET_S = 60.0


def timed(out: Path, options: HtrOptions) -> tuple[float, int, float]:
    """Seconds, lines written and MB of PNG for one generation run."""
    start = time.perf_counter()
    card = synth_htr(out, options, progress=False)
    seconds = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in (out / "images").iterdir()) / 1e6
    return seconds, card["total"], megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=2000, help="total lines, split evenly")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (2 = target)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-per-language", action="store_true", help="only the combined run")
    args = parser.parse_args()
    per_lang = max(1, args.lines // len(LANGS))
    console = Console()
    table = Table(
        title=f"synth htr: {per_lang * len(LANGS)} lines, {args.workers} worker processes,"
        f" {os.cpu_count()} cores"
    )
    for column in ("run", "lines", "seconds", "lines/s", "MB of PNG", "target"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_per_language:
            for lang in LANGS:
                options = HtrOptions(
                    langs=(lang,), per_lang=per_lang, seed=args.seed, workers=args.workers
                )
                seconds, lines, mb = timed(Path(tmp) / lang, options)
                table.add_row(lang, str(lines), f"{seconds:.1f}", f"{lines / seconds:.0f}",
                              f"{mb:.0f}", "")  # fmt: skip
        options = HtrOptions(langs=LANGS, per_lang=per_lang, seed=args.seed, workers=args.workers)
        seconds, lines, mb = timed(Path(tmp) / "all", options)
        target = TARGET_S * lines / 2000
        verdict = "PASS" if seconds < target else "FAIL"
        table.add_row(
            "total (one run)", str(lines), f"{seconds:.1f}", f"{lines / seconds:.0f}", f"{mb:.0f}",
            f"{verdict} (< {target:.0f} s)", style="bold",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
