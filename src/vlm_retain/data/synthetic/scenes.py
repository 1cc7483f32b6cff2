"""The synthetic world's scenes: what is in a picture, where, and how it is drawn.

A :class:`Scene` is the single source of truth for everything said about an image: the VQA
answers, the captions and the sign's text are all derived from it (in ``world.py``) and it is
saved beside the images (``scenes.json``) so tests and users can check any answer against it.

Design choices, all in favour of clarity over difficulty, because a tiny from-scratch model must
learn these skills before it is taught to read manuscripts (research/demo-feasibility.md):

- shapes are large relative to Qwen's 28-px merged patch grid (small ones are about a quarter of
  the image side, large ones about two fifths), never overlap, and keep a gap between them;
- five kinds with distinct silhouettes (circle, square, triangle, star, cross) and six saturated
  colours with distinct names, on light backgrounds (plain, gradient or lightly textured) whose
  names share no word with a shape colour, so captions stay unambiguous;
- edges are anti-aliased by drawing each shape's mask at 4x and box-averaging it down, which is
  exact integer arithmetic in Pillow and therefore byte-for-byte reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlm_retain.data.synthetic.fonts import font_by_name, load_font

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
}
#: Saturated colours that stay distinct from each other and from every light background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (212, 38, 38),
    "orange": (240, 128, 0),
    "yellow": (226, 182, 0),
    "green": (40, 150, 60),
    "blue": (36, 76, 212),
    "purple": (126, 50, 174),
}
#: Side of a shape's box as a fraction of the scene unit (the plain image side).
SIZES: dict[str, tuple[float, float]] = {"small": (0.24, 0.29), "large": (0.37, 0.43)}
#: Light background colours; no name contains a shape colour word (captions name them).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "light gray": (222, 222, 222),
    "cream": (250, 243, 220),
    "beige": (234, 224, 200),
    "pale pink": (250, 228, 232),
    "mint": (222, 244, 232),
}
STYLES: tuple[str, ...] = ("plain", "gradient", "textured")
#: Sign colour schemes (fill, ink, border): high contrast and neutral (no shape colour), so a
#: sign is never mistaken for a coloured shape.
SIGN_SCHEMES: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((255, 255, 255), (20, 20, 20), (70, 70, 70)),
    ((252, 246, 225), (25, 35, 80), (90, 80, 60)),
    ((46, 56, 66), (255, 255, 255), (20, 25, 30)),
    ((40, 40, 40), (250, 250, 250), (10, 10, 10)),
)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    """One shape: its kind, colour name, size class and box ``(x0, y0, x1, y1)`` (x1, y1
    exclusive) in image pixels; ``rgb`` is the jittered colour actually drawn."""

    kind: str
    color: str
    size: str
    box: tuple[int, int, int, int]
    rgb: tuple[int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass(frozen=True)
class Background:
    """``style`` plain, gradient or textured; ``name`` the main colour, ``second`` the other end
    of a gradient; ``direction`` of a gradient: horizontal, vertical or diagonal."""

    style: str
    name: str
    second: str | None = None
    direction: str | None = None


@dataclass(frozen=True)
class Sign:
    """A printed sign: the exact text, its language, the bundled font and pixel size used, the
    sign's box in image pixels and its colours. ``position`` is ``top`` or ``bottom``."""

    text: str
    lang: str
    font: str
    font_size: int
    box: tuple[int, int, int, int]
    position: str
    fill: tuple[int, int, int]
    ink: tuple[int, int, int]
    border: tuple[int, int, int]

    @property
    def rtl(self) -> bool:
        return self.lang == "ar"


