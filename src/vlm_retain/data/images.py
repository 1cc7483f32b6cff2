"""Opening and verifying images with errors a user can act on.

Verification decodes the whole image (a truncated file often has a valid header), but JPEGs are
decoded in draft mode at 1/8 scale, which still reads every byte of entropy-coded data and so
still notices truncation, at a fraction of the cost. Decompression bombs (more pixels than
Pillow's limit) are refused before decoding, by :func:`open_image`, which every reader of source
images uses.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile

#: Pillow's own limit (about 89.5 megapixels); larger images are treated as decompression bombs.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")


class BadImage(Exception):
    """An image that cannot be used; ``str()`` is the short reason (used as a skip reason too)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What verification learns of a good image: its size goes into ``meta.width``/``height``
    (so later stages can batch by size without opening the file) and ``data check`` tests it
    against the processor's limits."""

    width: int
    height: int
    mode: str
    format: str | None


def open_image(path: Path | IO[bytes]) -> Image.Image:
    """Open ``path`` lazily (header only) with the pixel limit enforced; use it in ``with``.

    Every reader of source images goes through here, so an image over :data:`MAX_PIXELS` is
    refused the same way everywhere: Pillow only warns between the limit and twice the limit
    (and raises its own error above), and both become :class:`BadImage`. A missing file is
    ``BadImage("image missing")``, a file Pillow cannot identify ``unreadable image``. Errors
    while decoding later (``load``, ``convert``) are the caller's; :func:`broken_image` turns
    them into the same reasons.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise BadImage("image missing") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise broken_image(exc) from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise BadImage(f"decompression bomb ({width}x{height} pixels, limit {MAX_PIXELS})")
    return image


def broken_image(exc: BaseException) -> BadImage:
    """The :class:`BadImage` for an error Pillow raised on a broken file (it raises OSError,
    SyntaxError or ValueError): ``truncated image (...)`` or ``unreadable image (...)``."""
    detail = str(exc).split("\n")[0] or type(exc).__name__
    if "truncated" in detail.lower() or "broken data stream" in detail.lower():
        return BadImage(f"truncated image ({detail})")
    return BadImage(f"unreadable image ({detail})")


def probe_image(path: Path, *, decode: bool = True) -> ImageInfo:
    """Return size and mode of ``path``; raise :class:`BadImage` when missing, unreadable,
    truncated (with ``decode``) or over :data:`MAX_PIXELS`."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with open_image(path) as image:
        width, height = image.size
        info = ImageInfo(width, height, image.mode, image.format)
        if decode:
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise broken_image(exc) from None
    return info


def probe_many(
    paths: Iterable[Path],
    *,
    workers: int = 2,
    decode: bool = True,
    on_done: Callable[[], None] | None = None,
) -> Iterator[tuple[Path, ImageInfo | BadImage]]:
    """Probe images in parallel threads (decoders release the GIL), in input order."""

    def one(path: Path) -> tuple[Path, ImageInfo | BadImage]:
        try:
            result: ImageInfo | BadImage = probe_image(path, decode=decode)
        except BadImage as exc:
            result = exc
        if on_done is not None:
            on_done()
        return path, result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(one, paths, chunksize=64) if workers > 1 else map(one, paths)


def open_rgb(path: Path | IO[bytes]) -> Image.Image:
    """Open an image fully loaded and converted to RGB (what the models consume), with the
    same pixel limit as verification; raise :class:`BadImage` when it cannot be used."""
    with open_image(path) as image:
        try:
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise broken_image(exc) from None
