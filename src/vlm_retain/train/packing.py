"""Padding-free training batches: the lines of a micro-batch packed end to end into few rows.

Why: a right-padded batch spends every layer's compute on pad tokens up to its longest sample.
Line-level samples differ in length (image width, prompt, answer), so a batch of ``B`` lines
padded to ``T`` wastes ``B * T - sum(lengths)`` token slots. Packing puts the lines one after
another in rows of about ``row_tokens`` tokens (next-fit, in batch order, so the images keep
their order and ``pixel_values`` / ``image_grid_thw`` are unchanged) and pads only the end of
each row to the longest row.

What keeps it exact: every line must see only itself. Qwen2/2.5/3-VL take ``position_ids`` of
shape ``(4, R, L)`` whose first row is the text position of each token; transformers finds the
line boundaries where that position restarts and, with no ``attention_mask``, builds a
block-diagonal causal mask (SDPA, eager) or variable-length sequences (flash attention; it
does so only for a batch of one row, so with flash attention the trainer packs each
micro-batch into a single row). The
other three rows are each line's own multimodal rotary positions, computed by the model's
``get_rope_index`` on the padded batch, so every token gets the position it had unpacked. A
row's tail padding starts a new text position 0: a sequence of its own that nothing reads.
transformers looks for packed lines only when no KV cache is in play, so a packed batch carries
``use_cache=False`` for every forward that receives it (the trained model and the KL
reference).

The batch contract changes in one place: rows are no longer samples. ``token_rows`` (``(R,
L)`` long) gives each cell's sample index, -1 for padding; ``source_ids`` and ``replay`` stay
per sample, and :func:`sample_of_cells` / :func:`per_cell` map between the two for the
per-source loss log and KL on replay samples. Labels at each line's first token are -100
(a prompt token), so no line is supervised to predict its neighbour's start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.models.registry import QWEN_LAYOUT_FAMILIES
from vlm_retain.models.unwrap import unwrap

#: Families whose forward reads packed ``(4, R, L)`` position ids as described above.
PACKABLE_FAMILIES = QWEN_LAYOUT_FAMILIES
DEFAULT_ROW_TOKENS = 4096


def rope_index_fn(model: Any) -> Any | None:
    """The inner model's ``get_rope_index`` under PEFT / DDP wrappers, or None."""
    inner = getattr(unwrap(model), "model", None)
    return getattr(inner, "get_rope_index", None)


class BatchPacker:
    """``packer(batch, loaded)``: a collated batch moved to the model's device and packed
    (:func:`pack_batch`); ``stats`` counts batches, samples, rows, and the cells of the padded
    batches against those computed (``train_summary.json``'s ``packing``)."""

    def __init__(self, rope_index: Any, *, row_tokens: int | None, pad_token_id: int) -> None:
        self.rope_index = rope_index
        self.row_tokens = row_tokens
        self.pad_token_id = pad_token_id
        counted = ("batches", "samples", "rows", "padded_cells", "packed_cells")
        self.stats = dict.fromkeys(counted, 0)

    def __call__(self, batch: dict[str, Any], loaded: Any) -> dict[str, Any]:
        from vlm_retain.models.loading import batch_to

        packed = pack_batch(
            batch_to(batch, loaded),
            self.rope_index,
            row_tokens=self.row_tokens,
            pad_token_id=self.pad_token_id,
        )
        self.stats["batches"] += 1
        self.stats["samples"] += int(batch["input_ids"].shape[0])
        self.stats["rows"] += int(packed["input_ids"].shape[0])
        self.stats["padded_cells"] += int(batch["input_ids"].numel())
        self.stats["packed_cells"] += int(packed["input_ids"].numel())
        return packed


def wants_packing(setting: str, model: Any, family: Any) -> bool:
    """``train.packing`` resolved: ``on`` needs a family listed in :data:`PACKABLE_FAMILIES`."""
    if setting == "off":
        return False
    supported = family.name in PACKABLE_FAMILIES and rope_index_fn(model) is not None
    if setting == "on" and not supported:
        raise InputError(
            f"packing is not supported for {family.title}",
            field="train.packing",
            hint="set train.packing: off",
        )
    return supported


def is_packed(batch: Mapping[str, Any]) -> bool:
    return "token_rows" in batch


def valid_cells(batch: Mapping[str, Any]) -> Any:
    """``(R, L)`` bool: the cells holding a real token (not padding)."""
    if is_packed(batch):
        return batch["token_rows"] >= 0
    return batch["attention_mask"].bool()


