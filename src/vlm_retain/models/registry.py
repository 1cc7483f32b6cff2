"""The family registry: what we need to know about each supported VLM architecture.

Why a registry instead of ``if "qwen" in name`` checks spread through the code: training,
evaluation and merging all need the same facts (which modules are the vision tower, which are
the language model, what LoRA may target, how a prompt is laid out, how images are sized, what
stops generation). Each family states them once here, and tests check them against the module
names of real (tiny) instances of the architecture, so they stay true as transformers moves.

This module imports nothing heavy (no torch, no transformers) so the CLI can list families and
report errors quickly.

Module names are the *in-memory* names of transformers 5.x (``model.language_model.layers.N``),
which are also what PEFT matches ``target_modules`` against. (On disk v5 writes the original hub
keys; that does not matter here.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError

#: The parameter groups every family splits into (see :func:`module_groups`).
COMPONENTS = ("vision", "projector", "embeddings", "llm", "lm_head")
#: The families with the Qwen input layout: ``pixel_values`` as patch rows with one
#: ``image_grid_thw`` row per image, image tokens marked in ``mm_token_type_ids``, multimodal
#: rotary positions from ``get_rope_index``, ``get_image_features`` on the inner model. The
#: vision cache, packing, the sample cache and caption scoring rely on it.
QWEN_LAYOUT_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@dataclass(frozen=True)
class ChatFormat:
    """How a prompt is laid out for a family (what the chat template renders).

    ``generation_prompt`` is what the template appends for ``add_generation_prompt=True``;
    ``end_of_turn`` ends the assistant's answer and is supervised with it; ``answer_prefix`` is
    text the template puts between the generation prompt and the answer (Idefics3: one space).
    ``uses_chat_template`` is False for PaliGemma, whose processor builds the sequence itself
    (image tokens + BOS + prompt + newline; the answer goes in ``suffix=``).
    """

    style: str
    image_placeholder: str
    generation_prompt: str
    end_of_turn: str
    default_system: str | None = None
    supports_system: bool = True
    answer_prefix: str = ""
    uses_chat_template: bool = True


@dataclass(frozen=True)
class ImageFacts:
    """How the family's image processor sizes images, and what that costs in tokens.

    ``unit`` is the side (px) of the square that becomes one language-model token
    (patch_size x merge_size; Qwen2/2.5-VL: 28, Qwen3-VL: 32). Dynamic-resolution families
    round both sides to multiples of ``unit`` and keep the pixel count within
    [``min_pixels``, ``max_pixels``]; fixed-size families resize to ``fixed_size``.
    """

    patch_size: int
    merge_size: int = 1
    dynamic: bool = True
    min_pixels: int | None = None
    max_pixels: int | None = None
    fixed_size: tuple[int, int] | None = None
    max_aspect_ratio: float | None = None
    notes: str = ""

    @property
    def unit(self) -> int:
        return self.patch_size * self.merge_size


@dataclass(frozen=True)
class Family:
    """Everything the toolkit needs to know about one VLM architecture.

    ``components`` maps each of :data:`COMPONENTS` to a regex (``re.match``, i.e. anchored at the
    start) over parameter and module names; they are tried in :data:`COMPONENTS` order, so
    ``embeddings`` is taken out before ``llm``. ``module_paths`` names the module that holds each
    component (for people and for freezing whole sub-modules). ``lora_targets`` maps a preset
    name to a regex that PEFT full-matches against module names: each matches only ``nn.Linear``
    modules of one component.
    """

    name: str
    title: str
    model_types: tuple[str, ...]
    model_class: str
    processor_class: str
    module_paths: Mapping[str, str]
    components: Mapping[str, str]
    lora_targets: Mapping[str, str]
    chat: ChatFormat
    image: ImageFacts
    stop_tokens: tuple[str, ...]
    needs_video_shim: bool = False
    tied_embeddings_default: bool = False
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def component_of(self, name: str) -> str | None:
        """The component a parameter or module name belongs to (None: none matched)."""
        for component in COMPONENTS:
            if re.match(self.components[component], name):
                return component
        return None

    def lora_regex(self, presets: str | Iterable[str]) -> str:
        """One PEFT ``target_modules`` regex for one or more presets (``"llm"``, ``"vision"``)."""
        names = [presets] if isinstance(presets, str) else list(presets)
        unknown = [n for n in names if n not in self.lora_targets]
        if unknown or not names:
            raise InputError(
                f"unknown LoRA target preset {', '.join(unknown) or '(none)'} for {self.name}",
                hint=f"use one or more of {', '.join(self.lora_targets)}",
            )
        parts = [self.lora_targets[n] for n in names]
        return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


_QWEN_LLM = r"model\.language_model\."
_QWEN_ATTN = r"model\.language_model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj"
_QWEN_MLP = r"model\.language_model\.layers\.\d+\.mlp\.(gate|up|down)_proj"
#: Where Qwen2-VL and Qwen2.5-VL keep their parts (same tree; Qwen3-VL adds deepstack mergers).
_QWEN2_MODULE_PATHS = {
    "vision": "model.visual",
    "projector": "model.visual.merger",
    "embeddings": "model.language_model.embed_tokens",
    "llm": "model.language_model",
    "lm_head": "lm_head",
}
_QWEN2_COMPONENTS = {
    "vision": r"model\.visual\.(?!merger\.)",
    "projector": r"model\.visual\.merger\.",
    "embeddings": r"model\.language_model\.embed_tokens\.",
    "llm": _QWEN_LLM,
    "lm_head": r"lm_head\.",
}
#: PaliGemma and InternVL keep their parts in the same places (vision_tower + projector + LM).
_TOWER_MODULE_PATHS = {
    "vision": "model.vision_tower",
    "projector": "model.multi_modal_projector",
    "embeddings": "model.language_model.embed_tokens",
    "llm": "model.language_model",
    "lm_head": "lm_head",
}
_TOWER_COMPONENTS = {
    "vision": r"model\.vision_tower\.",
    "projector": r"model\.multi_modal_projector\.",
    "embeddings": r"model\.language_model\.embed_tokens\.",
    "llm": r"model\.language_model\.",
    "lm_head": r"lm_head\.",
}
_QWEN_CHAT = ChatFormat(
    style="qwen",
    image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
    generation_prompt="<|im_start|>assistant\n",
    end_of_turn="<|im_end|>",
    default_system="You are a helpful assistant.",
)
_QWEN2_IMAGE = ImageFacts(
    patch_size=14,
    merge_size=2,
    min_pixels=56 * 56,
    max_pixels=28 * 28 * 1280,
    max_aspect_ratio=200,
    notes=(
        "smart_resize rounds height and width to multiples of 28 (a 64-px line becomes 56 px; "
        "pre-resize lines to multiples of 28), upscales below min_pixels, and refuses an aspect "
        "ratio >= 200; one LLM token per 28x28 px"
    ),
)


def _lm(prefix: str) -> dict[str, str]:
    """LoRA presets for a Llama-style language model under ``prefix`` (q/k/v/o, gate/up/down)."""
    attn = rf"{prefix}layers\.\d+\.self_attn\.(q|k|v|o)_proj"
    mlp = rf"{prefix}layers\.\d+\.mlp\.(gate|up|down)_proj"
    return {"llm": f"{attn}|{mlp}", "llm-attn": attn, "llm-mlp": mlp}


FAMILIES: dict[str, Family] = {
    "qwen2_5_vl": Family(
        name="qwen2_5_vl",
        title="Qwen2.5-VL",
        model_types=("qwen2_5_vl",),
        model_class="Qwen2_5_VLForConditionalGeneration",
        processor_class="Qwen2_5_VLProcessor",
        module_paths=_QWEN2_MODULE_PATHS,
        components=_QWEN2_COMPONENTS,
        lora_targets={
            **_lm(_QWEN_LLM),
            "vision": r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)",
            "projector": r"model\.visual\.merger\.mlp\.(0|2)",
        },
        chat=_QWEN_CHAT,
        image=_QWEN2_IMAGE,
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        needs_video_shim=True,
        notes="vision: window attention with full attention in fullatt_block_indexes; mrope",
    ),
    "qwen2_vl": Family(
        name="qwen2_vl",
        title="Qwen2-VL",
        model_types=("qwen2_vl",),
        model_class="Qwen2VLForConditionalGeneration",
        processor_class="Qwen2VLProcessor",
        module_paths=_QWEN2_MODULE_PATHS,
        components=_QWEN2_COMPONENTS,
        lora_targets={
            **_lm(_QWEN_LLM),
            "vision": r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))",
            "projector": r"model\.visual\.merger\.mlp\.(0|2)",
        },
        chat=_QWEN_CHAT,
        image=_QWEN2_IMAGE,
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        needs_video_shim=True,
    ),
    "qwen3_vl": Family(
        name="qwen3_vl",
        title="Qwen3-VL",
        model_types=("qwen3_vl",),
        model_class="Qwen3VLForConditionalGeneration",
        processor_class="Qwen3VLProcessor",
        module_paths={
            "vision": "model.visual",
            "projector": "model.visual.merger (+ model.visual.deepstack_merger_list)",
            "embeddings": "model.language_model.embed_tokens",
            "llm": "model.language_model",
            "lm_head": "lm_head",
        },
        components={
            "vision": r"model\.visual\.(?!(merger|deepstack_merger_list)\.)",
            "projector": r"model\.visual\.(merger|deepstack_merger_list)\.",
            "embeddings": r"model\.language_model\.embed_tokens\.",
            "llm": _QWEN_LLM,
            "lm_head": r"lm_head\.",
        },
        lora_targets={
            **_lm(_QWEN_LLM),
            "vision": r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2))",
            "projector": (r"model\.visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc(1|2)"),
        },
        chat=ChatFormat(
            style="qwen",
            image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
            generation_prompt="<|im_start|>assistant\n",
            end_of_turn="<|im_end|>",
            default_system=None,
        ),
        image=ImageFacts(
            patch_size=16,
            merge_size=2,
            min_pixels=64 * 64,
            max_pixels=32 * 32 * 1280,
            max_aspect_ratio=200,
            notes=(
                "patch 16: sides are rounded to multiples of 32 and one LLM token covers "
                "32x32 px; deepstack feeds vision features into early LLM layers"
            ),
        ),
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        needs_video_shim=True,
        notes="no default system prompt; interleaved mrope",
    ),
    "idefics3": Family(
        name="idefics3",
        title="Idefics3 / SmolVLM",
        model_types=("idefics3",),
        model_class="Idefics3ForConditionalGeneration",
        processor_class="Idefics3Processor",
        module_paths={
            "vision": "model.vision_model",
            "projector": "model.connector",
            "embeddings": "model.text_model.embed_tokens",
            "llm": "model.text_model",
            "lm_head": "lm_head",
        },
        components={
            "vision": r"model\.vision_model\.",
            "projector": r"model\.connector\.",
            "embeddings": r"model\.text_model\.embed_tokens\.",
            "llm": r"model\.text_model\.",
            "lm_head": r"lm_head\.",
        },
        lora_targets={
            **_lm(r"model\.text_model\."),
            "vision": (
                r"model\.vision_model\.encoder\.layers\.\d+\."
                r"(self_attn\.(q|k|v|out)_proj|mlp\.fc(1|2))"
            ),
            "projector": r"model\.connector\.modality_projection\.proj",
        },
        chat=ChatFormat(
            style="idefics3",
            image_placeholder="<image>",
            generation_prompt="Assistant:",
            end_of_turn="<end_of_utterance>",
            default_system=None,
            answer_prefix=" ",
        ),
        image=ImageFacts(
            patch_size=16,
            merge_size=4,
            dynamic=False,
            notes=(
                "the image is resized so its longest edge is size['longest_edge'], split into "
                "tiles of max_image_size['longest_edge'] (plus a global view); each tile costs "
                "image_seq_len tokens = (image_size/patch_size)^2 / scale_factor^2 "
                "(SmolVLM-256M: 64)"
            ),
        ),
        stop_tokens=("<end_of_utterance>",),
        notes=(
            "SmolVLM-256M/500M-Instruct are model_type idefics3; SmolVLM2 (model_type smolvlm) "
            "needs num2words and a video processor and is not supported"
        ),
    ),
    "paligemma": Family(
        name="paligemma",
        title="PaliGemma",
        model_types=("paligemma",),
        model_class="PaliGemmaForConditionalGeneration",
        processor_class="PaliGemmaProcessor",
        module_paths=_TOWER_MODULE_PATHS,
        components=_TOWER_COMPONENTS,
        lora_targets={
            **_lm(r"model\.language_model\."),
            "vision": (
                r"model\.vision_tower\.(vision_model\.)?encoder\.layers\.\d+\."
                r"(self_attn\.(q|k|v|out)_proj|mlp\.fc(1|2))"
            ),
            "projector": r"model\.multi_modal_projector\.linear",
        },
        chat=ChatFormat(
            style="paligemma",
            image_placeholder="<image>",
            generation_prompt="\n",
            end_of_turn="<eos>",
            default_system=None,
            supports_system=False,
            uses_chat_template=False,
        ),
        image=ImageFacts(
            patch_size=14,
            dynamic=False,
            fixed_size=(224, 224),
            notes=(
                "every image is resized to the fixed square (224/448/896) and costs "
                "image_seq_length tokens = (size/patch)^2 (224: 256); a text line is squashed"
            ),
        ),
        stop_tokens=("<eos>",),
        tied_embeddings_default=True,
        notes="lm_head is tied to embed_tokens, so its parameter is counted under embeddings",
    ),
    "internvl": Family(
        name="internvl",
        title="InternVL",
        model_types=("internvl",),
        model_class="InternVLForConditionalGeneration",
        processor_class="InternVLProcessor",
        module_paths=_TOWER_MODULE_PATHS,
        components=_TOWER_COMPONENTS,
        lora_targets={
            **_lm(r"model\.language_model\."),
            "vision": (
                r"model\.vision_tower\.encoder\.layer\.\d+\."
                r"(attention\.((q|k|v)_proj|projection_layer)|mlp\.fc(1|2))"
            ),
            "projector": r"model\.multi_modal_projector\.linear_(1|2)",
        },
        chat=ChatFormat(
            style="internvl",
            image_placeholder="<IMG_CONTEXT>\n",
            generation_prompt="<|im_start|>assistant\n",
            end_of_turn="<|im_end|>",
            default_system=None,
        ),
        image=ImageFacts(
            patch_size=14,
            merge_size=2,
            dynamic=False,
            fixed_size=(448, 448),
            notes=(
                "the image is resized to the grid of 448-px tiles (between min_patches and "
                "max_patches, default 1..12) whose aspect ratio is closest to the image's, plus "
                "a 448x448 thumbnail when there is more than one tile; each tile costs "
                "image_seq_length tokens = (448/14)^2 * downsample_ratio^2 = 256, plus <img> "
                "and </img> (a 56-px line is upscaled to 448 px high)"
            ),
        ),
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        needs_video_shim=True,
        notes=(
            "only the transformers-native checkpoints (model_type internvl, the OpenGVLab "
            "'-hf' repos); the original remote-code ones (internvl_chat) are not loaded. "
            "InternVL3-1B/2B tie lm_head to embed_tokens (counted under embeddings)"
        ),
    ),
}


#: Remote-code variants of supported architectures: the hint says which native one to use.
_NOT_NATIVE = {
    "internvl_chat": (
        "this is InternVL's original remote-code checkpoint; use its transformers-native "
        "conversion (the OpenGVLab '...-hf' repo, model_type internvl)"
    ),
}


def get_family(name: str) -> Family:
    """The family called ``name``; an :class:`InputError` listing the supported ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise InputError(
            f"unknown model family {name!r}", hint=f"supported: {', '.join(FAMILIES)}"
        ) from None


