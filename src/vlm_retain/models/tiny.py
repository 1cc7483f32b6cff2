"""Tiny random models of the real architectures, built offline, for tests and the demo.

Why: no real weights are reachable here (no hub, no wheel ships a VLM; env.md §9), yet tests and
the demo must run the same loading, encoding, generation and training code a 7B model goes
through. So :func:`build_tiny` makes a small model of the *real* class (Qwen2.5-VL, Qwen2-VL,
Qwen3-VL, Idefics3, PaliGemma, InternVL) with the local multilingual tokenizer, and saves it like
a hub folder (safetensors + processor), written atomically with a marker.

Sizes: ``"xs"`` is the smallest shape that exercises every code path (env.md §2, about 0.4 M
parameters); ``"s"`` is "model S" of demo-feasibility.md (text 128 x 2 layers, vision 64 x 2, init
std 0.1, which that probe found shortens the plateau before the image pathway is used); ``"m"``
is its "model M" (text 192 x 3, vision 96 x 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.fsutil import staged_output_dir, write_marker
from vlm_retain.models.registry import FAMILIES, get_family

TINY_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "idefics3", "paligemma", "internvl")


@dataclass(frozen=True)
class TinySize:
    """Shape of a tiny model; the same numbers are used across families where they apply."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_mlp: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int


SIZES: dict[str, TinySize] = {
    "xs": TinySize(64, 2, 4, 2, 128, 32, 2, 2, 64),
    "s": TinySize(128, 2, 4, 2, 256, 64, 2, 4, 128),
    "m": TinySize(192, 3, 4, 2, 384, 96, 2, 4, 192),
}


def _mrope(head_dim: int) -> list[int]:
    """mrope sections (temporal, height, width) summing to head_dim / 2, in Qwen's 2:1:1 ratio."""
    half = head_dim // 2
    return [half // 2, half // 4, half - half // 2 - half // 4]


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _qwen_text(sz: TinySize, tok: Any, init: float, **extra: Any) -> dict[str, Any]:
    pad, eos = _ids(tok, "<|endoftext|>", "<|im_end|>")
    head_dim = sz.text_hidden // sz.text_heads
    return dict(
        vocab_size=len(tok),
        hidden_size=sz.text_hidden,
        intermediate_size=sz.text_mlp,
        num_hidden_layers=sz.text_layers,
        num_attention_heads=sz.text_heads,
        num_key_value_heads=sz.text_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": _mrope(head_dim),
        },
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        initializer_range=init,
        **extra,
    )


def _qwen_special_ids(tok: Any) -> dict[str, int]:
    image, video, start, end = _ids(
        tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    )
    return dict(
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )


def _build_qwen2_5_vl(sz: TinySize, tok: Any, init: float) -> tuple[Any, Any, type]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=_qwen_text(sz, tok, init),
        vision_config=dict(
            depth=sz.vision_layers,
            hidden_size=sz.vision_hidden,
            intermediate_size=sz.vision_mlp,
            num_heads=sz.vision_heads,
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            out_hidden_size=sz.text_hidden,
            fullatt_block_indexes=[sz.vision_layers - 1],
            initializer_range=init,
        ),
        tie_word_embeddings=False,
        initializer_range=init,
        **_qwen_special_ids(tok),
    )
    ip = _qwen_image_processor(patch_size=14)
    return cfg, ip, Qwen2_5_VLForConditionalGeneration


