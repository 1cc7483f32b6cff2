"""Image degradations that make a clean rendered line look written and aged.

Each function takes its parameters explicitly (the caller samples them and records them in the
manifest's ``meta``), plus a numpy ``Generator`` for the noise itself, so a line's look is a pure
function of its seed. Geometry works on the ink mask (``L``, 255 = ink) before colour is applied:
slant, baseline wobble and elastic distortion are one mesh warp of the whole rendered line, never
per-letter drawing, so Arabic joins made by the shaper survive intact. Colour and wear (paper tint
and grain, stains, faded ink, blur, sensor noise) are applied to the composed RGB image.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Horizontal spacing of the warp grid: fine enough for a wobble, coarse enough to stay smooth.
_GRID_X = 16


def warp(
    mask: Image.Image,
    rng: np.random.Generator,
    *,
    slant: float,
    baseline: float,
    wobble_amp: float,
    wobble_period: float,
    wobble_phase: float,
    elastic: float,
) -> Image.Image:
    """Shear, wave and jitter ``mask`` in one ``Image.MESH`` transform.

    Output pixel ``(x, y)`` samples the input at ``(x, y) + d(x, y)`` where ``d`` is the sum of a
    shear about ``baseline`` (``slant`` > 0 leans forward), a sine of the x position
    (the baseline wobble) and Gaussian jitter at the grid nodes (the elastic part; bilinear
    interpolation between nodes keeps it smooth).
    """
    width, height = mask.size
    xs = np.arange(0, width + _GRID_X, _GRID_X, dtype=np.float64)
    xs[-1] = width
    ys = np.array([0.0, height / 3, 2 * height / 3, float(height)])
    gx, gy = np.meshgrid(xs, ys)
    dx = slant * (gy - baseline)
    dy = wobble_amp * np.sin(2 * math.pi * gx / max(wobble_period, 1.0) + wobble_phase)
    if elastic > 0:
        jitter = rng.normal(0.0, elastic, size=(2, *gx.shape))
        # Smooth along x so neighbouring letters move together (a hand drifts, it does not shake).
        kernel = np.array([0.25, 0.5, 0.25])
        for k in range(2):
            for row in range(jitter.shape[1]):
                jitter[k, row] = np.convolve(jitter[k, row], kernel, mode="same")
        dx = dx + jitter[0]
        dy = dy + jitter[1]
    sx, sy = gx + dx, gy + dy
    mesh = []
    for j in range(len(ys) - 1):
        for i in range(len(xs) - 1):
            box = (int(xs[i]), int(ys[j]), int(xs[i + 1]), int(ys[j + 1]))
            quad = (
                sx[j, i], sy[j, i],
                sx[j + 1, i], sy[j + 1, i],
                sx[j + 1, i + 1], sy[j + 1, i + 1],
                sx[j, i + 1], sy[j, i + 1],
            )  # fmt: skip
            mesh.append((box, tuple(float(v) for v in quad)))
    return mask.transform(mask.size, Image.Transform.MESH, mesh, Image.Resampling.BILINEAR)


def smooth_field(
    rng: np.random.Generator, width: int, height: int, cells: int, low: float, high: float
) -> np.ndarray:
    """A low-frequency random field in ``[low, high]``: a coarse grid upsampled bicubically.

    ``cells`` is the number of coarse cells along x (more cells, finer variation).
    """
    coarse_w = max(2, cells)
    coarse_h = max(2, round(coarse_w * height / max(width, 1)) + 1)
    coarse = rng.random((coarse_h, coarse_w)).astype(np.float32)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    field = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return low + (high - low) * field


def paper(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    colour: tuple[int, int, int],
    tint: float,
    grain: float,
) -> np.ndarray:
    """Paper as float RGB: ``colour`` modulated by a low-frequency tint and fine grain."""
    base = np.asarray(colour, dtype=np.float32)[None, None, :]
    shade = smooth_field(rng, width, height, max(2, width // 90), 1.0 - tint, 1.0)
    fibres = rng.normal(0.0, grain, size=(height, width)).astype(np.float32)
    return base * shade[:, :, None] + fibres[:, :, None]


def stains(rng: np.random.Generator, canvas: np.ndarray, count: int, strength: float) -> np.ndarray:
    """Darken ``canvas`` under ``count`` soft brownish blotches (water and foxing marks)."""
    if count <= 0:
        return canvas
    height, width = canvas.shape[:2]
    scale = 4
    small = Image.new("L", (max(1, width // scale), max(1, height // scale)), 0)
    draw = ImageDraw.Draw(small)
    for _ in range(count):
        cx = rng.uniform(0, small.width)
        cy = rng.uniform(0, small.height)
        rx = rng.uniform(2, max(3.0, small.height * 1.5))
        ry = rng.uniform(2, max(3.0, small.height * 0.8))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(rng.uniform(120, 255)))
    small = small.filter(ImageFilter.GaussianBlur(radius=2.0))
    blot = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR), np.float32) / 255
    tone = np.array([0.78, 0.7, 0.6], dtype=np.float32)  # brown: blue fades most
    darken = 1.0 - strength * blot[:, :, None] * (1.0 - tone[None, None, :] * 0.6)
    return canvas * darken


def ink(
    canvas: np.ndarray,
    mask: Image.Image,
    rng: np.random.Generator,
    *,
    colour: tuple[int, int, int],
    opacity: float,
    fade: float,
) -> np.ndarray:
    """Lay ink of ``colour`` through ``mask``; ``fade`` thins it in patches (pen pressure, wear)."""
    height, width = canvas.shape[:2]
    alpha = np.asarray(mask, dtype=np.float32) / 255.0 * opacity
    if fade > 0:
        alpha = alpha * smooth_field(rng, width, height, max(2, width // 40), 1.0 - fade, 1.0)
    colour_arr = np.asarray(colour, dtype=np.float32)[None, None, :]
    return canvas * (1.0 - alpha[:, :, None]) + colour_arr * alpha[:, :, None]


def finish(
    canvas: np.ndarray, rng: np.random.Generator, *, blur: float, noise: float
) -> Image.Image:
    """Blur (focus, ink bleed) and add sensor noise; return the 8-bit RGB image."""
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(radius=blur))
    if noise > 0:
        array = np.asarray(image, dtype=np.float32)
        array = array + rng.normal(0.0, noise, size=array.shape[:2]).astype(np.float32)[..., None]
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    return image