def supported_architectures() -> str:
    """One line naming every supported architecture and its config ``model_type``s."""
    return "; ".join(f"{f.title} ({', '.join(f.model_types)})" for f in FAMILIES.values())


def detect_family(config: Any) -> Family:
    """The family of a model ``config``: a transformers config, a dict, or a model folder.

    Matched on ``model_type``. An unknown one is an :class:`InputError` that lists the
    supported architectures (and names the folder when given one).
    """
    path: Path | None = None
    if isinstance(config, (str, Path)):
        path = Path(config)
        file = path / "config.json" if path.is_dir() else path
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("no config.json", path=path, hint="is this a model folder?") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable config.json ({exc})", path=path) from None
    if isinstance(config, Mapping):
        model_type = config.get("model_type")
        architectures = config.get("architectures") or []
    else:
        model_type = getattr(config, "model_type", None)
        architectures = getattr(config, "architectures", None) or []
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    what = model_type or (architectures[0] if architectures else "unknown")
    hint = f"supported: {supported_architectures()}"
    if model_type in _NOT_NATIVE:
        hint = f"{_NOT_NATIVE[model_type]}; {hint}"
    raise InputError(f"unsupported model architecture {what!r}", path=path, hint=hint)


def module_groups(model: Any, family: Family) -> dict[str, list[str]]:
    """Parameter names of ``model`` per component (:data:`COMPONENTS`, plus ``other``).

    Every parameter lands in exactly one group; ``other`` is empty for a supported model (the
    tests check this on every tiny model). Tied weights appear once (``named_parameters``
    de-duplicates), so a tied ``lm_head`` is counted under ``embeddings``. A PEFT-wrapped model
    works too: its ``base_model.model.`` prefix is stripped before matching.
    """
    groups: dict[str, list[str]] = {c: [] for c in (*COMPONENTS, "other")}
    for name, _param in model.named_parameters():
        groups[family.component_of(_strip_peft(name)) or "other"].append(name)
    return groups


def _strip_peft(name: str) -> str:
    return name.removeprefix("base_model.model.")
