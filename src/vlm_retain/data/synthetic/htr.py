"""``data synth htr``: handwriting-like text lines in four scripts, written as a manifest.

Each line is a pure function of (seed, language, index): its text comes from
:mod:`~vlm_retain.data.synthetic.text`, its look from a numpy generator seeded with the same key,
so the bytes do not depend on how many worker processes drew it. A line gets an *era* (one of
four periods) that shifts the mix of fonts, inks and wear, so a date-split experiment (train on
early eras, test on late ones) is possible with ``meta.era``.

Fonts are chosen per line among the bundled fonts of the script's ``hand`` and ``historical``
roles that have a glyph for every character of that line; a candidate that lacks one is
rejected (counted in the card's notes) and never draws the line, so no image holds a fallback
glyph or a box. Glyphs are kept large for the 28-px patch grid of Qwen-style encoders (cap
height about half the line height) and distortions are moderate, so a small model can learn to
read them (see ``research/demo-feasibility.md``).
"""

from __future__ import annotations

import io
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features
from rich.progress import Progress

from vlm_retain.data.card import SkipLog, build_card, write_card
from vlm_retain.data.manifest import MANIFEST_NAME, SPLITS, Record, write_manifest
from vlm_retain.data.synthetic import augment
from vlm_retain.data.synthetic.contact_sheet import contact_sheet
from vlm_retain.data.synthetic.fonts import FontSpec, covers, fonts_for, load_font
from vlm_retain.data.synthetic.text import LANGS, SCRIPTS, generate_lines
from vlm_retain.errors import InputError
from vlm_retain.fsutil import staged_output_dir, write_marker
from vlm_retain.progress import progress_bar

SOURCE = "synth-htr"
#: Qwen2-VL/2.5-VL/3-VL cut images into 14-px patches and merge 2x2 of them into one token.
PATCH_GRID = 28
_CHUNK = 25
_PREVIEW_PER_LANG = 6


@dataclass(frozen=True)
class HtrOptions:
    """What ``data synth htr`` generates; recorded in the card so a set can be remade."""

    langs: tuple[str, ...] = ("ru", "en", "it", "ar")
    per_lang: int = 500
    seed: int = 0
    height: int = 56
    preview: bool = False
    workers: int = 2
    val_frac: float = 0.1
    test_frac: float = 0.1
    #: ``manuscript`` (hand and book fonts, eras, wear) or ``print`` (clean modern type on
    #: white paper: the printed text a base model reads before it meets manuscripts).
    style: str = "manuscript"
    #: Words per line as ``(min, max)``; ``None`` keeps each language's own range (2 to 5).
    words: tuple[int, int] | None = None
    #: Draw words from a closed vocabulary of this many pseudo-words per language (``None``:
    #: letter by letter, an open vocabulary).
    lexicon: int | None = None


STYLES = ("manuscript", "print")
#: The ``era`` recorded for printed lines (they belong to no manuscript period).
PRINT_ERA = 2000


@dataclass(frozen=True)
class Era:
    """A period's style mix: which fonts, inks and papers, and how worn the line is."""

    year: int
    hand_share: float  # probability weight of ``hand`` fonts against ``historical`` ones
    inks: tuple[str, ...]
    paper: tuple[int, int, int]
    wear: float  # scales wobble, elastic jitter, fading, tint and noise
    p_stain: float


ERAS: tuple[Era, ...] = (
    Era(
        1720, 0.3, ("iron-gall brown", "iron-gall brown", "faded black"), (222, 202, 162), 1.3, 0.55
    ),
    Era(1790, 0.45, ("iron-gall brown", "faded black"), (228, 213, 180), 1.1, 0.4),
    Era(1850, 0.6, ("faded black", "blue-black", "iron-gall brown"), (234, 225, 200), 0.9, 0.25),
    Era(1900, 0.75, ("blue-black", "black", "faded black"), (240, 236, 222), 0.7, 0.12),
)
INKS: dict[str, tuple[int, int, int]] = {
    "iron-gall brown": (84, 56, 32),
    "faded black": (62, 58, 54),
    "blue-black": (34, 40, 78),
    "black": (24, 24, 28),
}
#: Arabic letter bodies sit far below the alif's top: a taller alif gives a comparable body size.
_CAP_SCALE = {"latin": 1.0, "cyrillic": 1.0, "arabic": 1.15}


