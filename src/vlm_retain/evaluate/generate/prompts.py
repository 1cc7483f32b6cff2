"""Default prompts, in one place so ``transcribe`` and the eval runner ask the same question.

Why this wording: OCR scores compare characters, so the model is asked for exactly the characters
it sees, in the original spelling (pre-reform letters, abbreviations, diacritics kept), with no
normalization or modernisation and nothing but the text (no quotes, no commentary), which a
chat model otherwise adds and the metric counts as errors.
"""

from __future__ import annotations

DEFAULT_OCR_PROMPT = (
    "You are an expert transcriber of historical handwriting. Transcribe the text in this image "
    "exactly as written, character for character: keep the original spelling, letters, "
    "abbreviations, punctuation and diacritics; do not normalize, modernize, correct or "
    "translate anything. Output only the transcribed text as plain text, with no explanations."
)
