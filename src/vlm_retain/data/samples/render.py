"""Render a text line to an image with whatever font covers it (sample data only)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/noto/NotoNaskhArabic-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSerif.ttf",
)


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for candidate in _CANDIDATES:
        if Path(candidate).is_file():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size=size)


def render_line(
    text: str, *, height: int = 56, mode: str = "L", padding: int = 8, rtl: bool = False
) -> Image.Image:
    """Dark text on a light background, ``height`` pixels high, width fitted to the text."""
    font = _font(max(8, int(height * 0.6)))
    kwargs: dict[str, str] = {}
    if rtl and features.check("raqm"):
        kwargs = {"direction": "rtl", "language": "ar"}
    probe = ImageDraw.Draw(Image.new(mode, (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text or " ", font=font, **kwargs)
    width = max(16, right - left + 2 * padding)
    background = 235 if mode == "L" else (238, 228, 205)
    ink = 30 if mode == "L" else (50, 35, 20)
    image = Image.new(mode, (width, height), background)
    draw = ImageDraw.Draw(image)
    draw.text(
        (padding - left, (height - (bottom - top)) // 2 - top), text, fill=ink, font=font, **kwargs
    )
    return image
