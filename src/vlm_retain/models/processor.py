"""Processors that work with and without torchvision, and one loader that always returns one.

Why the image-only subclasses: in transformers 5.x the Qwen2-VL, Qwen2.5-VL, Qwen3-VL and
InternVL processors always build a video processor, and the video processor needs torchvision.
Without it, ``AutoProcessor`` either raises or, for an unregistered custom class, silently
returns the bare tokenizer (env.md §1, pitfall 3). This project only feeds images, so the
subclasses below drop the ``video_processor`` argument; ``ProcessorMixin`` takes its
sub-processors from ``__init__``'s signature, so they load every folder the standard class
saves. They are used on both paths (with and without torchvision): the only thing torchvision
changes is the image processor *backend*.

Why PIL by default: the PIL and torchvision backends give pixel values that differ by about one
uint8 level (0.015 after normalisation; env.md pitfall 4). Training and evaluation must use the
same one, so :func:`load_processor` picks ``"pil"`` unless told otherwise, and
:func:`image_backend_of` reports which backend a processor actually uses.

Folders are saved with the *standard* processor class name (see :func:`save_processor`), so
they stay loadable by plain transformers (and vLLM) on a machine with torchvision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.models.registry import Family

BACKENDS = ("pil", "torchvision", "auto")

_SHIMS: dict[str, type] = {}


def torchvision_available() -> bool:
    """Whether torchvision imports (transformers' own check, so both agree)."""
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def _qwen_token_attrs(self: Any, tokenizer: Any) -> None:
    """The token attributes the Qwen processors set in ``__init__`` (copied, minus video)."""
    self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
    self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
    self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)


def _internvl_token_attrs(self: Any, tokenizer: Any) -> None:
    """The token attributes ``InternVLProcessor.__init__`` sets, read from the tokenizer's named
    special tokens; the defaults are those of the OpenGVLab -hf folders (for a tokenizer saved
    without ``extra_special_tokens``)."""
    import re

    def token(name: str, default: str) -> str:
        return getattr(tokenizer, name, None) or default

    self.start_image_token = token("start_image_token", "<img>")
    self.end_image_token = token("end_image_token", "</img>")
    self.image_token = token("context_image_token", "<IMG_CONTEXT>")
    self.video_token = token("video_token", "<video>")
    self.start_image_token_id = tokenizer.convert_tokens_to_ids(self.start_image_token)
    self.end_image_token_id = tokenizer.convert_tokens_to_ids(self.end_image_token)
    self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
    self.multimodal_pattern = re.compile(
        f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})"
    )


def _build_shims() -> dict[str, type]:
    """Create the image-only processor classes once (they import transformers)."""
    if _SHIMS:
        return _SHIMS
    from transformers import (
        InternVLProcessor,
        ProcessorMixin,
        Qwen2_5_VLProcessor,
        Qwen2VLProcessor,
        Qwen3VLProcessor,
    )

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2-VL processor without a video processor (no torchvision needed)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            _qwen_token_attrs(self, tokenizer)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL processor without a video processor (no torchvision needed)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            _qwen_token_attrs(self, tokenizer)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
        """Qwen3-VL processor without a video processor (no torchvision needed)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            _qwen_token_attrs(self, tokenizer)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.vision_start_token = getattr(tokenizer, "vision_bos_token", None) or (
                "<|vision_start|>"
            )
            self.vision_end_token = getattr(tokenizer, "vision_eos_token", None) or "<|vision_end|>"
            self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
            self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)

    class ImageOnlyInternVLProcessor(InternVLProcessor):
        """InternVL processor without a video processor (no torchvision needed).

        ``image_seq_length`` (tokens per 448-px tile) stays an ``__init__`` argument so it is
        saved to and read from ``processor_config.json`` like the standard class does.
        """

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            image_seq_length: int = 256,
            chat_template=None,
            **kwargs,
        ):
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.image_seq_length = image_seq_length
            _internvl_token_attrs(self, tokenizer)

    _SHIMS.update(
        {
            "Qwen2VLProcessor": ImageOnlyQwen2VLProcessor,
            "Qwen2_5_VLProcessor": ImageOnlyQwen2_5_VLProcessor,
            "Qwen3VLProcessor": ImageOnlyQwen3VLProcessor,
            "InternVLProcessor": ImageOnlyInternVLProcessor,
        }
    )
    return _SHIMS


def register_image_only_processors() -> None:
    """Make ``AutoProcessor`` return the image-only classes for the Qwen and InternVL configs.

    Only done when torchvision is missing: there the standard classes cannot be built at all, so
    nothing that worked before is replaced. With torchvision, ``AutoProcessor`` keeps its
    standard mapping (other code in the same process may want videos).
    """
    if torchvision_available():
        return
    from transformers import (
        AutoProcessor,
        InternVLConfig,
        Qwen2_5_VLConfig,
        Qwen2VLConfig,
        Qwen3VLConfig,
    )

    shims = _build_shims()
    AutoProcessor.register(Qwen2VLConfig, shims["Qwen2VLProcessor"], exist_ok=True)
    AutoProcessor.register(Qwen2_5_VLConfig, shims["Qwen2_5_VLProcessor"], exist_ok=True)
    AutoProcessor.register(Qwen3VLConfig, shims["Qwen3VLProcessor"], exist_ok=True)
    AutoProcessor.register(InternVLConfig, shims["InternVLProcessor"], exist_ok=True)


def processor_class_for(family: Family) -> type:
    """The class :func:`load_processor` builds for ``family`` (an image-only one where needed)."""
    if family.needs_video_shim:
        return _build_shims()[family.processor_class]
    import transformers

    return getattr(transformers, family.processor_class)


def image_backend_of(processor: Any) -> str:
    """``"pil"`` or ``"torchvision"``: which backend ``processor``'s image processor uses."""
    name = type(getattr(processor, "image_processor", processor)).__name__
    return "pil" if name.endswith("Pil") else "torchvision"


