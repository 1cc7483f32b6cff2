"""One attention call per window size in the Qwen vision towers, instead of one per window.

Why: the Qwen2-VL / Qwen2.5-VL / Qwen3-VL vision towers attend within segments (each image,
and in Qwen2.5-VL each 112-px window of it) given by ``cu_seqlens``. Without flash-attn,
transformers runs those segments one by one: a batch of 16 line images makes about two thousand
tiny ``scaled_dot_product_attention`` calls per forward. On an H200 that loop made the frozen
tower take 0.076 s per 16 lines, a fifth of a LoRA step of the 7B shape and about half of a
batched generate call (benchmarks/results/gpu-h200-2026-11-28.json, ``probe/vision-forward``).

Line images share a size, so nearly every segment has one of a few lengths. This module
registers an attention function that stacks the segments of each length into one batch and
runs one call per distinct length: the same arithmetic per segment, no mask, nothing crosses a
segment boundary. It receives the segments through the tower's variable-length ("flash") call
path, which transformers takes for any attention implementation whose name contains
``flash`` (:func:`transformers.utils.generic.is_flash_attention_requested`): hence the
registered name.

Only the vision sub-config is switched (:func:`use_segment_attention`); the language model keeps
its own implementation. With flash-attn installed the loader picks ``flash_attention_2`` for
both, which needs none of this.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

#: The registered implementation name (contains ``flash`` to get the ``cu_seqlens`` call path).
SEGMENT_ATTENTION = "vlm_retain_segments_flash_varlen_sdpa"

_registered = False


def segment_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: Any = None,
    cu_seq_lens_k: Any = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Bidirectional attention within each ``cu_seq_lens_q`` segment, one SDPA call per length.

    ``query``/``key``/``value``: ``(1, heads, tokens, dim)``; returns ``(1, tokens, heads, dim)``
    (the layout transformers' attention functions return). Anything but the vision towers'
    call (a mask, causal attention, other key segments) goes to transformers' own SDPA.
    """
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    same_keys = cu_seq_lens_k is None or cu_seq_lens_k is cu_seq_lens_q
    if not same_keys:
        same_keys = torch.equal(cu_seq_lens_k, cu_seq_lens_q)
    if cu_seq_lens_q is None or attention_mask is not None or is_causal or not same_keys:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
            is_causal=is_causal, **kwargs,
        )  # fmt: skip
    if query.shape[0] != 1:
        raise ValueError(f"segment attention takes one packed row, got {query.shape[0]}")
    q, k, v = query[0], key[0], value[0]  # (heads, tokens, dim)
    bounds = cu_seq_lens_q.tolist()
    starts_by_length: dict[int, list[int]] = {}
    for start, end in pairwise(bounds):
        if end > start:
            starts_by_length.setdefault(end - start, []).append(start)
    out = torch.empty_like(q)
    for length, starts in starts_by_length.items():
        index = torch.tensor(starts, device=q.device)[:, None] + torch.arange(
            length, device=q.device
        )  # (segments, length)
        flat = index.reshape(-1)

        def stacked(t: Any, flat: Any = flat, shape: tuple[int, int] = index.shape) -> Any:
            return t.index_select(1, flat).unflatten(1, shape).transpose(0, 1)

        attended = F.scaled_dot_product_attention(
            stacked(q), stacked(k), stacked(v), dropout_p=dropout, scale=scaling
        )  # (segments, heads, length, dim)
        out.index_copy_(1, flat, attended.transpose(0, 1).flatten(1, 2))
    return out.transpose(0, 1).unsqueeze(0), None


def register() -> str:
    """Register :func:`segment_attention` with transformers (once); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
        _registered = True
    return SEGMENT_ATTENTION


def segmented_vision_configs(model: Any) -> list[Any]:
    """The configs of the vision attention modules that take ``cu_seqlens`` (the Qwen towers)."""
    configs: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is None or not hasattr(module, "qkv"):
            continue
        if "cu_seqlens" in inspect.signature(module.forward).parameters:
            configs[id(config)] = config
    return list(configs.values())


def use_segment_attention(model: Any) -> bool:
    """Switch the model's segment-wise vision attention from SDPA to :func:`segment_attention`.

    Only towers now on ``sdpa`` are switched (eager stays eager, flash stays flash). Returns
    whether any was. Undo with :func:`restore_attention` or use :func:`segment_attention_on`.
    """
    switched = False
    for config in segmented_vision_configs(model):
        if config._attn_implementation == "sdpa":
            config._attn_implementation = register()
            switched = True
    return switched


def restore_attention(model: Any) -> None:
    """Put the towers :func:`use_segment_attention` switched back on ``sdpa``."""
    for config in segmented_vision_configs(model):
        if config._attn_implementation == SEGMENT_ATTENTION:
            config._attn_implementation = "sdpa"


@contextmanager
def segment_attention_on(model: Any, on: bool = True) -> Iterator[bool]:
    """Within the block the tower uses :func:`segment_attention` (when ``on``); then as before."""
    switched = use_segment_attention(model) if on else False
    try:
        yield switched
    finally:
        if switched:
            restore_attention(model)