def count_tokens(batch: Mapping[str, Any]) -> int:
    """Real (non-pad) tokens in a batch, packed or not."""
    return int(valid_cells(batch).sum())


def sample_of_cells(batch: Mapping[str, Any], mask: Any) -> Any:
    """The sample index of each True cell of ``mask``, in row-major order."""
    if is_packed(batch):
        return batch["token_rows"].to(mask.device)[mask]
    return mask.nonzero()[:, 0]


def per_cell(batch: Mapping[str, Any], flags: Any) -> Any:
    """A per-sample bool tensor spread over the cells of the batch (``(R, L)``)."""
    flags = flags.bool()
    if not is_packed(batch):
        return flags.view(-1, 1)
    rows = batch["token_rows"].to(flags.device)
    return flags[rows.clamp(min=0)] & (rows >= 0)


def pack_batch(
    batch: Mapping[str, Any],
    rope_index: Any,
    *,
    row_tokens: int | None = DEFAULT_ROW_TOKENS,
    pad_token_id: int = 0,
) -> dict[str, Any]:
    """The right-padded ``batch`` (the collator's) as packed rows; see the module docstring.

    ``rope_index`` is the model's ``get_rope_index`` (:func:`rope_index_fn`); a row holds
    lines while their total stays within ``row_tokens`` (a longer line gets a row of its own;
    ``None``: one row for the whole batch, which flash attention needs, see the trainer).
    """
    import torch

    if is_packed(batch):
        return dict(batch)
    off = "set train.packing: off"
    if "position_ids" in batch:
        raise InputError("the batch already has position_ids", field="train.packing", hint=off)
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(dim=1).tolist()
    if any(not bool(mask[i, :n].all()) for i, n in enumerate(lengths)):
        raise InputError("packing needs right-padded batches", field="train.packing", hint=off)
    input_ids = batch["input_ids"]
    types = batch.get("mm_token_type_ids")
    if types is not None and bool((types == 2).any()):
        raise InputError("packing does not handle videos yet", field="train.packing", hint=off)
    if types is None:
        rope = mask.long().cumsum(-1).sub(1).clamp(min=0).unsqueeze(0).expand(3, -1, -1)
    else:
        rope, _ = rope_index(
            input_ids,
            mm_token_type_ids=types,
            image_grid_thw=batch.get("image_grid_thw"),
            video_grid_thw=batch.get("video_grid_thw"),
            attention_mask=batch["attention_mask"],
        )
    rows = _next_fit(lengths, row_tokens) if row_tokens else [list(range(len(lengths)))]
    width = max(sum(lengths[i] for i in row) for row in rows)
    device = input_ids.device
    out_ids = torch.full((len(rows), width), pad_token_id, dtype=input_ids.dtype, device=device)
    out_labels = torch.full_like(out_ids, -100)
    out_rows = torch.full_like(out_ids, -1)
    out_types = torch.zeros_like(out_ids, dtype=types.dtype) if types is not None else None
    positions = torch.zeros((4, len(rows), width), dtype=torch.long, device=device)
    labels = batch["labels"]
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            cells = slice(at, at + n)
            out_ids[r, cells] = input_ids[i, :n]
            out_labels[r, cells] = labels[i, :n]
            out_labels[r, at] = -100
            out_rows[r, cells] = i
            if out_types is not None:
                out_types[r, cells] = types[i, :n]
            positions[0, r, cells] = torch.arange(n, device=device)
            positions[1:, r, cells] = rope[:, i, :n].to(device)
            at += n
        tail = width - at
        if tail:
            positions[:, r, at:] = torch.arange(tail, device=device)
    packed = {
        k: v
        for k, v in batch.items()
        if k not in ("input_ids", "attention_mask", "labels", "mm_token_type_ids")
    }
    packed.update(input_ids=out_ids, labels=out_labels, position_ids=positions, token_rows=out_rows)
    packed["use_cache"] = False  # with a KV cache transformers does not look for packed lines
    if out_types is not None:
        packed["mm_token_type_ids"] = out_types
    return packed


def _next_fit(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """Consecutive samples per row while the row stays within ``row_tokens``."""
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if rows and used + n <= row_tokens:
            rows[-1].append(i)
            used += n
        else:
            rows.append([i])
            used = n
    return rows
