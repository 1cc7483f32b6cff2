"""Retrieval galleries for generative models: a small, fixed set of images and their captions.

A generative VLM scores an (image, caption) pair by the caption's log-likelihood given the
image, so the full Karpathy test (1,000 x 5,000 pairs on Flickr30k, 5,000 x 25,000 on COCO)
costs millions of forward passes. The gallery is therefore a deterministic subset of the test
images (default 100) with *all* their captions (about 500), and Recall@K is computed on that
gallery: comparable between a base model and its fine-tunes, not with CLIP-style numbers on
the full split (docs/evaluation.md). The scoring itself is ``vlm_retain.evaluate.likelihood``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vlm_retain.data.benchmarks.items import EvalItem
from vlm_retain.data.benchmarks.subset import select

DEFAULT_GALLERY_IMAGES = 100


@dataclass(frozen=True)
class Gallery:
    """Images and the flat list of their captions, in the shape ``score_retrieval`` takes.

    ``text_image[j]`` is the index in ``images`` of the image that caption ``j`` describes;
    ``text_ids[j]`` is ``"<image id>#<k>"``.
    """

    images: list[EvalItem]
    texts: list[str]
    text_image: list[int]
    text_ids: list[str]

    @property
    def image_ids(self) -> list[str]:
        """The images' ids, in gallery order."""
        return [item.id for item in self.images]


def build_gallery(
    items: Sequence[EvalItem], n_images: int | None = DEFAULT_GALLERY_IMAGES, seed: int = 0
) -> Gallery:
    """The deterministic gallery of ``n_images`` images (all when None) with their captions;
    images without references are left out (they could never be retrieved)."""
    usable = [item for item in items if item.references]
    images = select(usable, n_images, seed)
    texts: list[str] = []
    text_image: list[int] = []
    text_ids: list[str] = []
    for index, item in enumerate(images):
        for k, caption in enumerate(item.references or []):
            texts.append(caption)
            text_image.append(index)
            text_ids.append(f"{item.id}#{k}")
    return Gallery(images=images, texts=texts, text_image=text_image, text_ids=text_ids)
