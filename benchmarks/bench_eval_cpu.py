"""OCR generation speed on CPU: the current workflow's way against ours, in one run.

Renders ``--lines`` synthetic handwriting-like lines (``data synth htr``, four scripts), builds a
tiny random model of a real architecture (default Qwen2.5-VL, size ``s``) and transcribes every
line twice with the same prompt:

* the current workflow's way: one image at a time, sampling with LLaMA-Factory's default
  decoding parameters (do_sample, temperature 0.95, top_p 0.7, top_k 50; its max_new_tokens
  default is 1,024), which is what the seed script's ``predict`` run uses;
* ours: ``HFBackend``, greedy, batches sorted by estimated length, at the best of
  ``--batch-sizes`` (each tried on the same lines; the table shows all of them).

Fairness: a random tiny model stops at arbitrary points, so both ways are forced to generate
exactly ``--new-tokens`` tokens per line (``min_new_tokens = max_new_tokens``); the work per line
is then identical and only the way of generating differs. Each way gets one untimed warm-up batch.
It prints lines/s for each and the ratio against the target (at least 5x).

    python benchmarks/bench_eval_cpu.py [--lines 64] [--new-tokens 48] [--family qwen2_5_vl]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGET_RATIO = 5.0
#: LLaMA-Factory's GeneratingArguments defaults (do_sample=True, temperature=0.95, top_p=0.7,
#: top_k=50, max_new_tokens=1024): how the current workflow decodes.
CURRENT_SAMPLING = {"do_sample": True, "temperature": 0.95, "top_p": 0.7, "top_k": 50}


def make_lines(folder: Path, n: int) -> Path:
    """``n`` synthetic lines across ru/en/it/ar, written as a manifest."""
    from vlm_retain.data.synthetic.htr import HtrOptions, synth_htr

    per_lang = max(1, -(-n // 4))
    options = HtrOptions(per_lang=per_lang, seed=0, workers=1, val_frac=0.0)
    synth_htr(folder, options, progress=False)
    return folder


def timed(backend, requests) -> tuple[float, list]:
    """Seconds to run every request through ``backend`` (after one untimed warm-up batch)."""
    warm = requests[: backend.config.batch_size]
    list(backend.generate(warm))
    start = time.perf_counter()
    results = list(backend.generate(requests))
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--family", default="qwen2_5_vl")
    parser.add_argument("--size", default="s")
    parser.add_argument("--batch-sizes", default="8,16,32")
    args = parser.parse_args()

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()

    import torch

    from vlm_retain.evaluate.generate import DEFAULT_OCR_PROMPT, GenerationConfig, Request
    from vlm_retain.evaluate.generate.hf import HFBackend
    from vlm_retain.evaluate.generate.inputs import from_manifest
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    console = Console(width=max(Console().width, 110))
    n_tokens = args.new_tokens
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        root = Path(tmp)
        items = from_manifest(make_lines(root / "lines", args.lines))[: args.lines]
        loaded = load_model(build_tiny(args.family, root / "model", size=args.size), device="cpu")
        requests = [Request(i.id, i.image, DEFAULT_OCR_PROMPT) for i in items]

        current_cfg = GenerationConfig(
            batch_size=1,
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,
            sort_by_length=False,
            **CURRENT_SAMPLING,
        )
        torch.manual_seed(0)
        current_s, current_results = timed(HFBackend(loaded, current_cfg), requests)
        rows = [("current: one at a time, sampling", 1, current_s, current_results)]
        for size in (int(s) for s in args.batch_sizes.split(",")):
            cfg = GenerationConfig(
                batch_size=size, max_new_tokens=n_tokens, min_new_tokens=n_tokens
            )
            seconds, results = timed(HFBackend(loaded, cfg), requests)
            rows.append(("ours: HFBackend, greedy", size, seconds, results))

    n = len(requests)
    best = min(rows[1:], key=lambda row: row[2])
    ratio = current_s / best[2]
    table = Table(
        title=(
            f"OCR generation on CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores): "
            f"{n} synthetic lines, tiny {args.family} size {args.size}, "
            f"{n_tokens} new tokens forced per line"
        )
    )
    for column in ("way", "batch", "seconds", "lines/s", "tokens/line", "errors", "vs current"):
        table.add_column(column, justify="left" if column == "way" else "right")
    for name, size, seconds, results in rows:
        tokens = sum(r.n_tokens for r in results) / max(1, len(results))
        errors = sum(1 for r in results if r.error)
        mark = " *" if (name, size) == (best[0], best[1]) else ""
        table.add_row(
            name + mark,
            str(size),
            f"{seconds:.2f}",
            f"{n / seconds:.2f}",
            f"{tokens:.0f}",
            str(errors),
            f"{current_s / seconds:.1f}x",
        )
    console.print(table)
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    console.print(
        f"current way {n / current_s:.2f} lines/s, ours {n / best[2]:.2f} lines/s "
        f"(batch {best[1]}): {ratio:.1f}x, target >= {TARGET_RATIO:.0f}x: {verdict}"
    )


if __name__ == "__main__":
    main()
