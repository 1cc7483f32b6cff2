"""Estimated input length of a request, to sort requests so each batch pads little.

Why estimate instead of encoding: encoding means decoding every image and running the processor,
which is most of the cost we are trying to save. The estimate needs only the image's size (read
from the file header) and the family's sizing rules; it only has to *order* requests well, not
count tokens exactly. The processor's own settings (a folder may change ``min_pixels`` or tile
sizes) take precedence over the family's published defaults.
"""

from __future__ import annotations

import math
from typing import Any

from vlm_retain.models.registry import Family


def _setting(image_processor: Any, *names: str) -> Any:
    """The first of ``names`` set on the image processor or in its ``size`` dict."""
    size = getattr(image_processor, "size", None)
    for name in names:
        value = getattr(image_processor, name, None)
        if value is None and size is not None:
            value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
        if value is not None:
            return value
    return None


def dynamic_tokens(
    width: int, height: int, unit: int, min_pixels: int | None, max_pixels: int | None
) -> int:
    """LLM tokens of a Qwen-style image: sides rounded to ``unit``, area clamped (smart_resize)."""
    h = max(unit, round(height / unit) * unit)
    w = max(unit, round(width / unit) * unit)
    if max_pixels and h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(unit, math.floor(height / beta / unit) * unit)
        w = max(unit, math.floor(width / beta / unit) * unit)
    elif min_pixels and h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / unit) * unit
        w = math.ceil(width * beta / unit) * unit
    return (h // unit) * (w // unit)


def tiled_tokens(width: int, height: int, longest: int, tile: int, per_tile: int) -> int:
    """LLM tokens of an Idefics3-style image: resized to a longest edge, cut into tiles, plus a
    global view when there is more than one tile."""
    scale = longest / max(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    tiles = math.ceil(w / tile) * math.ceil(h / tile)
    return per_tile * (tiles + 1 if tiles > 1 else 1)


def tile_grid(width: int, height: int, tile: int, min_tiles: int, max_tiles: int) -> int:
    """Tiles of an InternVL (GOT-OCR2 ``crop_to_patches``) image: the ``columns x rows`` grid,
    ``min_tiles <= columns * rows <= max_tiles``, whose aspect ratio is closest to the image's
    (ties go to more tiles while the image covers more than half of the grid's area)."""
    grids = sorted(
        (
            (c, r)
            for c in range(1, max_tiles + 1)
            for r in range(1, max_tiles + 1)
            if min_tiles <= c * r <= max_tiles
        ),
        key=lambda g: g[0] * g[1],
    )
    ratio, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(ratio - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best[0] * best[1]


def internvl_tokens(
    width: int,
    height: int,
    *,
    tile: int,
    per_tile: int,
    min_tiles: int = 1,
    max_tiles: int = 12,
    crop: bool = True,
) -> int:
    """LLM tokens of an InternVL image: ``per_tile`` per tile (plus a thumbnail tile when the
    grid has more than one), plus the ``<img>`` and ``</img>`` tokens around them."""
    tiles = 1
    if crop and max_tiles > 1:
        grid = tile_grid(width, height, tile, min_tiles, max_tiles)
        tiles = grid + 1 if grid > 1 else 1
    return per_tile * tiles + 2


def image_tokens(family: Family, processor: Any, size: tuple[int, int] | None) -> int:
    """Estimated LLM tokens for an image of ``size`` (0 for no image or an unknown size)."""
    if size is None:
        return 0
    width, height = size
    facts = family.image
    image_processor = getattr(processor, "image_processor", None)
    if facts.dynamic:
        patch = _setting(image_processor, "patch_size") or facts.patch_size
        merge = _setting(image_processor, "merge_size") or facts.merge_size
        low = _setting(image_processor, "min_pixels", "shortest_edge") or facts.min_pixels
        high = _setting(image_processor, "max_pixels", "longest_edge") or facts.max_pixels
        return dynamic_tokens(width, height, patch * merge, low, high)
    if family.chat.style == "idefics3":
        longest = _setting(image_processor, "longest_edge") or 512
        max_size = getattr(image_processor, "max_image_size", None) or {}
        tile = max_size.get("longest_edge", longest) if isinstance(max_size, dict) else longest
        per_tile = getattr(processor, "image_seq_len", None) or 64
        if getattr(image_processor, "do_image_splitting", True) is False:
            return per_tile
        return tiled_tokens(width, height, longest, tile, per_tile)
    if family.chat.style == "internvl":
        side = (facts.fixed_size or (448, 448))[0]
        default_per_tile = (side // facts.patch_size) ** 2 // facts.merge_size**2
        # the processor's own default (crop_to_patches=True) overrides the image processor's
        crop = (getattr(processor, "images_kwargs", None) or {}).get(
            "crop_to_patches", getattr(image_processor, "crop_to_patches", True)
        )
        return internvl_tokens(
            width,
            height,
            tile=_setting(image_processor, "height") or side,
            per_tile=getattr(processor, "image_seq_length", None) or default_per_tile,
            min_tiles=getattr(image_processor, "min_patches", None) or 1,
            max_tiles=getattr(image_processor, "max_patches", None) or 12,
            crop=bool(crop),
        )
    # fixed-size families (PaliGemma): every image costs the same
    return getattr(processor, "image_seq_length", None) or 256
