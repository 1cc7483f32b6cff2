"""The generation interface every backend implements: requests in, results out.

Why one small interface: the eval runner, ``vlm-retain transcribe`` and the benchmarks must not
care whether text comes from transformers, vLLM or Tesseract. A backend takes a sequence of
:class:`Request` and yields one :class:`Result` per request, in whatever order is fastest for it
(the HF backend sorts by input length to waste less padding), each carrying its request's id so
callers can re-order. A broken image never raises: it becomes a result with ``error`` set, so a
long run is not lost to one bad file; callers count and report those.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlm_retain.data.images import BadImage, broken_image, open_rgb

#: What a request may hold as its image: a PIL image (decoded now or lazily opened), a path that
#: the backend opens only when its batch comes (so a 100k-line run never holds every image in
#: memory), or None for a text-only prompt where the family allows it.
ImageInput = Image.Image | Path | None


@dataclass(frozen=True)
class Request:
    """One thing to generate: an image and the prompt that goes with it."""

    id: str
    image: ImageInput
    prompt: str


@dataclass(frozen=True)
class Result:
    """What came out for one request. ``error`` is set (and ``text`` empty) when the request
    could not be run, e.g. an image that fails to decode; ``n_tokens`` counts the new tokens
    generated (the stop token included; 0 for backends that have no tokens, such as Tesseract)."""

    id: str
    text: str
    n_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


KV_CACHES = ("dynamic", "static")


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. The defaults are what evaluation should use: greedy, short, batched.

    ``do_sample``/``temperature``/``top_p``/``top_k`` exist so benchmarks can reproduce the
    current workflow's sampling; ``min_new_tokens`` forces a fixed output length so two ways of
    generating can be timed on the same amount of work. ``sort_by_length`` lets a backend reorder
    requests to reduce padding (results still carry their ids). ``kv_cache`` (HF backend):
    ``dynamic`` grows the key/value cache token by token; ``static`` preallocates it for the
    whole answer, which lets transformers compile the decoding step on CUDA (same tokens; the
    first batch of each new shape pays the compilation).
    """

    batch_size: int = 16
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_new_tokens: int = 0
    sort_by_length: bool = True
    kv_cache: str = "dynamic"

    def __post_init__(self) -> None:
        from vlm_retain.errors import InputError

        if self.kv_cache not in KV_CACHES:
            raise InputError(
                f"unknown kv_cache {self.kv_cache!r}", hint=f"use {' or '.join(KV_CACHES)}"
            )

        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {self.batch_size}")
        if self.max_new_tokens < 1:
            raise InputError(f"max new tokens must be at least 1, not {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InputError(
                f"min new tokens ({self.min_new_tokens}) must lie in [0, max new tokens]"
            )


class Backend(abc.ABC):
    """A way to turn requests into text. Subclasses set ``name`` and implement ``generate``."""

    name: str = "backend"

    @abc.abstractmethod
    def generate(self, requests: Sequence[Request]) -> Iterator[Result]:
        """Yield one :class:`Result` per request, in any order; never raise for one bad image."""

    def describe(self) -> dict[str, object]:
        """What produced the text, for the ``meta``/``model`` blocks of outputs."""
        return {"backend": self.name}


def load_image(image: ImageInput) -> Image.Image | None:
    """The request's image decoded and in RGB; :class:`BadImage` when it cannot be used.

    A lazily opened PIL image (``Image.open`` without ``load``) is decoded here, so a truncated
    file surfaces as a ``BadImage`` for that one request rather than an exception mid-batch.
    """
    if image is None:
        return None
    if isinstance(image, (str, Path)):
        return open_rgb(Path(image))
    try:
        if image.mode == "RGB":
            image.load()  # decodes a lazily opened file; a no-op for an image in memory
            return image
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise broken_image(exc) from None


def image_size(image: ImageInput) -> tuple[int, int] | None:
    """``(width, height)`` without decoding the pixels (header only); None when unknown."""
    if image is None:
        return None
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                return opened.size
        except (OSError, SyntaxError, ValueError):
            return None
    return image.size


def error_result(request: Request, exc: BaseException) -> Result:
    """The result of a request that could not run: the reason in one line."""
    if isinstance(exc, BadImage):
        reason = str(exc)
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return Result(id=request.id, text="", n_tokens=0, error=reason)


def batched(items: Sequence[Request], size: int) -> Iterator[list[Request]]:
    """Consecutive chunks of ``size`` requests (the last one shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
