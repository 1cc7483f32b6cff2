"""Import throughput: 10,000 IAM-sized lines (referenced, not copied) on this machine.

Writes an IAM layout (``ascii/lines.txt`` + ``lines/<a>/<a-b>/<id>.png``) once under
``benchmarks/.cache/`` with grayscale PNGs of IAM's typical size (about 1,700 x 110 px, ~40 kB),
then times ``vlm-retain data import iam`` end to end (parse, decode-verify every image, write
manifest and card) and prints a table. Target: under 60 s on 2 cores.

    python benchmarks/bench_import.py [--lines 10000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from vlm_retain.data.importers import iam
from vlm_retain.data.importers.base import CommonOptions, run_import

CACHE = Path(__file__).parent / ".cache"
WORDS = [
    "A",
    "MOVE",
    "to",
    "stop",
    "Mr.",
    "Gaitskell",
    "from",
    "nominating",
    "any",
    "more",
    "Labour",
    "life",
    "Peers",
    ",",
    "he",
    "said",
]


def write_layout(root: Path, n_lines: int, seed: int = 0) -> None:
    """An IAM tree with ``n_lines`` lines: 10 lines per form, 40 distinct images reused."""
    rng = np.random.default_rng(seed)
    variants = []
    for _ in range(40):
        width = int(rng.integers(1500, 1900))
        page = rng.normal(235, 6, size=(110, width))
        for x0 in range(20, width - 60, 45):  # ink strokes so PNG compresses like a real line
            page[30:80, x0 : x0 + int(rng.integers(15, 35))] -= rng.uniform(120, 190)
        variants.append(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8), mode="L"))
    encoded = []
    for image in variants:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    rows = ["# iam database line information (benchmark layout)"]
    for index in range(n_lines):
        form = f"b{index // 1000:02d}-{(index // 10) % 100:03d}"
        line_id = f"{form}-{index % 10:02d}"
        folder = root / "lines" / form.split("-")[0] / form
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{line_id}.png").write_bytes(encoded[index % len(encoded)])
        text = "|".join(WORDS[(index + k) % len(WORDS)] for k in range(8))
        rows.append(f"{line_id} ok 154 19 408 746 1661 89 {text}")
    (root / "ascii").mkdir(parents=True, exist_ok=True)
    (root / "ascii" / "lines.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="verification threads (2 = target)")
    args = parser.parse_args()
    console = Console()
    root = CACHE / f"iam-{args.lines}"
    if not (root / "ascii" / "lines.txt").is_file():
        shutil.rmtree(root, ignore_errors=True)
        with console.status(f"writing {args.lines} IAM-sized line images (once)"):
            write_layout(root, args.lines)
    size_mb = sum(p.stat().st_size for p in (root / "lines").rglob("*.png")) / 1e6
    table = Table(
        title=f"import iam: {args.lines} lines, {size_mb:.0f} MB of PNG,"
        f" {args.workers} worker threads, {os.cpu_count()} cores"
    )
    for column in ("run", "seconds", "lines/s", "target (< 60 s)"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.repeat + 1):
            out = Path(tmp) / f"out{run}"
            start = time.perf_counter()
            card = run_import(
                "iam",
                root,
                iam.IamOptions(),
                iam.build,
                CommonOptions(out=out, progress=False, workers=args.workers),
            )
            seconds = time.perf_counter() - start
            assert card["total"] == args.lines, card["skipped"]
            verdict = "PASS" if seconds < 60 * args.lines / 10_000 else "FAIL"
            table.add_row(str(run), f"{seconds:.1f}", f"{args.lines / seconds:,.0f}", verdict)
    console.print(table)


if __name__ == "__main__":
    main()
