"""Some rows of a model-input batch, images included, so a forward can skip the others.

Why: the KL teacher compares the trained model with the base only on the rows it selects
(``kl_to_base.scope: replay``: the replay samples, a quarter of a batch at ``replay_share``
0.25), yet a forward over the whole batch costs the same whatever it selects. Running the
reference on the selected rows alone cuts the teacher pass to their share.

Only layouts whose image-to-row mapping is certain are cut: text-only batches, and the Qwen
layout (``pixel_values`` as patch rows, one ``image_grid_thw`` row per image, image tokens marked
1 in ``mm_token_type_ids``; image ``i`` owns ``prod(grid[i])`` consecutive patch rows, and images
come in row order). Anything else (other families' per-tile pixel layouts, videos, packed
batches, whose rows are not samples) returns None and the caller runs the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Per-row image inputs of the Qwen layout that :func:`select_rows` knows how to cut.
_QWEN_IMAGE_KEYS = ("pixel_values", "image_grid_thw")


def select_rows(inputs: Mapping[str, Any], rows: Any) -> dict[str, Any] | None:
    """``inputs`` restricted to the True entries of ``rows`` (``(B,)`` bool), or None when the
    layout cannot be cut safely (see the module docstring)."""
    import torch

    ids = inputs.get("input_ids")
    if ids is None or ids.dim() != 2 or "position_ids" in inputs:
        return None
    batch = ids.shape[0]
    rows = rows.to(ids.device).bool()
    if rows.shape != (batch,):
        return None
    image_keys = {k for k in inputs if k.startswith(("pixel_", "image_", "video_"))}
    out: dict[str, Any] = {}
    if image_keys:
        if image_keys - set(_QWEN_IMAGE_KEYS) or "mm_token_type_ids" not in inputs:
            return None
        images = _qwen_images(inputs, rows)
        if images is None:
            return None
        out.update(images)
    for key, value in inputs.items():
        if key in out:
            continue
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch:
            out[key] = value[rows]
        elif isinstance(value, torch.Tensor):
            return None  # a tensor not laid out by rows: not ours to cut
        else:
            out[key] = value
    return out


def qwen_images_per_row(inputs: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """In a Qwen-layout batch: how many images each row holds (``(B,)``) and how many patch
    rows of ``pixel_values`` each image owns (``(n_images,)``, images in row order); None when
    that is not certain (no ``mm_token_type_ids``, videos, a grid or patch count that does not
    add up). A batch without images: zeros and an empty tensor."""
    import torch

    types = inputs.get("mm_token_type_ids")
    if types is None or bool((types == 2).any()):
        return None  # unknown layout, or videos
    grid = inputs.get("image_grid_thw")
    pixels = inputs.get("pixel_values")
    image = types == 1
    starts = image & ~torch.nn.functional.pad(image[:, :-1], (1, 0), value=False)
    per_row = starts.sum(dim=1)
    n_images = int(per_row.sum())
    if grid is None or pixels is None:
        return (per_row, torch.zeros(0, dtype=torch.long)) if n_images == 0 else None
    patches = grid.prod(dim=-1)
    if grid.shape[0] != n_images or int(patches.sum()) != pixels.shape[0]:
        return None
    return per_row, patches


def _qwen_images(inputs: Mapping[str, Any], rows: Any) -> dict[str, Any] | None:
    import torch

    counts = qwen_images_per_row(inputs)
    if counts is None:
        return None
    per_row, patches = counts
    grid, pixels = inputs.get("image_grid_thw"), inputs.get("pixel_values")
    if grid is None or pixels is None:
        return {}
    owner = torch.repeat_interleave(torch.arange(len(per_row), device=per_row.device), per_row)
    keep_image = rows.to(owner.device)[owner]
    if not bool(keep_image.any()):
        return {"pixel_values": None, "image_grid_thw": None}  # the kept rows are text only
    keep_patch = torch.repeat_interleave(keep_image.to(patches.device), patches)
    return {
        "pixel_values": pixels[keep_patch.to(pixels.device)],
        "image_grid_thw": grid[keep_image.to(grid.device)],
    }