def resolve_backend(backend: str) -> str:
    """Turn ``"auto"`` into a concrete backend and refuse ``"torchvision"`` without torchvision."""
    if backend not in BACKENDS:
        raise InputError(f"unknown image backend {backend!r}", hint="use pil, torchvision or auto")
    if backend == "auto":
        return "torchvision" if torchvision_available() else "pil"
    if backend == "torchvision" and not torchvision_available():
        raise InputError(
            "image backend 'torchvision' requested but torchvision is not installed",
            hint="install the gpu extra (torchvision) or use the default PIL backend",
        )
    return backend


def load_processor(path: str | Path, family: Family, *, backend: str = "pil") -> Any:
    """Load the processor of the model folder ``path`` for ``family``.

    Always returns a real processor (a ``ProcessorMixin`` with an ``image_processor``), never the
    bare tokenizer; a folder without processor files is an :class:`InputError` naming it. The
    image processor backend is ``backend`` (default ``"pil"``; ``"auto"`` = torchvision when
    installed); check the result with :func:`image_backend_of`.
    """
    from transformers import ProcessorMixin

    backend = resolve_backend(backend)
    folder = Path(path)
    if folder.is_dir() and not any(
        (folder / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")
    ):
        raise InputError(
            "no processor files (processor_config.json or preprocessor_config.json)",
            path=folder,
            hint="save the model's processor beside its weights (processor.save_pretrained)",
        )
    cls = processor_class_for(family)
    try:
        processor = cls.from_pretrained(str(path), backend=backend, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the processor ({first})", path=path) from None
    if (
        not isinstance(processor, ProcessorMixin)
        or getattr(processor, "image_processor", None) is None
    ):
        raise InputError(
            f"expected a {family.processor_class}, got {type(processor).__name__}", path=path
        )
    return processor


#: The video processor each image-only class leaves out, written back into saved folders.
_VIDEO_PROCESSORS = {
    "Qwen2VLProcessor": "Qwen2VLVideoProcessor",
    "Qwen2_5_VLProcessor": "Qwen2VLVideoProcessor",
    "Qwen3VLProcessor": "Qwen3VLVideoProcessor",
    "InternVLProcessor": "InternVLVideoProcessor",
}
#: Image processor settings the matching video processor shares (sizes, patching, normalisation).
_VIDEO_KEYS = (
    "size",
    "patch_size",
    "merge_size",
    "temporal_patch_size",
    "image_mean",
    "image_std",
    "do_resize",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "do_convert_rgb",
    "resample",
)


def save_processor(processor: Any, out: Path, family: Family) -> None:
    """``processor.save_pretrained(out)`` under the family's *standard* processor class name.

    Why: a folder naming ``ImageOnlyQwen2_5_VLProcessor`` would make plain transformers return
    the tokenizer alone; with the standard name the folder is an ordinary model folder. For the
    image-only classes a ``video_processor`` entry (the image processor's sizes and
    normalisation) is added to ``processor_config.json``, since the standard class loads one
    where torchvision is installed (plain ``AutoProcessor``, vLLM) and fails without it.
    """
    processor.save_pretrained(str(out))
    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        file = Path(out) / name
        if not file.is_file():
            continue
        data = json.loads(file.read_text(encoding="utf-8"))
        changed = False
        if "processor_class" in data:
            data["processor_class"] = family.processor_class
            changed = True
        video = _VIDEO_PROCESSORS.get(family.processor_class) if family.needs_video_shim else None
        if name == "processor_config.json" and video and "video_processor" not in data:
            image = data.get("image_processor") or {}
            data["video_processor"] = {
                "video_processor_type": video,
                **{k: image[k] for k in _VIDEO_KEYS if k in image},
            }
            changed = True
        if changed:
            file.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
