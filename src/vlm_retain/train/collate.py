"""Turning mixture samples into training batches, and grouping them so multi-GPU jobs never hang.

The collator (:class:`Collator`) loads each image as RGB, applies the pixel budget (downscale
keeping the aspect; for Qwen both sides stay multiples of 28 so the processor does not resize
again), and calls :func:`vlm_retain.models.encoding.encode` with the answers and right padding:
the chat format is the one generation uses, and ``labels`` are -100 everywhere but the answer and
its end-of-turn token. Beside the model inputs it returns ``source_ids`` (an int per sample, for
per-source loss) and ``replay`` (a bool per sample, so the KL term can run on replay samples
only): the batch contract of :mod:`vlm_retain.train.objectives`, whose ``model_inputs`` strips
both (and ``labels``) before ``model(**inputs)``.

**Text-only and image samples in one run (multi-GPU).** A step in which one rank runs the vision
tower and another does not hangs ZeRO-3 (parameter all-gathers are collective) and breaks DDP's
gradient reduction. Two fixes are common: a dummy image for every text-only sample, or batches
grouped by modality. We group (:func:`plan_batches`): every batch is all-image or all-text, and
batches come in blocks of ``num_replicas`` of one modality. Accelerate's batch-sampler sharding
(and ``batches[rank::num_replicas]``) gives rank ``r`` batches ``r, r + W, r + 2W, ...``, so in
every micro-step either every rank runs the vision tower or none does. A short block is filled
by repeating samples of the same modality, so every rank always has a batch. Why not the dummy
image: it changes what a text-only sample trains on (the model sees an image it must ignore) and
spends vision compute on every text sample; grouping costs nothing. With DDP and a trainable
vision tower, a text-only step leaves its parameters without gradients on every rank, so DDP
needs ``find_unused_parameters=True`` (ZeRO and FSDP do not care). A single collated batch may
still mix both kinds (the collator and ``encode`` handle it); only the sampler keeps them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlm_retain.data.images import BadImage, open_image
from vlm_retain.errors import InputError
from vlm_retain.train.mixture import Sample, budget_size
from vlm_retain.train.sample_cache import CACHEABLE_FAMILIES, SampleCache


def load_image(path: Path, *, max_pixels: int | None = None, unit: int | None = None) -> Any:
    """An RGB PIL image within ``max_pixels`` (see :func:`~vlm_retain.train.mixture.budget_size`).

    A missing or broken image is an :class:`InputError` naming the file.
    """
    try:
        with open_image(path) as handle:
            image = handle.convert("RGB")
    except BadImage as exc:
        raise InputError(str(exc), path=path) from None
    except OSError as exc:
        raise InputError(f"unreadable image ({exc})", path=path) from None
    size = budget_size(image.width, image.height, max_pixels, unit)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


class Collator:
    """``collator(samples) -> batch`` for one loaded model.

    ``sources`` fixes the id of every source name (``source_ids`` index into it), so ids agree
    across batches and ranks; pass the mixture's source names (e.g. ``sorted(Mixture.stats)``).
    ``max_pixels`` is the per-image pixel budget (None: the processor's own limit only).
    """

    def __init__(
        self,
        loaded: Any,
        sources: Sequence[str],
        *,
        max_pixels: int | None = None,
        system: str | None = None,
        cache_mib: float = 0,
    ) -> None:
        self.loaded = loaded
        self.source_index: Mapping[str, int] = {name: i for i, name in enumerate(sources)}
        self.max_pixels = max_pixels
        self.system = system
        facts = loaded.family.image
        self.unit = facts.unit if facts.dynamic else None
        #: encoded samples kept for later epochs (:mod:`~vlm_retain.train.sample_cache`)
        self.cache: SampleCache | None = None
        if cache_mib > 0 and loaded.family.name in CACHEABLE_FAMILIES:
            pad = getattr(loaded.processor.tokenizer, "pad_token_id", None) or 0
            self.cache = SampleCache(pad, limit_mib=cache_mib)

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        import torch

        from vlm_retain.models.encoding import encode

        if not samples:
            raise InputError("collate: empty batch")
        unknown = sorted({s.source for s in samples} - set(self.source_index))
        if unknown:
            raise InputError(
                f"collate: unknown source {unknown[0]!r}",
                hint=f"known sources: {', '.join(self.source_index)}",
            )

        def encode_some(indices: Sequence[int]) -> dict[str, Any]:
            chosen = [samples[i] for i in indices]
            images = [
                load_image(s.image, max_pixels=self.max_pixels, unit=self.unit)
                if s.image is not None
                else None
                for s in chosen
            ]
            return encode(
                self.loaded,
                images,
                [s.prompt for s in chosen],
                [s.answer for s in chosen],
                padding_side="right",
                system=self.system,
            )

        batch = None
        if self.cache is not None:
            keys = [(str(s.image) if s.image else None, s.prompt, s.answer) for s in samples]
            batch = self.cache.batch(keys, encode_some)
        if batch is None:
            batch = encode_some(range(len(samples)))
        batch["source_ids"] = torch.tensor(
            [self.source_index[s.source] for s in samples], dtype=torch.long
        )
        batch["replay"] = torch.tensor([s.replay for s in samples], dtype=torch.bool)
        return batch


def plan_batches(
    samples: Sequence[Sample],
    batch_size: int,
    *,
    num_replicas: int = 1,
    seed: int = 0,
    epoch: int = 0,
    group_by_length: bool = True,
    mega: int = 50,
) -> list[list[int]]:
    """Index batches for one epoch: each all-image or all-text, in modality blocks of
    ``num_replicas`` consecutive batches (see the module docstring).

    With ``group_by_length``, indices are sorted by estimated tokens within windows of ``mega``
    blocks (as the HF length-grouped sampler does), so a batch and the batches of the other
    ranks in its step have similar lengths and little padding. Block order is shuffled with
    ``(seed, epoch)``. With one replica no sample is repeated (the last batch of each modality
    may be short); with more, a modality's last block is filled by repeating its samples.
    """
    if batch_size < 1 or num_replicas < 1:
        raise InputError("plan_batches: batch_size and num_replicas must be at least 1")
    rng = np.random.default_rng([seed, epoch, 0xBA7C])
    step = batch_size * num_replicas
    blocks: list[list[list[int]]] = []
    for has_image in (True, False):
        idx = [i for i, s in enumerate(samples) if (s.image is not None) == has_image]
        if not idx:
            continue
        order = [idx[int(j)] for j in rng.permutation(len(idx))]
        if num_replicas > 1 and len(order) % step:
            order = [order[j % len(order)] for j in range(-(-len(order) // step) * step)]
        if group_by_length:
            window = step * mega
            order = [
                i
                for k in range(0, len(order), window)
                for i in sorted(order[k : k + window], key=lambda i: -samples[i].tokens)
            ]
        batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        blocks += [batches[k : k + num_replicas] for k in range(0, len(batches), num_replicas)]
    return [batch for j in rng.permutation(len(blocks)) for batch in blocks[int(j)]]
