"""OCR scoring speed: ``score_ocr`` vs the pure-Python edit-distance loop it replaces.

Generates 100,000 synthetic Cyrillic lines (20-80 characters, pre-reform spelling, about 3 % of
characters corrupted by substitutions, deletions and insertions), then times, in the same run:

* ours: ``score_ocr`` with everything it does (normalization, micro and macro CER/WER, line
  accuracy, 95% bootstrap CI with 1,000 resamples, error analysis, per-line rows), on one core;
* the baseline: a plain Python O(n*m) dynamic-programming Levenshtein per line, CER and WER
  averaged over lines (macro), no CI, like the one-file workflow script it replaces.

It prints both times, the ratio and PASS/FAIL for the target (ours under 10 s). The baseline can
take minutes on all lines: ``--baseline-lines N`` times the first N lines and extrapolates
linearly to the full count (the row then says so).

    python benchmarks/bench_metrics.py [--lines 100000] [--baseline-lines N]
"""

from __future__ import annotations

import os

# One core for the numeric libraries, set before numpy is imported (by vlm_retain or here).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from vlm_retain.evaluate.metrics.ocr import score_ocr  # noqa: E402

TARGET_SECONDS = 10.0
# Words in Digital Peter's spelling (pre-reform letters ѣ i ѳ ѵ ъ) to build lines from.
SOURCE_TEXT = (
    "зело многа в гафѣ i непърестано выхо какъ здравъствуй писмо ваше получили мы сего "
    "мѣсяца которое писано i съ онымъ ѳеатръ мѵро лѣсофъ карабля на три для славы бога "
    "понеже безотложно бытие мое государь благодарствую впрѣд також въ морѣ вкроетца"
)
WORDS = SOURCE_TEXT.split()
ALPHABET = "абвгдежзийклмнопрстуфхцчшщъыьэюяѣiѳѵ "


def synthetic_lines(n: int, error_rate: float = 0.03, seed: int = 0) -> tuple[list, list]:
    """``n`` reference lines of 20-80 characters and predictions with ~``error_rate`` edits."""
    rng = random.Random(seed)
    references, predictions = [], []
    for _ in range(n):
        target = rng.randint(20, 80)
        words: list[str] = []
        while len(" ".join(words)) < target:
            words.append(rng.choice(WORDS))
        reference = " ".join(words)[:target].strip()
        out = []
        for char in reference:
            roll = rng.random()
            if roll < error_rate / 3:
                out.append(rng.choice(ALPHABET))  # substitution
            elif roll < 2 * error_rate / 3:
                continue  # deletion
            elif roll < error_rate:
                out.extend((char, rng.choice(ALPHABET)))  # insertion
            else:
                out.append(char)
        references.append(reference)
        # whitespace as a clean prediction has it, so both methods score the same strings
        predictions.append(" ".join("".join(out).split()))
    return references, predictions


def python_levenshtein(a: str | list[str], b: str | list[str]) -> int:
    """Textbook O(len(a) * len(b)) dynamic programme in pure Python (the baseline)."""
    previous = list(range(len(b) + 1))
    for i, item_a in enumerate(a, 1):
        current = [i]
        for j, item_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item_a != item_b))
            )
        previous = current
    return previous[-1]


def baseline(references: list[str], predictions: list[str]) -> tuple[float, float]:
    """Mean of per-line CER and of per-line WER, as the one-file script computes them."""
    cers, wers = [], []
    for reference, prediction in zip(references, predictions, strict=True):
        cers.append(python_levenshtein(reference, prediction) / max(1, len(reference)))
        ref_words = reference.split()
        wers.append(python_levenshtein(ref_words, prediction.split()) / max(1, len(ref_words)))
    return statistics.fmean(cers), statistics.fmean(wers)


def pin_to_one_core() -> str:
    """Restrict this process to one CPU where the OS allows it; say what was done."""
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "thread pools limited to 1 (no CPU pinning on this OS)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument(
        "--baseline-lines",
        type=int,
        default=None,
        help="time the Python baseline on the first N lines and extrapolate (default: all)",
    )
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    baseline_lines = min(args.baseline_lines or args.lines, args.lines)
    console = Console()
    pinning = pin_to_one_core()
    with console.status(f"generating {args.lines:,} synthetic lines"):
        references, predictions = synthetic_lines(args.lines)
    chars = sum(map(len, references))

    with console.status("timing score_ocr"):
        start = time.perf_counter()
        report = score_ocr(references, predictions, resamples=args.resamples)
        ours = time.perf_counter() - start
    with console.status(f"timing the Python loop on {baseline_lines:,} lines"):
        start = time.perf_counter()
        base_cer, base_wer = baseline(references[:baseline_lines], predictions[:baseline_lines])
        measured = time.perf_counter() - start
    theirs = measured * args.lines / baseline_lines
    extrapolated = baseline_lines < args.lines
    ours_cer = statistics.fmean(row["cer"] for row in report.per_item[:baseline_lines])
    ours_wer = statistics.fmean(row["wer"] for row in report.per_item[:baseline_lines])

    table = Table(
        title=(
            f"OCR scoring: {args.lines:,} lines, {chars / args.lines:.0f} chars/line mean, "
            f"micro CER {report.metrics['cer']:.2%}; {pinning}"
        )
    )
    for column, justify in (
        ("method", "left"),
        ("lines timed", "right"),
        ("seconds", "right"),
        ("computes", "left"),
        (f"macro CER/WER, first {baseline_lines:,}", "right"),
    ):
        table.add_column(column, justify=justify)
    table.add_row(
        "score_ocr (rapidfuzz)",
        f"{args.lines:,}",
        f"{ours:.2f}",
        f"5 metrics, CI ({args.resamples:,}), errors, rows",
        f"{ours_cer:.3%} / {ours_wer:.3%}",
    )
    label = f"{theirs:.1f}" + (f" (extrapolated, {measured:.1f} measured)" if extrapolated else "")
    table.add_row(
        "Python DP loop (old script)",
        f"{baseline_lines:,}",
        label,
        "mean per-line CER, WER; no CI",
        f"{base_cer:.3%} / {base_wer:.3%}",
    )
    table.add_row("ratio (loop / ours)", "", f"{theirs / ours:.0f}x", "", "")
    console.print(table)
    same = abs(ours_cer - base_cer) < 1e-12 and abs(ours_wer - base_wer) < 1e-12
    console.print(f"per-line rates of both methods agree on the timed lines: {same}")
    verdict = "PASS" if ours < TARGET_SECONDS * args.lines / 100_000 else "FAIL"
    console.print(f"target: ours under {TARGET_SECONDS:.0f} s per 100,000 lines -> {verdict}")


if __name__ == "__main__":
    main()