@dataclass(frozen=True)
class Scene:
    """Everything in one picture. ``width``/``height`` are the image size in pixels."""

    width: int
    height: int
    background: Background
    shapes: tuple[Shape, ...]
    sign: Sign | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists), the form saved in ``scenes.json``."""
        return {
            "width": self.width,
            "height": self.height,
            "background": asdict(self.background),
            "shapes": [
                {**asdict(shape), "box": list(shape.box), "rgb": list(shape.rgb)}
                for shape in self.shapes
            ],
            "sign": None
            if self.sign is None
            else {
                **asdict(self.sign),
                "box": list(self.sign.box),
                "fill": list(self.sign.fill),
                "ink": list(self.sign.ink),
                "border": list(self.sign.border),
            },
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_json`."""
        sign = obj.get("sign")
        return cls(
            width=obj["width"],
            height=obj["height"],
            background=Background(**obj["background"]),
            shapes=tuple(
                Shape(
                    kind=s["kind"],
                    color=s["color"],
                    size=s["size"],
                    box=tuple(s["box"]),  # type: ignore[arg-type]
                    rgb=tuple(s["rgb"]),  # type: ignore[arg-type]
                )
                for s in obj["shapes"]
            ),
            sign=None
            if sign is None
            else Sign(
                **{
                    **sign,
                    "box": tuple(sign["box"]),
                    "fill": tuple(sign["fill"]),
                    "ink": tuple(sign["ink"]),
                    "border": tuple(sign["border"]),
                }
            ),
        )


@dataclass(frozen=True)
class SignText:
    """A sign's text already chosen and fitted: the font and size it will be drawn with and the
    ink extent ``(left, top, right, bottom)`` relative to a left-baseline origin."""

    text: str
    lang: str
    font: str
    font_size: int
    extent: tuple[int, int, int, int]


def text_extent(text: str, font: str, size: int, lang: str) -> tuple[int, int, int, int]:
    """Ink box of ``text`` drawn with bundled ``font`` at ``size`` px (left-baseline anchor);
    Arabic is measured shaped and right-to-left, exactly as it will be drawn."""
    face = load_font(font_by_name(font).file, size)
    return tuple(face.getbbox(text, anchor="ls", **_direction(lang)))  # type: ignore[return-value]


