"""The OCR prompt ``transcribe`` and the eval runner ask, defined once in
:mod:`vlm_retain.data.prompts` so training, export, transcription and evaluation agree."""

from __future__ import annotations

from vlm_retain.data.prompts import DEFAULT_OCR_PROMPT

__all__ = ["DEFAULT_OCR_PROMPT"]