def _qwen_image_processor(*, patch_size: int) -> Any:
    """The PIL-backend Qwen image processor: 2x2 merging, 1 to 64 merged units per image."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    unit = patch_size * 2
    return Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": unit * unit, "longest_edge": unit * unit * 64},
    )


def _build_qwen2_vl(sz: TinySize, tok: Any, init: float) -> tuple[Any, Any, type]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=_qwen_text(sz, tok, init),
        vision_config=dict(
            depth=sz.vision_layers,
            embed_dim=sz.vision_hidden,
            hidden_size=sz.text_hidden,
            mlp_ratio=2,
            num_heads=sz.vision_heads,
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=init,
        ),
        tie_word_embeddings=False,
        initializer_range=init,
        **_qwen_special_ids(tok),
    )
    ip = _qwen_image_processor(patch_size=14)
    return cfg, ip, Qwen2VLForConditionalGeneration


def _build_qwen3_vl(sz: TinySize, tok: Any, init: float) -> tuple[Any, Any, type]:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    head_dim = sz.text_hidden // sz.text_heads
    text = _qwen_text(sz, tok, init, head_dim=head_dim)
    text["rope_parameters"]["mrope_interleaved"] = True
    cfg = Qwen3VLConfig(
        text_config=text,
        vision_config=dict(
            depth=sz.vision_layers,
            hidden_size=sz.vision_hidden,
            intermediate_size=sz.vision_mlp,
            num_heads=sz.vision_heads,
            in_channels=3,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=sz.text_hidden,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0],
            initializer_range=init,
        ),
        tie_word_embeddings=False,
        initializer_range=init,
        **_qwen_special_ids(tok),
    )
    ip = _qwen_image_processor(patch_size=16)
    return cfg, ip, Qwen3VLForConditionalGeneration


def _build_idefics3(sz: TinySize, tok: Any, init: float) -> tuple[Any, Any, type]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    bos, eos, pad, image = _ids(
        tok, "<|im_start|>", "<end_of_utterance>", "<|endoftext|>", "<image>"
    )
    cfg = Idefics3Config(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tok),
            hidden_size=sz.text_hidden,
            intermediate_size=sz.text_mlp,
            num_hidden_layers=sz.text_layers,
            num_attention_heads=sz.text_heads,
            num_key_value_heads=sz.text_kv_heads,
            max_position_embeddings=4096,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
            initializer_range=init,
        ),
        vision_config=dict(
            hidden_size=sz.vision_hidden,
            intermediate_size=sz.vision_mlp,
            num_hidden_layers=sz.vision_layers,
            num_attention_heads=sz.vision_heads,
            image_size=64,
            patch_size=16,
            initializer_range=init,
        ),
        scale_factor=2,
        image_token_id=image,
        pad_token_id=pad,
        tie_word_embeddings=False,
        initializer_range=init,
    )
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 128}, max_image_size={"longest_edge": 64})
    return cfg, ip, Idefics3ForConditionalGeneration


def _build_paligemma(sz: TinySize, tok: Any, init: float) -> tuple[Any, Any, type]:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    bos, eos, pad, image = _ids(tok, "<bos>", "<eos>", "<pad>", "<image>")
    head_dim = sz.text_hidden // sz.text_heads
    cfg = PaliGemmaConfig(
        text_config=dict(
            model_type="gemma",
            vocab_size=len(tok),
            hidden_size=sz.text_hidden,
            intermediate_size=sz.text_mlp,
            num_hidden_layers=sz.text_layers,
            num_attention_heads=sz.text_heads,
            num_key_value_heads=sz.text_kv_heads,
            head_dim=head_dim,
            max_position_embeddings=4096,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
            initializer_range=init,
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=sz.vision_hidden,
            intermediate_size=sz.vision_mlp,
            num_hidden_layers=sz.vision_layers,
            num_attention_heads=sz.vision_heads,
            image_size=64,
            patch_size=16,
            projection_dim=sz.text_hidden,
            vision_use_head=False,
        ),
        projection_dim=sz.text_hidden,
        hidden_size=sz.text_hidden,
        vocab_size=len(tok),
        image_token_index=image,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
        initializer_range=init,
    )
    ip = SiglipImageProcessorPil(size={"height": 64, "width": 64})
    ip.image_seq_length = (64 // 16) ** 2
    return cfg, ip, PaliGemmaForConditionalGeneration


#: InternVL tiles: 64-px tiles of 8-px patches, pixel-shuffled by 0.5 -> 16 tokens per tile; a
#: wide line is cut into up to 6 tiles plus a thumbnail (real checkpoints: 448 px, 14, 1..12).
_INTERNVL_TILE, _INTERNVL_PATCH, _INTERNVL_MAX_TILES = 64, 8, 6


def _build_internvl(sz: TinySize, tok: Any, init: float) -> tuple[Any, Any, type]:
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    pad, eos, context = _ids(tok, "<|endoftext|>", "<|im_end|>", "<IMG_CONTEXT>")
    downsample = 0.5
    cfg = InternVLConfig(
        text_config=dict(  # InternVL3 = Qwen2.5 language model (InternVL3.5: qwen3)
            model_type="qwen2",
            vocab_size=len(tok),
            hidden_size=sz.text_hidden,
            intermediate_size=sz.text_mlp,
            num_hidden_layers=sz.text_layers,
            num_attention_heads=sz.text_heads,
            num_key_value_heads=sz.text_kv_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e4},
            bos_token_id=pad,
            eos_token_id=eos,
            pad_token_id=pad,
            initializer_range=init,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            hidden_size=sz.vision_hidden,
            intermediate_size=sz.vision_mlp,
            num_hidden_layers=sz.vision_layers,
            num_attention_heads=sz.vision_heads,
            image_size=_INTERNVL_TILE,
            patch_size=_INTERNVL_PATCH,
            initializer_range=init,
        ),
        image_token_id=context,
        image_seq_length=int((_INTERNVL_TILE // _INTERNVL_PATCH) ** 2 * downsample**2),
        downsample_ratio=downsample,
        tie_word_embeddings=False,
        initializer_range=init,
    )
    ip = GotOcr2ImageProcessorPil(
        size={"height": _INTERNVL_TILE, "width": _INTERNVL_TILE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=_INTERNVL_MAX_TILES,
    )
    return cfg, ip, InternVLForConditionalGeneration


_BUILDERS = {
    "qwen2_5_vl": _build_qwen2_5_vl,
    "qwen2_vl": _build_qwen2_vl,
    "qwen3_vl": _build_qwen3_vl,
    "idefics3": _build_idefics3,
    "paligemma": _build_paligemma,
    "internvl": _build_internvl,
}


def build_tiny_in_memory(
    family: str,
    *,
    seed: int = 0,
    size: str = "s",
    init_std: float = 0.1,
    vocab_size: int = 1000,
) -> tuple[Any, Any]:
    """Build ``(model, processor)`` without saving; see :func:`build_tiny`."""
    import torch

    from vlm_retain.models.processor import processor_class_for
    from vlm_retain.models.tokenizer import build_tokenizer

    if family not in _BUILDERS:
        raise InputError(
            f"no tiny recipe for family {family!r}",
            field="family",
            hint=f"use one of {', '.join(TINY_FAMILIES)}",
        )
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}", field="size", hint=f"use {', '.join(SIZES)}")
    fam = get_family(family)
    tok = build_tokenizer(family, vocab_size=vocab_size)
    # Placeholder config first: PaliGemma's processor adds its <loc>/<seg> tokens to the
    # tokenizer, so the processor is built before the vocabulary size is read.
    _cfg, ip, _cls = _BUILDERS[family](SIZES[size], tok, init_std)
    kwargs: dict[str, Any] = {"chat_template": tok.chat_template}
    if family == "idefics3":
        vis = _cfg.vision_config
        kwargs["image_seq_len"] = int(
            (vis.image_size // vis.patch_size) ** 2 / _cfg.scale_factor**2
        )
    if family == "internvl":
        kwargs["image_seq_length"] = _cfg.image_seq_length
    processor = processor_class_for(fam)(image_processor=ip, tokenizer=tok, **kwargs)
    cfg, _ip, model_cls = _BUILDERS[family](SIZES[size], processor.tokenizer, init_std)
    torch.manual_seed(seed)
    model = model_cls(cfg)
    model.eval()
    gen = model.generation_config
    stop = [processor.tokenizer.convert_tokens_to_ids(t) for t in fam.stop_tokens]
    gen.eos_token_id = stop[0] if len(stop) == 1 else stop
    gen.pad_token_id = processor.tokenizer.pad_token_id
    gen.do_sample = False
    return model, processor


def build_tiny(
    family: str,
    out: Path,
    *,
    seed: int = 0,
    size: str = "s",
    init_std: float = 0.1,
    vocab_size: int = 1000,
    overwrite: bool = False,
) -> Path:
    """Build a tiny random ``family`` model and save it to ``out`` (atomically); return ``out``.

    Deterministic for a seed: the same arguments give the same ``model.safetensors`` bytes.
    The folder loads back with :func:`vlm_retain.models.loading.load_model`.
    """
    from vlm_retain.models.processor import save_processor

    out = Path(out)
    model, processor = build_tiny_in_memory(
        family, seed=seed, size=size, init_std=init_std, vocab_size=vocab_size
    )
    with staged_output_dir(out, overwrite=overwrite) as stage:
        model.save_pretrained(str(stage), safe_serialization=True)
        save_processor(processor, stage, FAMILIES[family])
        n_params = sum(p.numel() for p in model.parameters())
        write_marker(
            stage,
            "tiny-model",
            family=family,
            size=size,
            seed=seed,
            init_std=init_std,
            vocab_size=len(processor.tokenizer),
            parameters=n_params,
        )
    return out


def tiny_info(folder: Path) -> dict[str, Any]:
    """The marker of a folder written by :func:`build_tiny` (empty dict when absent)."""
    marker = Path(folder) / ".vlm-retain.json"
    if not marker.is_file():
        return {}
    return json.loads(marker.read_text(encoding="utf-8"))