@dataclass(frozen=True)
class LineStyle:
    """Every sampled parameter of one line's look (:meth:`meta` keeps the ones that matter)."""

    font: str
    era: int
    size: int
    stroke: int
    slant: float
    wobble_amp: float
    wobble_period: float
    wobble_phase: float
    elastic: float
    ink: str
    ink_rgb: tuple[int, int, int]
    opacity: float
    fade: float
    paper_rgb: tuple[int, int, int]
    tint: float
    grain: float
    stains: int
    stain_strength: float
    blur: float
    noise: float
    margin_start: int
    margin_end: int

    def meta(self) -> dict[str, Any]:
        """The parameters that matter for analysis, JSON-ready."""
        return {
            "font": self.font,
            "era": self.era,
            "font_size": self.size,
            "stroke": self.stroke,
            "slant": self.slant,
            "wobble": self.wobble_amp,
            "elastic": self.elastic,
            "ink": self.ink,
            "fade": self.fade,
            "stains": self.stains,
            "blur": self.blur,
            "noise": self.noise,
        }


def validate(options: HtrOptions) -> None:
    """Raise :class:`InputError` naming the option when ``options`` cannot be generated."""
    if not options.langs:
        raise InputError("no language given", field="langs", hint=f"use some of {','.join(LANGS)}")
    for lang in options.langs:
        if lang not in LANGS:
            raise InputError(
                f"unknown language {lang!r} in --langs",
                field="langs",
                hint=f"synthetic lines exist for {', '.join(LANGS)}",
            )
    if len(set(options.langs)) != len(options.langs):
        raise InputError("a language is listed twice in --langs", field="langs")
    if "ar" in options.langs and not features.check("raqm"):
        raise InputError(
            "Arabic lines need Pillow with raqm (text shaping and right-to-left layout), "
            "which this Pillow lacks",
            field="langs",
            hint="install the Pillow wheel from PyPI (pip install --force-reinstall pillow), "
            "which bundles raqm; it loads the system FriBiDi library, so a system without it "
            "also needs libfribidi (Debian/Ubuntu: apt-get install libfribidi0); or leave ar "
            "out of --langs",
        )
    if options.style not in STYLES:
        raise InputError(
            f"unknown --style {options.style!r}", field="style", hint=f"use {' or '.join(STYLES)}"
        )
    if options.words is not None:
        low, high = options.words
        if not 1 <= low <= high <= 8:
            raise InputError(
                f"--words must be MIN,MAX with 1 <= MIN <= MAX <= 8, got {low},{high}",
                field="words",
            )
    if options.lexicon is not None and not 2 <= options.lexicon <= 5000:
        raise InputError(
            f"--lexicon must be from 2 to 5000 words, got {options.lexicon}", field="lexicon"
        )
    if options.per_lang < 1:
        raise InputError(f"--per-lang must be at least 1, got {options.per_lang}", field="per_lang")
    if options.height < PATCH_GRID or options.height % PATCH_GRID:
        raise InputError(
            f"--height must be a positive multiple of {PATCH_GRID}, got {options.height}",
            field="height",
            hint="Qwen-style vision encoders cut images into 14-px patches and merge 2x2 of them, "
            "so sides that are multiples of 28 reach the model without resizing (e.g. 28, 56, 84)",
        )
    if options.seed < 0:
        raise InputError(f"--seed must not be negative, got {options.seed}", field="seed")
    if options.workers < 1:
        raise InputError(f"--workers must be at least 1, got {options.workers}", field="workers")
    for name in ("val_frac", "test_frac"):
        value = getattr(options, name)
        if not 0 <= value < 1:
            raise InputError(f"{name} must be in [0, 1), got {value}", field=name)
    if options.val_frac + options.test_frac >= 1:
        raise InputError("val_frac + test_frac must leave lines for train", field="val_frac")


