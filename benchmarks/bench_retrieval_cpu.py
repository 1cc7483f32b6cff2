"""Generative retrieval scoring on CPU: the prefix-cache path against full forwards, in one run.

The retrieval tasks score every (image, caption) pair of a gallery (default 100 images x 500
captions = 50,000 pairs) by the caption's mean log-likelihood given the image. This benchmark
builds such a gallery (synthetic images, five made-up captions each), a tiny random model of a
real architecture (default Qwen2.5-VL, size ``s``) and times three ways of filling the matrix:

* **cached** (what ``score_matrix`` does): one prefill per image, captions scored in batches
  against the batch-expanded KV cache. Timed on the whole gallery, image by image.
* **full, batched** (the fallback path for families without a checked cache): a full forward per
  pair, ``--batch-size`` pairs per forward, the image repeated. Timed on ``--subset-images``
  images x all captions and extrapolated to the gallery.
* **full, one pair at a time** (the naive way): a full forward per pair, unbatched. Timed on
  ``--naive-pairs`` pairs and extrapolated.

Both full ways must give the cached scores on the pairs they share (max |difference| is printed):
the speed-up is not bought with a different number. Each way gets an untimed warm-up. Why
medians: a shared CPU makes single timings swing several-fold, so the gallery time of each way
is its median time per unit of work (an image; a pair for the naive way) times the number of
units, and the raw measured totals are printed beside it.

    python benchmarks/bench_retrieval_cpu.py [--images 100] [--captions-per-image 5]
        [--family qwen2_5_vl] [--size s] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

PROMPT = "Describe this image in one sentence."
_VOCABULARY = (
    "a an the old handwritten letter page ledger map photo portrait of with on in near red blue "
    "faded torn small large two three men woman child house church river street table book ink "
    "signed dated seal stamp margin notes written cyrillic arabic latin script line lines"
)
_WORDS = _VOCABULARY.split()


def make_gallery(n_images: int, per_image: int, seed: int = 0) -> tuple[list, list[str], list[int]]:
    """``n_images`` distinct synthetic images, ``per_image`` captions each, and caption owners."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    images, captions, owners = [], [], []
    for i in range(n_images):
        image = Image.new("RGB", (224, 224), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(200), rng.randrange(200)
            color = tuple(rng.randrange(256) for _ in range(3))
            draw.rectangle((x, y, x + rng.randrange(8, 60), y + rng.randrange(8, 60)), fill=color)
        draw.text((8, 8), f"no. {i}", fill="black")
        images.append(image)
        for _ in range(per_image):
            captions.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randrange(6, 16))))
            owners.append(i)
    return images, captions, owners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--family", default="qwen2_5_vl")
    parser.add_argument("--size", default="s")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--subset-images", type=int, default=3)
    parser.add_argument("--naive-pairs", type=int, default=100)
    args = parser.parse_args()

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()

    import torch

    from vlm_retain.evaluate.likelihood import caption_loglik, score_matrix
    from vlm_retain.evaluate.metrics.retrieval import score_retrieval
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    console = Console(width=max(Console().width, 110))
    images, captions, owners = make_gallery(args.images, args.captions_per_image)
    n_pairs = len(images) * len(captions)
    bs = args.batch_size
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        loaded = load_model(build_tiny(args.family, Path(tmp) / "m", size=args.size), device="cpu")

    # warm-ups (untimed): allocator, kernels, processor caches
    caption_loglik(loaded, images[0], captions[:bs], prompt=PROMPT, batch_size=bs)
    caption_loglik(loaded, images[0], captions[:bs], prompt=PROMPT, batch_size=bs, method="full")

    # cached: the whole gallery, with a time stamp per image (progress callback)
    stamps = [time.perf_counter()]
    cached = score_matrix(
        loaded,
        images,
        captions,
        prompt=PROMPT,
        batch_size=bs,
        progress=lambda done, total: stamps.append(time.perf_counter()),
    )
    cached_units = np.diff(stamps)  # seconds per image (the first includes caption tokenizing)

    # full forwards, batched: image by image on a subset
    sub = images[: args.subset_images]
    batched_rows, batched_units = [], []
    for image in sub:
        start = time.perf_counter()
        batched_rows.append(
            caption_loglik(loaded, image, captions, prompt=PROMPT, batch_size=bs, method="full")
        )
        batched_units.append(time.perf_counter() - start)
    batched = np.stack(batched_rows)

    # one full forward per pair: pair by pair on the first image
    naive_n = min(args.naive_pairs, len(captions))
    naive_list, naive_units = [], []
    for caption in captions[:naive_n]:
        start = time.perf_counter()
        naive_list.append(
            caption_loglik(loaded, images[0], [caption], prompt=PROMPT, method="full")[0]
        )
        naive_units.append(time.perf_counter() - start)
    naive = np.array(naive_list)

    n_img = len(images)
    ways = [
        # name, measured on, measured seconds, median unit seconds x units in the gallery, diff
        (
            "cached prefix (score_matrix)",
            f"all {n_pairs:,} pairs",
            float(np.sum(cached_units)),
            float(np.median(cached_units)) * n_img,
            "-",
        ),
        (
            f"full forwards, batch {bs}",
            f"{len(sub)} image(s) x {len(captions)}",
            float(np.sum(batched_units)),
            float(np.median(batched_units)) * n_img,
            f"{float(np.abs(batched - cached[: len(sub)]).max()):.1e}",
        ),
        (
            "full forward per pair (naive)",
            f"{naive_n} pairs",
            float(np.sum(naive_units)),
            float(np.median(naive_units)) * n_pairs,
            f"{float(np.abs(naive - cached[0, :naive_n]).max()):.1e}",
        ),
    ]
    report = score_retrieval(cached, owners, resamples=0)

    table = Table(
        title=(
            f"Retrieval scoring on CPU ({torch.get_num_threads()} threads, "
            f"{os.cpu_count()} cores): {len(images)} images x {len(captions)} captions = "
            f"{n_pairs:,} pairs, tiny {args.family} size {args.size}"
        )
    )
    columns = (
        "way",
        "measured on",
        "measured s",
        "gallery s (median-based)",
        "pairs/s",
        "max |Δ| vs cached",
        "vs cached",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "way" else "right")
    base = ways[0][3]
    for name, measured_on, measured_s, gallery_s, diff in ways:
        table.add_row(
            name,
            measured_on,
            f"{measured_s:,.1f}",
            f"{gallery_s:,.1f}",
            f"{n_pairs / gallery_s:,.0f}",
            diff,
            f"{gallery_s / base:.1f}x slower" if gallery_s is not base else "1.0x",
        )
    console.print(table)
    console.print(
        f"cached path {n_pairs / base:,.0f} pairs/s: {ways[1][3] / base:.1f}x faster than "
        f"batched full forwards, {ways[2][3] / base:.1f}x faster than one pair at a time. "
        "Gallery seconds are the median time per unit of work (image, or pair for the naive "
        "way) times the units in the gallery, so other processes on the machine skew them less "
        "than the measured totals. (Random model: Recall@1 t2i "
        f"{report.metrics['t2i_r1']:.3f} / i2t {report.metrics['i2t_r1']:.3f} is chance level.)"
    )


if __name__ == "__main__":
    main()
