"""The bundled fonts, what each is for, and whether it can draw a given string.

A font that lacks a glyph makes the renderer fall back or draw a box ("tofu"), which would teach a
model wrong shapes and make references lie. Every string is therefore checked against the font's
character map before it is drawn with that font (:func:`covers`), and generators only pick among
fonts that cover the whole string.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fontTools.ttLib import TTFont
from PIL import ImageFont

FONT_DIR = Path(__file__).parent / "fonts"

#: Characters that need no glyph of their own (spaces are advanced, joiners only shape).
_NO_GLYPH_NEEDED = {" ", "\u200c", "\u200d"}


@dataclass(frozen=True)
class FontSpec:
    """One bundled font: its file, the scripts it serves, and its role in the generators.

    ``role`` is ``hand`` (handwriting-like), ``historical`` (book hands of the 17th-19th century)
    or ``print`` (clean modern type, for the printed-text reading task).
    """

    name: str
    file: str
    scripts: tuple[str, ...]
    role: str
    licence: str

    @property
    def path(self) -> Path:
        return FONT_DIR / self.file


FONTS: tuple[FontSpec, ...] = (
    FontSpec("Dancing Script", "DancingScript-Regular.otf", ("latin",), "hand", "OFL-1.1"),
    FontSpec("Kristi", "Kristi.ttf", ("latin",), "hand", "OFL-1.1"),
    FontSpec("Kaushan Script", "KaushanScript-Regular.otf", ("latin",), "hand", "OFL-1.1"),
    FontSpec("Comic Neue", "ComicNeue-Regular.otf", ("latin",), "hand", "OFL-1.1"),
    FontSpec(
        "Steve Hand",
        "SteveHand.ttf",
        ("latin", "cyrillic"),
        "hand",
        "GPL-2.0-or-later WITH Font-exception-2.0",
    ),
    FontSpec(
        "Old Standard", "OldStandard-Regular.ttf", ("latin", "cyrillic"), "historical", "OFL-1.0"
    ),
    FontSpec(
        "Old Standard Italic", "OldStandard-Italic.ttf", ("latin", "cyrillic"), "hand", "OFL-1.0"
    ),
    FontSpec("PT Serif", "PTF55F.ttf", ("latin", "cyrillic"), "historical", "ParaType-Free"),
    FontSpec("PT Serif Italic", "PTF56F.ttf", ("latin", "cyrillic"), "hand", "ParaType-Free"),
    FontSpec(
        "EB Garamond", "EBGaramond12-Regular.otf", ("latin", "cyrillic"), "historical", "OFL-1.1"
    ),
    FontSpec(
        "EB Garamond Italic", "EBGaramond12-Italic.otf", ("latin", "cyrillic"), "hand", "OFL-1.1"
    ),
    FontSpec("Amiri", "Amiri-Regular.ttf", ("arabic", "latin"), "historical", "OFL-1.1"),
    FontSpec("Amiri Slanted", "Amiri-Slanted.ttf", ("arabic", "latin"), "hand", "OFL-1.1"),
    FontSpec(
        "Scheherazade", "Scheherazade-Regular.ttf", ("arabic", "latin"), "historical", "OFL-1.1"
    ),
    FontSpec("Lateef", "Lateef-Regular.ttf", ("arabic", "latin"), "hand", "OFL-1.1"),
    FontSpec(
        "Noto Naskh Arabic", "NotoNaskhArabic-Regular.ttf", ("arabic",), "historical", "OFL-1.1"
    ),
    FontSpec("Noto Sans", "NotoSans-Regular.ttf", ("latin", "cyrillic"), "print", "OFL-1.1"),
    FontSpec("Noto Serif", "NotoSerif-Regular.ttf", ("latin", "cyrillic"), "print", "OFL-1.1"),
    FontSpec("Noto Sans Arabic", "NotoSansArabic-Regular.ttf", ("arabic",), "print", "OFL-1.1"),
)


def font_by_name(name: str) -> FontSpec:
    """Look a bundled font up by its ``name``."""
    for spec in FONTS:
        if spec.name == name:
            return spec
    raise KeyError(f"no bundled font named {name!r}")


def fonts_for(script: str, roles: tuple[str, ...] = ("hand", "historical")) -> list[FontSpec]:
    """Bundled fonts that serve ``script`` in one of ``roles``, in a fixed order."""
    return [spec for spec in FONTS if script in spec.scripts and spec.role in roles]


@cache
def codepoints(file: str) -> frozenset[int]:
    """Every code point the font's best character map draws (read once per font)."""
    with TTFont(FONT_DIR / file, lazy=True) as font:
        return frozenset(font.getBestCmap())


def missing_glyphs(spec: FontSpec, text: str) -> set[str]:
    """Characters of ``text`` (NFC) the font has no glyph for; empty means it can draw it."""
    table = codepoints(spec.file)
    return {
        char
        for char in unicodedata.normalize("NFC", text)
        if char not in _NO_GLYPH_NEEDED and ord(char) not in table
    }


def covers(spec: FontSpec, text: str) -> bool:
    """True when ``spec`` has a glyph for every character of ``text``."""
    return not missing_glyphs(spec, text)


@cache
def load_font(file: str, size: int) -> ImageFont.FreeTypeFont:
    """A Pillow font object for a bundled file at ``size`` pixels (cached per process)."""
    return ImageFont.truetype(str(FONT_DIR / file), size)
