"""Reuse the frozen vision tower's outputs: each training image is encoded once per run.

Why: line images repeat every epoch, and with LoRA on the language model (or a selective preset
without ``+vision`` / ``+projector``) nothing in the vision tower changes, so its output for an
image is the same every time it is seen. On the Qwen2.5-VL-7B shape the frozen vision forward is
about 21 % of a LoRA step (research/gpu-anchors.md).

The hook is the Qwen models' ``model.model.get_image_features(pixel_values, image_grid_thw)``
(Qwen2-VL, Qwen2.5-VL, Qwen3-VL; in Qwen3-VL videos pass through it too), which runs
``model.model.visual`` on all images of a batch and returns ``pooler_output`` (the merged
embeddings fed to the LLM) split per image, plus Qwen3-VL's ``deepstack_features`` split the same
way. Image ``i`` owns ``t*h*w`` consecutive rows of ``pixel_values`` and ``t*h*w / merge**2``
output rows, in order, and the tower attends only within an image, so each image's output is
cached under a content key (a BLAKE2 hash of its pixel rows, its grid, dtype and the autocast
state); the misses of a batch are encoded in one call under ``no_grad`` and the outputs are
assembled in order. With a frozen tower nothing upstream of these embeddings needs a gradient,
so the LLM's loss and gradients are those of the plain path (tests check this exactly on CPU).

Memory is bounded by an LRU limit in MiB (entries stay on the model's device). The cache is used
only while no vision or projector parameter requires a gradient (checked at every call); a call
with extra vision arguments (``output_attentions`` and the like) takes the plain path.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from vlm_retain.models.registry import QWEN_LAYOUT_FAMILIES
from vlm_retain.models.unwrap import unwrap

#: Families whose inner model exposes ``get_image_features`` as described above.
CACHEABLE_FAMILIES = QWEN_LAYOUT_FAMILIES
DEFAULT_LIMIT_MIB = 2048
_UNSET = (None, False)


def _inner(model: Any) -> Any | None:
    """The module whose ``get_image_features`` the forward calls (``model.model``)."""
    base = unwrap(model)
    inner = getattr(base, "model", None)
    if inner is not None and hasattr(inner, "get_image_features") and hasattr(inner, "visual"):
        return inner
    return None


def vision_params(model: Any, family: Any) -> list[Any]:
    """Every vision-tower and projector parameter (the projector is inside the tower here)."""
    from vlm_retain.models.registry import module_groups

    groups = module_groups(model, family)
    wanted = set(groups.get("vision", [])) | set(groups.get("projector", []))
    return [p for n, p in model.named_parameters() if n in wanted]


def vision_frozen(model: Any, family: Any) -> bool:
    """True when no vision or projector parameter requires a gradient."""
    params = vision_params(model, family)
    return bool(params) and not any(p.requires_grad for p in params)


def wants_cache(setting: str, model: Any, family: Any) -> bool:
    """``train.vision_cache`` resolved: auto = on for a Qwen family with a frozen tower.

    ``on`` with a training tower or an unsupported family is an error (it cannot be honoured).
    """
    from vlm_retain.errors import InputError

    if setting == "off":
        return False
    supported = family.name in CACHEABLE_FAMILIES and _inner(model) is not None
    frozen = vision_frozen(model, family)
    if setting == "auto":
        return supported and frozen
    if not supported:
        raise InputError(
            f"train.vision_cache: on is not supported for {family.title}",
            field="train.vision_cache",
            hint="use auto or off",
        )
    if not frozen:
        raise InputError(
            "train.vision_cache: on needs a frozen vision tower and projector, but the tuning "
            "trains them",
            field="train.vision_cache",
            hint="use auto or off",
        )
    return True


class VisionCache:
    """Per-image outputs of a frozen vision tower, LRU-bounded; see the module docstring.

    ``install(model)`` wraps that model's image-feature path (call it again to share the cache
    with a frozen copy of the same tower, e.g. the KL reference); ``remove()`` undoes it.
    ``hits`` / ``misses`` count images.
    """

    def __init__(self, limit_mib: float = DEFAULT_LIMIT_MIB) -> None:
        self.limit_bytes = int(limit_mib * 2**20)
        self.entries: OrderedDict[bytes, tuple[Any, list[Any]]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._installed: list[tuple[Any, Callable[..., Any]]] = []

    # -- wiring --------------------------------------------------------------------------------

    def install(self, model: Any) -> VisionCache:
        inner = _inner(model)
        if inner is None:
            raise ValueError("this model has no get_image_features/visual to cache")
        original = inner.get_image_features  # the bound class method
        tower = [p for p in inner.visual.parameters()]

        def get_image_features(pixel_values: Any, image_grid_thw: Any = None, **kwargs: Any):
            return self._features(inner, original, tower, pixel_values, image_grid_thw, kwargs)

        inner.get_image_features = get_image_features
        self._installed.append((inner, original))
        return self

    def remove(self) -> None:
        for inner, _ in self._installed:
            inner.__dict__.pop("get_image_features", None)
        self._installed.clear()

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    # -- the cached path -----------------------------------------------------------------------

    def _features(
        self,
        inner: Any,
        original: Callable[..., Any],
        tower: list[Any],
        pixel_values: Any,
        grid: Any,
        kwargs: dict[str, Any],
    ) -> Any:
        import torch

        extra = [
            k for k, v in kwargs.items() if k != "return_dict" and not any(v is u for u in _UNSET)
        ]
        if (
            grid is None
            or extra
            or any(p.requires_grad for p in tower)
            or (pixel_values.requires_grad and torch.is_grad_enabled())
        ):
            return original(pixel_values, grid, **kwargs)
        rows = grid.prod(-1).tolist()
        chunks = torch.split(pixel_values, rows)
        tag = _state_tag(pixel_values, inner.visual.dtype)
        keys = [_key(c, g, tag) for c, g in zip(chunks, grid.tolist(), strict=True)]
        out = None
        found: dict[bytes, tuple[Any, list[Any]]] = {}
        missing: list[int] = []
        pending: set[bytes] = set()
        for i, key in enumerate(keys):
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                found[key] = entry
                self.hits += 1
            elif key not in pending:  # a repeat within the batch is encoded once
                pending.add(key)
                missing.append(i)
        if missing:
            with torch.no_grad():
                out = original(
                    torch.cat([chunks[i] for i in missing]),
                    grid[missing],
                    return_dict=True,
                )
            deep = getattr(out, "deepstack_features", None)
            for n, i in enumerate(missing):
                pooled = out.pooler_output[n].detach()
                layers = [f[n].detach() for f in deep] if deep is not None else []
                found[keys[i]] = (pooled, layers)
                self._store(keys[i], pooled, layers)
                self.misses += 1
        result = _output_like(out, inner, found, keys)
        return result if kwargs.get("return_dict", True) else result.to_tuple()

    def _store(self, key: bytes, pooled: Any, layers: list[Any]) -> None:
        size = sum(t.numel() * t.element_size() for t in [pooled, *layers])
        if size > self.limit_bytes:
            return
        self.entries[key] = (pooled, layers)
        self.bytes += size
        while self.bytes > self.limit_bytes and self.entries:
            _, (p, ls) = self.entries.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in [p, *ls])


def _state_tag(pixel_values: Any, dtype: Any) -> bytes:
    """What else changes the tower's output: input/weight dtype, device, autocast."""
    import torch

    device = pixel_values.device.type
    auto = torch.is_autocast_enabled(device) if device in ("cuda", "cpu") else False
    auto_dtype = torch.get_autocast_dtype(device) if auto else None
    return f"{pixel_values.dtype}|{dtype}|{pixel_values.device}|{auto}|{auto_dtype}".encode()


def _key(chunk: Any, grid: list[int], tag: bytes) -> bytes:
    import torch

    h = hashlib.blake2b(digest_size=20)
    h.update(tag)
    h.update(repr(tuple(grid)).encode())
    h.update(chunk.detach().contiguous().cpu().view(-1).view(dtype=torch.uint8).numpy())
    return h.digest()


def _output_like(out: Any, inner: Any, found: dict[bytes, Any], keys: list[bytes]) -> Any:
    """A ``BaseModelOutputWithPooling`` (or Qwen3-VL's deepstack variant) in image order."""
    pooled = tuple(found[k][0] for k in keys)
    layers = [found[k][1] for k in keys]
    if out is None:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        out_cls: Any = BaseModelOutputWithPooling
        if layers and layers[0]:
            out_cls = _deepstack_class(inner)
        out = out_cls()
    out.last_hidden_state = None  # per-patch states are not cached; nothing downstream uses them
    out.pooler_output = pooled
    if layers and layers[0]:
        out.deepstack_features = [tuple(ls[j] for ls in layers) for j in range(len(layers[0]))]
    return out


def _deepstack_class(inner: Any) -> Any:
    import sys

    module = sys.modules[type(inner).__module__]
    return module.BaseModelOutputWithDeepstackFeatures
