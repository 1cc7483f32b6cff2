"""The one text cleaning every manifest gets: NFC, strip, collapse whitespace runs.

NFC matters because the same letter can be stored composed or decomposed (``ё`` vs ``е`` +
combining diaeresis); edit distances between the two forms are large although the text is the
same. Case and punctuation are kept: they are part of what a model must read.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE_RUN = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Return ``text`` NFC-normalized, stripped, with each whitespace run made one space."""
    return _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", text)).strip()


def is_nfc(text: str) -> bool:
    """True when ``text`` is already in Unicode normalization form C."""
    return unicodedata.is_normalized("NFC", text)
