"""Each training sample encoded once: the collator's processor work reused from epoch 2 on.

Why: collating a batch (decoding each line image, resizing, normalising and cutting it into
patches, tokenising the chat) runs on the training process between steps. On the demo's CPU it
took 0.12 s of each 0.5 s step (a quarter); on a GPU it is time the accelerator waits. Line
datasets are small and trained for several epochs, and a sample encodes to the same tensors
every time, so the collator keeps each sample's tensors (:class:`SampleCache`) and builds a
batch from them: the rows of the sequence tensors right-padded to the batch's longest, the
image patches and grids concatenated in order, which is what the processor itself returns for
a batch, bit for bit (tested). Samples not yet cached are encoded together in one processor
call, as before, and split into rows.

Only the Qwen layouts (Qwen2-VL, Qwen2.5-VL, Qwen3-VL: one patch tensor with a ``(t, h, w)``
grid per image) are cached; other families, and any batch with a tensor this module does not
know how to split, are encoded whole every time. Memory is bounded by ``limit_mib``
(``train.sample_cache_mib``): once full, new samples are encoded but not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vlm_retain.models.registry import QWEN_LAYOUT_FAMILIES
from vlm_retain.train.batch_rows import qwen_images_per_row

#: Families whose processor returns per-image patch rows and grids that concatenate.
CACHEABLE_FAMILIES = QWEN_LAYOUT_FAMILIES
#: Per-image tensors: patch rows (counted by the grid) and one grid row per image.
_IMAGE_KEYS = ("pixel_values", "image_grid_thw")
#: What pads a sequence key other than ``input_ids`` (which takes the tokenizer's pad id).
_SEQUENCE_PAD = {"labels": -100}

Key = tuple[Any, ...]


class SampleCache:
    """Encoded samples by key; :meth:`batch` assembles a batch from them (encoding the
    missing ones with ``encode_many``)."""

    def __init__(self, pad_token_id: int, *, limit_mib: float) -> None:
        self.pad_token_id = pad_token_id
        self.limit_bytes = int(limit_mib * 2**20)
        self.entries: dict[Key, dict[str, Any]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def batch(
        self, keys: Sequence[Key], encode_many: Callable[[list[int]], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """The batch of ``keys``, or None when the encoder's output cannot be split (the
        caller then encodes the whole batch itself). ``encode_many(indices)`` encodes those
        positions of ``keys`` as one right-padded batch."""
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        fresh: dict[int, dict[str, Any]] = {}
        if missing:
            rows = split_rows(encode_many(missing))
            if rows is None:
                return None
            fresh = dict(zip(missing, rows, strict=True))
            for i, row in fresh.items():
                self._keep(keys[i], row)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return join_rows(
            [fresh[i] if i in fresh else self.entries[key] for i, key in enumerate(keys)],
            self.pad_token_id,
        )

    def _keep(self, key: Key, row: dict[str, Any]) -> None:
        size = sum(t.numel() * t.element_size() for t in row.values())
        if key not in self.entries and self.bytes + size <= self.limit_bytes:
            self.entries[key] = row
            self.bytes += size


def split_rows(batch: dict[str, Any]) -> list[dict[str, Any]] | None:
    """One dict per sample: sequence tensors cut to the row's real length (right padding),
    that sample's image patches and grid; None for a key this module does not know."""
    ids = batch["input_ids"]
    size, length = ids.shape
    mask = batch.get("attention_mask")
    if mask is None:
        return None
    grid = batch.get("image_grid_thw")
    patches = batch.get("pixel_values")
    if (grid is None) != (patches is None):
        return None
    for key, value in batch.items():
        if key in _IMAGE_KEYS:
            continue
        if getattr(value, "shape", None) != (size, length):
            return None  # something else (pixel_attention_mask, videos...): not ours to cut
    lengths = mask.sum(dim=1).tolist()
    if any(bool(mask[r, n:].any()) or not bool(mask[r, :n].all()) for r, n in enumerate(lengths)):
        return None  # not right-padded
    image_rows = _image_rows(ids, batch, grid, patches)
    if image_rows is None:
        return None
    rows = []
    for r, n in enumerate(lengths):
        row = {
            key: value[r : r + 1, :n].clone()
            for key, value in batch.items()
            if key not in _IMAGE_KEYS
        }
        row.update(image_rows[r])
        rows.append(row)
    return rows


def _image_rows(ids: Any, batch: dict[str, Any], grid: Any, patches: Any) -> list[dict] | None:
    """Each row's ``pixel_values`` and ``image_grid_thw`` (empty dict for a text-only row)."""
    if grid is None:
        return [{} for _ in range(ids.shape[0])]
    found = qwen_images_per_row(batch)
    if found is None:
        return None
    per_row, counts = found[0].tolist(), found[1].tolist()
    out, image_index, patch_start = [], 0, 0
    for n_images in per_row:
        if n_images == 0:
            out.append({})
            continue
        n_patches = sum(counts[image_index : image_index + n_images])
        out.append(
            {
                "pixel_values": patches[patch_start : patch_start + n_patches].clone(),
                "image_grid_thw": grid[image_index : image_index + n_images].clone(),
            }
        )
        image_index += n_images
        patch_start += n_patches
    return out


def join_rows(rows: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """A right-padded batch from per-sample dicts (the inverse of :func:`split_rows`)."""
    import torch

    length = max(row["input_ids"].shape[1] for row in rows)
    sequence_keys = [k for k in rows[0] if k not in _IMAGE_KEYS]
    batch: dict[str, Any] = {}
    for key in sequence_keys:
        first = rows[0][key]
        pad = pad_token_id if key == "input_ids" else _SEQUENCE_PAD.get(key, 0)
        out = torch.full((len(rows), length), pad, dtype=first.dtype)
        for r, row in enumerate(rows):
            value = row[key]
            out[r, : value.shape[1]] = value[0]
        batch[key] = out
    for key in _IMAGE_KEYS:
        parts = [row[key] for row in rows if key in row]
        if parts:
            batch[key] = torch.cat(parts)
    return batch