def sample_scene(
    rng: np.random.Generator,
    *,
    size: int,
    unit: int,
    max_shapes: int,
    sign: SignText | None = None,
    kinds: tuple[str, ...] = KINDS,
    colours: tuple[str, ...] = tuple(COLOURS),
) -> Scene:
    """Draw a random scene on a ``size`` x ``size`` canvas.

    ``unit`` is the plain image side that shape sizes are relative to, so shapes on the larger
    canvas of a sign scene have the same size in pixels (and in patches) as everywhere else.
    Shapes take their kind from ``kinds`` and their colour from ``colours`` (names from
    :data:`KINDS` and :data:`COLOURS`; the defaults are all of them).
    """
    background = _sample_background(rng)
    margin = max(3, unit // 28)
    blocked: list[tuple[int, int, int, int]] = []
    placed_sign: Sign | None = None
    if sign is not None:
        placed_sign = _place_sign(rng, sign, size, margin)
        blocked.append(placed_sign.box)
    count = int(rng.integers(1, max_shapes + 1))
    shapes = _place_shapes(
        rng,
        count,
        size=size,
        unit=unit,
        margin=margin,
        blocked=blocked,
        kinds=kinds,
        colours=colours,
    )
    return Scene(size, size, background, tuple(shapes), placed_sign)


def _sample_background(rng: np.random.Generator) -> Background:
    names = list(BACKGROUNDS)
    style = STYLES[int(rng.integers(len(STYLES)))]
    name = names[int(rng.integers(len(names)))]
    if style != "gradient":
        return Background(style, name)
    others = [other for other in names if other != name]
    second = others[int(rng.integers(len(others)))]
    direction = ("horizontal", "vertical", "diagonal")[int(rng.integers(3))]
    return Background(style, name, second, direction)


def _place_sign(rng: np.random.Generator, sign: SignText, size: int, margin: int) -> Sign:
    left, top, right, bottom = sign.extent
    pad_x = max(8, sign.font_size // 3)
    pad_y = max(6, sign.font_size // 4)
    width = right - left + 2 * pad_x
    height = bottom - top + 2 * pad_y
    x0 = int(rng.integers(margin, max(margin, size - width - margin) + 1))
    position = "top" if rng.random() < 0.5 else "bottom"
    slack = max(0, size // 16)
    offset = margin + int(rng.integers(0, slack + 1))
    y0 = offset if position == "top" else size - height - offset
    fill, ink, border = SIGN_SCHEMES[int(rng.integers(len(SIGN_SCHEMES)))]
    return Sign(
        text=sign.text,
        lang=sign.lang,
        font=sign.font,
        font_size=sign.font_size,
        box=(x0, y0, x0 + width, y0 + height),
        position=position,
        fill=fill,
        ink=ink,
        border=border,
    )


def _place_shapes(
    rng: np.random.Generator,
    count: int,
    *,
    size: int,
    unit: int,
    margin: int,
    blocked: list[tuple[int, int, int, int]],
    kinds: tuple[str, ...] = KINDS,
    colours: tuple[str, ...] = tuple(COLOURS),
) -> list[Shape]:
    """Non-overlapping shapes with a gap; retries whole layouts before giving anything up.

    Large shapes are placed first (they are the hard ones to fit). If no layout of ``count``
    shapes fits after many tries, sizes fall back to small, and only then is a shape dropped:
    the scene records what was drawn, so every answer stays true either way.
    """
    gap = max(4, unit // 16)
    shape_kinds = [kinds[int(rng.integers(len(kinds)))] for _ in range(count)]
    shape_colours = [colours[int(rng.integers(len(colours)))] for _ in range(count)]
    size_classes = ["large" if rng.random() < 0.5 else "small" for _ in range(count)]
    for attempt in range(40):
        if attempt == 30:
            size_classes = ["small"] * count
        sides = [round(float(rng.uniform(*SIZES[cls])) * unit) for cls in size_classes]
        order = sorted(range(count), key=lambda i: -sides[i])
        boxes: dict[int, tuple[int, int, int, int]] = {}
        for index in order:
            box = _find_spot(rng, sides[index], size, margin, gap, [*blocked, *boxes.values()])
            if box is None:
                break
            boxes[index] = box
        if len(boxes) == count:
            return [
                Shape(
                    shape_kinds[i],
                    shape_colours[i],
                    size_classes[i],
                    boxes[i],
                    _jitter(rng, shape_colours[i]),
                )
                for i in range(count)
            ]
    if count > 1:
        return _place_shapes(
            rng,
            count - 1,
            size=size,
            unit=unit,
            margin=margin,
            blocked=blocked,
            kinds=kinds,
            colours=colours,
        )
    raise RuntimeError(f"cannot place a shape on a {size}-px canvas")  # options forbid this


def _find_spot(
    rng: np.random.Generator,
    side: int,
    size: int,
    margin: int,
    gap: int,
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int, int, int] | None:
    """The first of 64 random positions whose box keeps ``gap`` px from every taken box."""
    high = size - side - margin
    if high < margin:
        return None
    xs = rng.integers(margin, high + 1, size=64)
    ys = rng.integers(margin, high + 1, size=64)
    if taken:
        boxes = np.array(taken)
        x0, y0 = xs[:, None], ys[:, None]
        free = (
            (x0 + side + gap <= boxes[:, 0])
            | (boxes[:, 2] + gap <= x0)
            | (y0 + side + gap <= boxes[:, 1])
            | (boxes[:, 3] + gap <= y0)
        ).all(axis=1)
        candidates = np.flatnonzero(free)
        if candidates.size == 0:
            return None
        first = int(candidates[0])
    else:
        first = 0
    x, y = int(xs[first]), int(ys[first])
    return (x, y, x + side, y + side)


def _jitter(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    base = COLOURS[colour]
    shift = rng.integers(-10, 11, size=3)
    return tuple(min(255, max(0, c + int(d))) for c, d in zip(base, shift, strict=True))  # type: ignore[return-value]


def render_scene(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene`` as an RGB image; ``rng`` only drives background jitter and texture."""
    image = _render_background(scene.background, scene.width, scene.height, rng)
    for shape in scene.shapes:
        _draw_shape(image, shape)
    if scene.sign is not None:
        _draw_sign(image, scene.sign)
    return image


def _render_background(
    background: Background, width: int, height: int, rng: np.random.Generator
) -> Image.Image:
    base = np.array(BACKGROUNDS[background.name], dtype=np.float32) + rng.integers(-4, 5, size=3)
    if background.style == "gradient":
        assert background.second is not None
        end = np.array(BACKGROUNDS[background.second], dtype=np.float32)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        if background.direction == "horizontal":
            t = xs / max(1, width - 1)
        elif background.direction == "vertical":
            t = ys / max(1, height - 1)
        else:
            t = (xs + ys) / max(1, width + height - 2)
        pixels = base * (1 - t[..., None]) + end * t[..., None]
    else:
        pixels = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    if background.style == "textured":
        coarse = rng.normal(0.0, 1.0, size=(max(2, height // 14), max(2, width // 14)))
        blob = Image.fromarray(((coarse + 4) * 32).clip(0, 255).astype(np.uint8), mode="L")
        smooth = np.asarray(blob.resize((width, height), Image.Resampling.BILINEAR), np.float32)
        grain = rng.normal(0.0, 2.5, size=(height, width))
        pixels = pixels + ((smooth / 32 - 4) * 5 + grain)[..., None]
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")


def _draw_shape(image: Image.Image, shape: Shape) -> None:
    x0, y0, x1, y1 = shape.box
    side = x1 - x0
    big = side * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(mask)
    if shape.kind == "circle":
        pen.ellipse((0, 0, big - 1, big - 1), fill=255)
    else:
        pen.polygon(_outline(shape.kind, big), fill=255)
    mask = mask.reduce(_SUPERSAMPLE)
    image.paste(shape.rgb, (x0, y0, x1, y1), mask)


def _outline(kind: str, s: int) -> list[tuple[float, float]]:
    """Polygon of ``kind`` filling an ``s`` x ``s`` box (upright, centred)."""
    e = s - 1
    if kind == "square":
        return [(0, 0), (e, 0), (e, e), (0, e)]
    if kind == "triangle":
        return [(e / 2, 0), (e, e), (0, e)]
    if kind == "cross":
        a, b = e * 0.31, e * 0.69
        return [
            (a, 0), (b, 0), (b, a), (e, a), (e, b), (b, b),
            (b, e), (a, e), (a, b), (0, b), (0, a), (a, a),
        ]  # fmt: skip
    if kind == "star":
        # Five points; the outer radius is chosen so the star spans the box's full height.
        outer = e / (1 + math.cos(math.pi / 5))
        inner = outer * 0.45
        cx, cy = e / 2, outer
        points = []
        for i in range(10):
            radius = outer if i % 2 == 0 else inner
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    raise ValueError(f"unknown shape kind {kind!r}")


def _draw_sign(image: Image.Image, sign: Sign) -> None:
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = sign.box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=sign.fill, outline=sign.border, width=2)
    left, top, right, bottom = text_extent(sign.text, sign.font, sign.font_size, sign.lang)
    # Centre the ink box (not the advance box) so every script sits visibly in the middle.
    x = (x0 + x1) / 2 - (left + right) / 2
    y = (y0 + y1) / 2 - (top + bottom) / 2
    face = load_font(font_by_name(sign.font).file, sign.font_size)
    draw.text(
        (round(x), round(y)),
        sign.text,
        fill=sign.ink,
        font=face,
        anchor="ls",
        **_direction(sign.lang),
    )


def _direction(lang: str) -> dict[str, str]:
    """Arabic is shaped and laid out right to left by raqm; other scripts need nothing."""
    return {"direction": "rtl", "language": "ar"} if lang == "ar" else {}
