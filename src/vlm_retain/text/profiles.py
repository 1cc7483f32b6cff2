"""Normalization profiles applied to both reference and prediction before OCR scoring.

A profile is a named, documented choice: published CER figures differ in whether case,
punctuation or dataset-specific letter variants count as errors, so a score is only comparable
when the profile is stated next to it. Every profile starts from :func:`clean_text` (NFC, strip,
collapse whitespace runs), so the same text stored composed or decomposed always scores 0.

This module is pure standard library (no numpy), so the CLI can list profiles cheaply.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Callable

from vlm_retain.errors import InputError
from vlm_retain.text.normalize import clean_text

#: The Digital Peter organisers' global label fixes (ai-forever/digital_peter_aij2020 @433d2f10,
#: fixes/checker_train.py): Latin c -> Cyrillic с, Cyrillic і (U+0456) -> Latin i, ҍ -> ѣ.
PETER_MAP = str.maketrans({"c": "с", "\u0456": "i", "ҍ": "ѣ"})

PROFILES: dict[str, str] = {
    "raw": "NFC, strip, whitespace runs -> one space; case and punctuation kept (default)",
    "casefold": "raw, then Unicode full case folding (str.casefold), then NFC again",
    "nopunct": (
        "raw, then every Unicode punctuation character (category P*) deleted and whitespace "
        "re-collapsed; symbols (S*: + = | × ⊕ $ ...) and letters such as ǂ are kept"
    ),
    "peter": (
        "raw (the Digital Peter scorer strips both sides, the fix script collapses whitespace), "
        "plus the organisers' fix-script maps: Latin c -> Cyrillic с, Cyrillic і (U+0456) -> "
        "Latin i, ҍ -> ѣ; case and punctuation kept"
    ),
}


@functools.cache
def _punctuation_table() -> dict[int, None]:
    """Deletion table for every code point in a Unicode punctuation category (P*).

    Built once on first use (about 0.2 s) so that removing punctuation is one C-level
    ``str.translate`` per line instead of a Python loop over characters.
    """
    return {
        code: None
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)).startswith("P")
    }


def _raw(text: str) -> str:
    return clean_text(text)


def _casefold(text: str) -> str:
    # Full case folding can decompose (U+01F0 -> j + caron), so NFC again afterwards.
    return clean_text(clean_text(text).casefold())


def _nopunct(text: str) -> str:
    # Deleting "a , b" leaves a double space: clean_text collapses it again.
    return clean_text(clean_text(text).translate(_punctuation_table()))


def _peter(text: str) -> str:
    # NFC first, so a decomposed ї (і + diaeresis) is composed and left alone; NFC again after,
    # since a mapped letter followed by a combining mark (і + acute -> i + acute) may compose.
    return clean_text(clean_text(text).translate(PETER_MAP))


_FUNCTIONS: dict[str, Callable[[str], str]] = {
    "raw": _raw,
    "casefold": _casefold,
    "nopunct": _nopunct,
    "peter": _peter,
}


def normalizer(profile: str) -> Callable[[str], str]:
    """The function of one profile, looked up once so scoring many lines skips the lookup.

    Raises :class:`InputError` naming the known profiles when ``profile`` is unknown.
    """
    try:
        return _FUNCTIONS[profile]
    except KeyError:
        known = ", ".join(PROFILES)
        raise InputError(
            f"unknown normalization profile {profile!r}",
            field="profile",
            hint=f"use one of: {known}",
        ) from None


def normalize(text: str, profile: str) -> str:
    """Return ``text`` as the profile ``profile`` scores it (see :data:`PROFILES`)."""
    return normalizer(profile)(text)
