"""Generation backends: turn (image, prompt) requests into text, the same way for every engine.

- :mod:`~vlm_retain.evaluate.generate.base`: ``Request``, ``Result``, ``GenerationConfig``,
  ``Backend``.
- :mod:`~vlm_retain.evaluate.generate.hf`: ``HFBackend``, batched greedy decoding (default).
- :mod:`~vlm_retain.evaluate.generate.vllm_backend`: ``VLLMBackend`` (optional ``vllm`` extra).
- :mod:`~vlm_retain.evaluate.generate.tesseract`: ``TesseractBackend``, a classical OCR baseline.
- :mod:`~vlm_retain.evaluate.generate.prompts`: ``DEFAULT_OCR_PROMPT``.
- :mod:`~vlm_retain.evaluate.generate.inputs` / ``resume``: what ``vlm-retain transcribe`` reads
  and how it writes resumably (reusable by the eval runner).

Importing this package is cheap: torch, transformers and vllm load only when a backend is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.evaluate.generate.base import Backend, GenerationConfig, Request, Result
from vlm_retain.evaluate.generate.prompts import DEFAULT_OCR_PROMPT

BACKENDS = ("hf", "vllm", "tesseract")

__all__ = [
    "BACKENDS",
    "DEFAULT_OCR_PROMPT",
    "Backend",
    "GenerationConfig",
    "Request",
    "Result",
    "make_backend",
]


def make_backend(
    name: str,
    *,
    model: Any = None,
    adapter: str | Path | None = None,
    lang: str | None = None,
    config: GenerationConfig | None = None,
    **options: Any,
) -> Backend:
    """Build backend ``name`` ("hf", "vllm" or "tesseract").

    ``model`` is a folder or cached hub id (or, for "hf", an already loaded
    :class:`~vlm_retain.models.loading.LoadedModel`); ``adapter`` a PEFT folder; ``lang`` the
    language for "tesseract" (ISO code). Extra ``options`` go to ``load_model`` for "hf"
    (``device``, ``dtype``, ``allow_pickle``...) and to ``vllm.LLM`` for "vllm".
    """
    config = config or GenerationConfig()
    if name == "tesseract":
        from vlm_retain.evaluate.generate.tesseract import TesseractBackend

        if lang is None:
            raise InputError(
                "the tesseract backend needs a language", hint="pass --lang ru|en|it|ar"
            )
        return TesseractBackend(lang, workers=options.pop("workers", None))
    if name not in ("hf", "vllm"):
        raise InputError(f"unknown backend {name!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if model is None:
        raise InputError(f"the {name} backend needs a model", hint="pass --model FOLDER_OR_HUB_ID")
    system = options.pop("system", None)
    if name == "vllm":
        from vlm_retain.evaluate.generate.vllm_backend import VLLMBackend

        return VLLMBackend(model, config, adapter=adapter, system=system, **options)
    from vlm_retain.evaluate.generate.hf import HFBackend
    from vlm_retain.models.loading import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        if adapter is not None:
            raise InputError("pass the adapter to load_model, not with an already loaded model")
        loaded = model
    else:
        loaded = load_model(model, adapter=adapter, **options)
    return HFBackend(loaded, config, system=system)