def synth_htr(
    out: Path, options: HtrOptions, *, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Render ``options.per_lang`` lines per language into ``out``; return the card."""
    validate(options)
    out = Path(out)
    seen: set[str] = set()
    jobs: list[tuple[str, int, str]] = []
    for lang in options.langs:
        texts = generate_lines(
            lang,
            options.per_lang,
            options.seed,
            avoid=seen,
            words=options.words,
            lexicon_size=options.lexicon,
        )
        jobs.extend((lang, index, text) for index, text in enumerate(texts))
    splits = {lang: split_of(lang, options) for lang in options.langs}
    with staged_output_dir(out, overwrite=overwrite) as staging:
        (staging / "images").mkdir()
        skipped = SkipLog()
        rejections = 0
        rendered: dict[str, tuple[str, str, dict[str, Any]]] = {}
        with _progress(progress) as bar:
            task = bar.add_task(f"rendering {len(jobs)} lines", total=len(jobs))
            for results in _run_chunks(jobs, options, staging):
                for line_id, text, meta, rejected in results:
                    rejections += rejected
                    if meta is None:
                        skipped.add("no bundled font covers every character", line_id)
                    else:
                        rendered[line_id] = (line_id.split("-")[0], text, meta)
                bar.advance(task, len(results))
        records = [
            Record.create(
                id=line_id,
                image=f"images/{line_id}.png",
                text=text,
                lang=lang,
                source=SOURCE,
                split=splits[lang][int(line_id.split("-")[1])],
                meta=meta,
            )
            for line_id, (lang, text, meta) in rendered.items()
        ]
        if not records:
            raise InputError("no line could be rendered", path=out)
        records.sort(key=lambda r: (SPLITS.index(r.split), r.id))
        manifest_file = staging / MANIFEST_NAME
        write_manifest(manifest_file, records)
        card = build_card(
            records,
            manifest_file=manifest_file,
            importer=SOURCE,
            options=asdict(options),
            source_path=None,
            skipped=skipped,
            notes={"font candidates rejected for coverage": rejections},
        )
        card["styles"] = {
            "fonts": dict(sorted(Counter(r.meta["font"] for r in records).items())),
            "eras": dict(sorted(Counter(r.meta["era"] for r in records).items())),
        }
        write_card(staging, card)
        if options.preview:
            write_preview(staging, records, options.seed)
        write_marker(staging, "manifest", source=SOURCE)
    return card


def split_of(lang: str, options: HtrOptions) -> list[str]:
    """The split of each index of ``lang``: a seeded permutation cut at the fractions."""
    n = options.per_lang
    n_val = round(n * options.val_frac)
    n_test = round(n * options.test_frac)
    if n_val + n_test >= n:  # tiny sets: keep at least one training line
        n_val, n_test = 0, 0
    order = np.random.default_rng([options.seed, _lang_key(lang), 2]).permutation(n)
    split = ["train"] * n
    for rank, index in enumerate(order):
        if rank < n_val:
            split[index] = "val"
        elif rank < n_val + n_test:
            split[index] = "test"
    return split


def _lang_key(lang: str) -> int:
    return zlib.crc32(lang.encode("ascii"))


def line_generator(seed: int, lang: str, index: int) -> np.random.Generator:
    """The look RNG of one line: a function of (seed, lang, index) only."""
    return np.random.default_rng([seed, _lang_key(lang), index, 1])


def candidate_fonts(lang: str, era: Era) -> list[tuple[FontSpec, float]]:
    """Fonts that may draw ``lang`` with their weights in ``era`` (before coverage checks).

    Latin lines use Latin and Cyrillic families only: the Arabic families' Latin letters are a
    companion design, not the book or hand they are bundled for.
    """
    script = SCRIPTS[lang]
    specs = fonts_for(script, ("hand", "historical"))
    if script == "latin":
        specs = [spec for spec in specs if "arabic" not in spec.scripts]
    hand = [spec for spec in specs if spec.role == "hand"]
    book = [spec for spec in specs if spec.role == "historical"]
    weighted = [(spec, era.hand_share / len(hand)) for spec in hand]
    weighted += [(spec, (1 - era.hand_share) / len(book)) for spec in book]
    return weighted


def choose_font(
    text: str, candidates: list[tuple[FontSpec, float]], rng: np.random.Generator
) -> tuple[FontSpec | None, int]:
    """Draw a font by weight among those that cover ``text``; also return how many were rejected.

    A drawn candidate that lacks a glyph is dropped and the draw repeated, so the result always
    has every character (``None`` when no candidate has).
    """
    pool = list(candidates)
    rejected = 0
    while pool:
        weights = np.array([weight for _, weight in pool], dtype=np.float64)
        pick = int(rng.choice(len(pool), p=weights / weights.sum()))
        spec = pool[pick][0]
        if covers(spec, text):
            return spec, rejected
        rejected += 1
        pool.pop(pick)
    return None, rejected


def sample_style(
    lang: str, text: str, rng: np.random.Generator, height: int, style: str = "manuscript"
) -> tuple[LineStyle | None, int]:
    """Draw the era, then the font (covering ``text``) and every augmentation parameter."""
    if style == "print":
        return _print_style(lang, text, rng, height)
    era_index = int(rng.integers(len(ERAS)))
    era = ERAS[era_index]
    spec, rejected = choose_font(text, candidate_fonts(lang, era), rng)
    if spec is None:
        return None, rejected
    wear = era.wear
    size = font_size(spec, SCRIPTS[lang], height, rng)
    stroke = int(rng.random() < 0.35)
    ink_name = str(rng.choice(era.inks))
    slant_mean, slant_sd = (0.0, 0.07) if lang == "ar" else (0.1, 0.1)
    style = LineStyle(
        font=spec.name,
        era=era.year,
        size=size,
        stroke=stroke,
        slant=_r(np.clip(rng.normal(slant_mean, slant_sd), -0.15, 0.35)),
        wobble_amp=_r(rng.uniform(0.0, 2.2) * wear * height / 56),
        wobble_period=_r(rng.uniform(120, 420)),
        wobble_phase=_r(rng.uniform(0, 2 * math.pi)),
        elastic=_r(rng.uniform(0.3, 1.1) * wear * height / 56),
        ink=ink_name,
        ink_rgb=_jitter(INKS[ink_name], rng, 10),
        opacity=_r(rng.uniform(0.82, 0.97)),
        fade=_r(min(0.6, rng.uniform(0.1, 0.4) * wear)),
        paper_rgb=_jitter(era.paper, rng, 6),
        tint=_r(rng.uniform(0.03, 0.09) * wear),
        grain=_r(rng.uniform(1.5, 4.0)),
        stains=int(rng.integers(1, 4)) if rng.random() < era.p_stain else 0,
        stain_strength=_r(rng.uniform(0.15, 0.35)),
        blur=_r(rng.uniform(0.2, 0.55 if stroke else 0.8)),  # bold and blurred is a smear
        noise=_r(rng.uniform(1.5, 5.0) * wear),
        margin_start=int(rng.integers(4, 15)),
        margin_end=int(rng.integers(4, 15)),
    )
    return style, rejected


def _print_style(
    lang: str, text: str, rng: np.random.Generator, height: int
) -> tuple[LineStyle | None, int]:
    """Clean print: a modern print font, near-black ink on near-white paper, no warp or wear.

    The same sizing rule as manuscripts (letter height about half the line), so the only
    difference a model sees between the two sets is the hand, not the scale.
    """
    script = SCRIPTS[lang]
    candidates = [(spec, 1.0) for spec in fonts_for(script, ("print",))]
    spec, rejected = choose_font(text, candidates, rng)
    if spec is None:
        return None, rejected
    size = font_size(spec, script, height, rng)
    grey = int(rng.integers(10, 40))
    paper = int(rng.integers(238, 256))
    style = LineStyle(
        font=spec.name,
        era=PRINT_ERA,
        size=size,
        stroke=0,
        slant=0.0,
        wobble_amp=0.0,
        wobble_period=200.0,
        wobble_phase=0.0,
        elastic=0.0,
        ink="print black",
        ink_rgb=(grey, grey, grey),
        opacity=1.0,
        fade=0.0,
        paper_rgb=(paper, paper, paper),
        tint=0.0,
        grain=_r(rng.uniform(0.5, 1.5)),
        stains=0,
        stain_strength=0.0,
        blur=_r(rng.uniform(0.0, 0.3)),
        noise=_r(rng.uniform(0.5, 2.0)),
        margin_start=int(rng.integers(4, 15)),
        margin_end=int(rng.integers(4, 15)),
    )
    return style, rejected


def font_size(spec: FontSpec, script: str, height: int, rng: np.random.Generator) -> int:
    """The font size that gives a letter height of 44-54% of the line (one draw from ``rng``),
    the rule manuscript and print lines share (see :func:`cap_ratio`)."""
    cap = height * float(rng.uniform(0.44, 0.54)) * _CAP_SCALE[script]
    return max(8, round(cap / cap_ratio(spec.file, script)))


def _r(value: float) -> float:
    """Round a sampled parameter so ``meta`` shows exactly what was rendered."""
    return round(float(value), 3)


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


@cache
def cap_ratio(file: str, script: str) -> float:
    """The font's letter height per pixel of font size, used to size every font alike.

    For Arabic it is the alif's height. For Latin and Cyrillic it averages the cap height with
    the x-height scaled to a typical 0.65 of it, so a script face with tall capitals and a tiny
    x-height (Dancing Script) is not drawn with unreadably small lowercase.
    """
    font = load_font(file, 100)

    def height(letter: str) -> float:
        return -font.getbbox(letter, anchor="ls")[1] / 100

    if script == "arabic":
        return max(0.2, height("ا"))
    cap, x = (height("H"), height("x")) if script == "latin" else (height("Н"), height("х"))
    return max(0.2, (cap + x / 0.65) / 2)


def _layout(lang: str) -> dict[str, str]:
    """Raqm layout arguments: Arabic runs right to left and is shaped with its language."""
    return {"direction": "rtl" if lang == "ar" else "ltr", "language": lang}


def text_mask(
    text: str,
    spec: FontSpec,
    size: int,
    lang: str,
    *,
    stroke: int = 0,
    pad_x: int = 0,
    pad_y: int = 0,
    basic: bool = False,
) -> tuple[Image.Image, int]:
    """Ink of ``text`` as an ``L`` mask (255 = ink) and the baseline's y in it.

    Drawn in one call with the raqm layout, so Arabic is joined and laid out right to left
    (``basic=True`` uses Pillow's basic layout instead; tests use it to show the difference).
    """
    font = load_font(spec.file, size)
    if basic:
        font = ImageFont.truetype(str(spec.path), size, layout_engine=ImageFont.Layout.BASIC)
    layout = {} if basic else _layout(lang)
    left, top, right, bottom = font.getbbox(text, anchor="ls", stroke_width=stroke, **layout)
    width = right - left + 2 * pad_x + 2
    height = bottom - top + 2 * pad_y + 2
    mask = Image.new("L", (max(1, width), max(1, height)), 0)
    origin = (pad_x + 1 - left, pad_y + 1 - top)
    ImageDraw.Draw(mask).text(
        origin, text, fill=255, font=font, anchor="ls", stroke_width=stroke, stroke_fill=255,
        **layout,
    )  # fmt: skip
    return mask, origin[1]


def render_line(
    text: str, lang: str, style: LineStyle, height: int, rng: np.random.Generator
) -> Image.Image:
    """The finished RGB line: ``height`` px tall, width a multiple of 28, ink never clipped."""
    spec = _spec(style.font)
    pad_x = max(8, round(height * 0.6))
    mask, baseline = text_mask(
        text, spec, style.size, lang, stroke=style.stroke, pad_x=pad_x, pad_y=height // 2
    )
    mask = augment.warp(
        mask,
        rng,
        slant=style.slant,
        baseline=baseline,
        wobble_amp=style.wobble_amp,
        wobble_period=style.wobble_period,
        wobble_phase=style.wobble_phase,
        elastic=style.elastic,
    )
    mask = _frame(mask, lang, style, height, rng)
    canvas = augment.paper(
        rng, mask.width, height, colour=style.paper_rgb, tint=style.tint, grain=style.grain
    )
    canvas = augment.stains(rng, canvas, style.stains, style.stain_strength)
    canvas = augment.ink(
        canvas, mask, rng, colour=style.ink_rgb, opacity=style.opacity, fade=style.fade
    )
    return augment.finish(canvas, rng, blur=style.blur, noise=style.noise)


def _frame(
    mask: Image.Image, lang: str, style: LineStyle, height: int, rng: np.random.Generator
) -> Image.Image:
    """Crop the warped ink into the final frame: ``height`` tall, width a multiple of 28.

    The ink's vertical position varies a little; the spare width goes to the end side of the
    line (right for left-to-right scripts, left for Arabic), as a line starts at the margin.
    """
    box = mask.getbbox()
    if box is None:
        return Image.new("L", (PATCH_GRID * 2, height), 0)
    x0, y0, x1, y1 = box
    room = height - 4
    if y1 - y0 > room:  # tall ascenders and descenders: shrink the ink to fit, never clip it
        ink = mask.crop(box)
        scale = room / ink.height
        ink = ink.resize((max(1, round(ink.width * scale)), room), Image.Resampling.LANCZOS)
        mask = Image.new("L", (ink.width + 2 * x0, height + 4), 0)
        mask.paste(ink, (x0, 2))
        x0, y0, x1, y1 = mask.getbbox() or (x0, 2, x0 + ink.width, 2 + room)
    slack = height - (y1 - y0)
    top = y0 - round(slack * float(rng.uniform(0.35, 0.65)))
    start, end = style.margin_start, style.margin_end
    natural = (x1 - x0) + start + end
    width = max(2 * PATCH_GRID, math.ceil(natural / PATCH_GRID) * PATCH_GRID)
    left = x1 + start - width if lang == "ar" else x0 - start
    return mask.crop((left, top, left + width, top + height))


@cache
def _spec(name: str) -> FontSpec:
    from vlm_retain.data.synthetic.fonts import font_by_name

    return font_by_name(name)


def render_one(
    seed: int, lang: str, index: int, text: str, height: int, style_name: str = "manuscript"
) -> tuple[Image.Image | None, dict[str, Any] | None, int]:
    """Sample the style of line ``(lang, index)`` and render it; ``None`` when no font covers."""
    rng = line_generator(seed, lang, index)
    style, rejected = sample_style(lang, text, rng, height, style_name)
    if style is None:
        return None, None, rejected
    image = render_line(text, lang, style, height, rng)
    meta = {**style.meta(), "width": image.width, "height": image.height}
    if lang == "ar":
        meta["direction"] = "rtl"
    return image, meta, rejected


def encode_png(image: Image.Image) -> bytes:
    """PNG with fixed settings, so the same pixels always give the same bytes.

    Level 1: the grain and noise make these lines nearly incompressible, and level 6 took three
    times as long (a third of all rendering time) for files no smaller.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


ChunkResult = list[tuple[str, str, dict[str, Any] | None, int]]


def _render_chunk(
    seed: int, height: int, style: str, images: str, items: list[tuple[str, int, str]]
) -> ChunkResult:
    """Render and write a chunk of lines (runs in a worker process)."""
    results: ChunkResult = []
    for lang, index, text in items:
        line_id = f"{lang}-{index:06d}"
        image, meta, rejected = render_one(seed, lang, index, text, height, style)
        if image is not None:
            (Path(images) / f"{line_id}.png").write_bytes(encode_png(image))
        results.append((line_id, text, meta, rejected))
    return results


def _run_chunks(
    jobs: list[tuple[str, int, str]], options: HtrOptions, staging: Path
) -> Iterator[ChunkResult]:
    """Yield chunk results (in order); in-process for one worker, else a process pool."""
    chunks = [jobs[i : i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
    images = str(staging / "images")
    if options.workers == 1 or len(chunks) == 1:
        for chunk in chunks:
            yield _render_chunk(options.seed, options.height, options.style, images, chunk)
        return
    with ProcessPoolExecutor(max_workers=options.workers) as pool:
        futures = [
            pool.submit(_render_chunk, options.seed, options.height, options.style, images, chunk)
            for chunk in chunks
        ]
        for future in futures:
            yield future.result()


def write_preview(folder: Path, records: list[Record], seed: int) -> None:
    """``preview.png``: a few random lines per language with their id, font and era."""
    rng = np.random.default_rng([seed, 3])
    by_lang: dict[str, list[Record]] = {}
    for record in records:
        by_lang.setdefault(record.lang, []).append(record)
    picked: list[Record] = []
    for lang in sorted(by_lang, key=LANGS.index):
        pool = by_lang[lang]
        count = min(_PREVIEW_PER_LANG, len(pool))
        picked.extend(pool[i] for i in sorted(rng.choice(len(pool), count, replace=False)))
    images = []
    for record in picked:
        with Image.open(folder / record.image) as image:
            images.append(image.convert("RGB"))
    labels = [f"{r.id} · {r.meta['font']} · {r.meta['era']}" for r in picked]
    sheet = contact_sheet(images, labels, columns=2, cell_width=420)
    # A palette keeps the sheet small enough to commit; it is for eyes, not for training.
    sheet = sheet.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    sheet.save(folder / "preview.png", format="PNG", optimize=True)


def _progress(enabled: bool) -> Progress:
    return progress_bar(enabled)
