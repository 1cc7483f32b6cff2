"""A contact sheet: many small images in a labelled grid, for a human look at generated data.

Both generators write ``preview.png`` with it, so a reviewer sees at a glance whether lines are
legible, scripts render (Arabic joined, pre-reform letters present) and scenes look right,
without opening hundreds of files.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from vlm_retain.data.synthetic.fonts import font_by_name, load_font

_LABEL_HEIGHT = 16
_PAD = 6
_BACKGROUND = (255, 255, 255)
_LABEL_COLOUR = (90, 90, 90)


def contact_sheet(
    images: list[Image.Image], labels: list[str], *, columns: int, cell_width: int
) -> Image.Image:
    """Images in a grid of ``columns``, each scaled to ``cell_width`` wide, a label above each.

    Images keep their aspect ratio (narrower ones are not enlarged) so line heights stay
    comparable; each grid row is as tall as its tallest cell. Labels are drawn with a bundled
    font (Noto Sans), so the sheet looks the same on every machine.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if columns < 1 or cell_width < 1:
        raise ValueError("columns and cell_width must be positive")
    if not images:
        return Image.new("RGB", (cell_width + 2 * _PAD, _PAD * 2), _BACKGROUND)
    font = _label_font()
    cells = [_fit(image, cell_width) for image in images]
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    row_heights = [max(cell.height for cell in row) + _LABEL_HEIGHT + _PAD for row in rows]
    width = columns * (cell_width + _PAD) + _PAD
    sheet = Image.new("RGB", (width, sum(row_heights) + _PAD), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = _PAD
    for row_index, row in enumerate(rows):
        for col, cell in enumerate(row):
            x = _PAD + col * (cell_width + _PAD)
            label = labels[row_index * columns + col]
            draw.text((x, y), _clip(draw, label, font, cell_width), fill=_LABEL_COLOUR, font=font)
            sheet.paste(cell, (x, y + _LABEL_HEIGHT))
        y += row_heights[row_index]
    return sheet


def _fit(image: Image.Image, cell_width: int) -> Image.Image:
    image = image.convert("RGB")
    if image.width <= cell_width:
        return image
    height = max(1, round(image.height * cell_width / image.width))
    return image.resize((cell_width, height), Image.Resampling.LANCZOS)


def _label_font() -> ImageFont.FreeTypeFont:
    return load_font(font_by_name("Noto Sans").file, 11)


def _clip(draw: ImageDraw.ImageDraw, label: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """Shorten ``label`` with an ellipsis until it fits the cell (labels are hints, not data)."""
    if draw.textlength(label, font=font) <= width:
        return label
    while label and draw.textlength(label + "…", font=font) > width:
        label = label[:-1]
    return label + "…"
