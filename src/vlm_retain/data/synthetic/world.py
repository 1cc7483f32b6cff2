"""``vlm-retain data synth world``: a small visual world with VQA, captions and printed signs.

A tiny base model learns these general skills first, so that teaching it to read manuscripts can
make it forget them, measurably, on a laptop CPU. Every image is a :class:`~.scenes.Scene`, and
every question, answer and caption is computed from that scene, never typed by hand, so nothing
said about an image can be false. The files use the real benchmarks' layouts (``layouts.py``) so
the VQAv2, COCO and Flickr30k loaders, prompts and metrics run on them unchanged.

Output folder (see docs/synthetic.md for every field)::

    images/<split>/COCO_<split>_<image_id:012d>.png   one image per scene
    vqav2/Questions/v2_OpenEnded_mscoco_<split>_questions.json     shape questions
    vqav2/Annotations/v2_mscoco_<split>_annotations.json
    signs/Questions/..., signs/Annotations/...          "What does the sign say?" (same layout)
    coco/annotations/captions_<split>.json              five references per image
    karpathy/dataset_coco.json, karpathy/dataset_flickr30k.json
    scenes.json          the specification of every scene (the ground truth)
    manifest.jsonl, card.json, .vlm-retain.json, preview.png (with --preview)

Determinism: each scene draws from its own generators seeded by ``(seed, stream, image_id)``,
so the bytes do not depend on the number of worker processes or on the order work finishes.
"""

from __future__ import annotations

import io
import math
import os
import unicodedata
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, features

from vlm_retain.data.card import SkipLog, build_card, write_card
from vlm_retain.data.manifest import MANIFEST_NAME, SPLITS, Record, write_manifest
from vlm_retain.data.synthetic import layouts
from vlm_retain.data.synthetic.contact_sheet import contact_sheet
from vlm_retain.data.synthetic.fonts import covers, font_by_name, fonts_for
from vlm_retain.data.synthetic.scenes import (
    COLOURS,
    KINDS,
    PLURALS,
    Scene,
    Shape,
    SignText,
    render_scene,
    sample_scene,
    text_extent,
)
from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_bytes, atomic_write_json, staged_output_dir, write_marker
from vlm_retain.progress import progress_bar

SOURCE = "synth-world"
WORLD_VERSION = "1.0"
SCENES_SCHEMA = "vlm-retain/synth-world-scenes/1"
SIGN_LANGS = ("en", "ru", "it", "ar")
_SCRIPT = {"en": "latin", "it": "latin", "ru": "cyrillic", "ar": "arabic"}
#: Sign question ids are ``image_id * 1000 + SIGN_QID_OFFSET``; shape questions use 0..99.
SIGN_QID_OFFSET = 500
#: The font contact_sheet() draws labels with (to avoid boxes for scripts it lacks).
_LABEL_FONT = "Noto Sans"
#: Families of shape questions (``Question.family``, ``meta.family`` in the manifest); the sign
#: question (family ``sign``) is not among them: ``sign_share`` governs it.
ALL_FAMILIES: tuple[str, ...] = (
    "color",
    "shape",
    "count",
    "count_attr",
    "exists",
    "relation",
    "extreme",
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
_INFO = {
    "description": "vlm-retain synthetic world: shapes and printed signs",
    "url": "",
    "version": WORLD_VERSION,
    "year": 2025,
    "contributor": "vlm-retain synth-world",
    "date_created": "",
}
_LICENSE = {
    "url": "https://creativecommons.org/publicdomain/zero/1.0/",
    "name": "CC0 1.0 Universal (generated data)",
}
# Random streams, one per concern, so changing one part never changes another's output.
_STREAM_SCENE, _STREAM_SPLIT, _STREAM_SIGNS, _STREAM_PIXELS, _STREAM_QA, _STREAM_CAPTION = range(6)


@dataclass(frozen=True)
class WorldOptions:
    """Options of ``data synth world``.

    ``image_size`` is the side of plain scenes (a multiple of 28, the merged patch of Qwen-style
    models). Scenes with a sign are drawn at ``sign_image_size`` so that the printed text can be
    large (cap height about 20 px or more) and still hold a short phrase; their shapes keep the
    same size in pixels. ``sign_share`` is the share of scenes (per split) that carry a sign.

    ``kinds`` and ``colours`` are the shape kinds and colours the world draws (and the only ones
    any question or answer names); ``families`` the shape-question families asked. Each is a
    non-empty subset of :data:`~.scenes.KINDS`, :data:`~.scenes.COLOURS` and
    :data:`ALL_FAMILIES`; their order does not matter (the output depends only on the set).
    """

    n: int = 1000
    seed: int = 0
    preview: bool = False
    workers: int = 2
    image_size: int = 112
    sign_image_size: int = 224
    max_shapes: int = 4
    sign_share: float = 0.25
    sign_langs: tuple[str, ...] = SIGN_LANGS
    questions_per_image: int = 5
    val_frac: float = 0.1
    test_frac: float = 0.1
    kinds: tuple[str, ...] = KINDS
    colours: tuple[str, ...] = tuple(COLOURS)
    families: tuple[str, ...] = ALL_FAMILIES

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first option that is out of range."""
        if self.n < 1:
            raise InputError(f"--n must be at least 1 (got {self.n})")
        if self.seed < 0:
            raise InputError(f"--seed must be 0 or more (got {self.seed})")
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1 (got {self.workers})")
        if self.image_size % 28 or not 56 <= self.image_size <= 448:
            raise InputError(
                f"image_size must be a multiple of 28 from 56 to 448 (got {self.image_size})"
            )
        if self.sign_image_size % 28 or not max(168, self.image_size) <= self.sign_image_size:
            raise InputError(
                "sign_image_size must be a multiple of 28, at least 168 and at least image_size"
                f" (got {self.sign_image_size})"
            )
        if not 1 <= self.max_shapes <= 6:
            raise InputError(f"max_shapes must be from 1 to 6 (got {self.max_shapes})")
        if not 0.0 <= self.sign_share <= 1.0:
            raise InputError(f"sign_share must be in [0, 1] (got {self.sign_share})")
        unknown = [lang for lang in self.sign_langs if lang not in SIGN_LANGS]
        if unknown or not self.sign_langs:
            raise InputError(
                f"sign_langs must be a non-empty subset of {', '.join(SIGN_LANGS)}"
                f" (got {', '.join(self.sign_langs) or 'none'})"
            )
        if "ar" in self.sign_langs and not features.check("raqm"):
            raise InputError(
                "sign_langs: Arabic signs need Pillow with libraqm (for shaping)",
                hint="install a Pillow wheel with raqm or leave 'ar' out",
            )
        for name, allowed in (
            ("kinds", KINDS),
            ("colours", tuple(COLOURS)),
            ("families", ALL_FAMILIES),
        ):
            values = tuple(getattr(self, name))
            if not values or len(set(values)) < len(values) or set(values) - set(allowed):
                raise InputError(
                    f"{name} must be a non-empty subset of {', '.join(allowed)} without repeats"
                    f" (got {', '.join(map(str, values)) or 'none'})"
                )
        if self.questions_per_image < 1:
            raise InputError(
                f"questions_per_image must be at least 1 (got {self.questions_per_image})"
            )
        for name in ("val_frac", "test_frac"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise InputError(f"{name} must be in [0, 1) (got {value})")
        if self.val_frac + self.test_frac >= 1.0:
            raise InputError("val_frac + test_frac must be under 1 (train needs images)")


# --- printed signs ------------------------------------------------------------------------------

#: Words and short phrases for signs, per language. Real sign words (a reading task, not a
#: lexicon), none of them an English colour or shape name, so captions stay unambiguous.
_SIGN_WORDS: dict[str, tuple[str, ...]] = {
    "en": (
        "open", "closed", "exit", "entrance", "bakery", "books", "hotel", "station", "market",
        "garden", "library", "museum", "pharmacy", "coffee", "tickets", "platform", "school",
        "parking", "welcome", "office", "bank", "theatre", "bridge", "harbour", "cinema",
        "kitchen", "post", "tea", "fish", "bread",
    ),
    "ru": (
        "выход", "вход", "открыто", "закрыто", "аптека", "почта", "хлеб", "книги", "касса",
        "музей", "рынок", "вокзал", "парк", "театр", "кафе", "школа", "библиотека", "гостиница",
        "магазин", "улица", "мёд", "ёлки", "молоко", "газеты", "стоянка", "причал", "чай",
    ),
    "it": (
        "uscita", "entrata", "aperto", "chiuso", "farmacia", "stazione", "libreria", "città",
        "caffè", "università", "mercato", "giardino", "biblioteca", "museo", "albergo",
        "panetteria", "gelateria", "scuola", "teatro", "lunedì", "virtù", "perché", "più", "tè",
        "però", "così", "martedì", "porto",
    ),
    "ar": (
        "مخرج", "مدخل", "مفتوح", "مغلق", "صيدلية", "مكتبة", "مقهى", "سوق", "فندق", "محطة",
        "مدرسة", "بريد", "متحف", "مخبز", "حديقة", "شارع", "جامعة", "مطعم", "مسرح", "بنك",
        "ميناء", "أهلا",
    ),
}  # fmt: skip
_SIGN_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "no entry", "fresh bread", "main street", "river road", "city hall", "bus stop",
        "north gate", "book shop", "tea room", "post office", "fish market", "old harbour",
    ),
    "ru": (
        "нет входа", "добро пожаловать", "свежий хлеб", "главная улица", "книжный магазин",
        "летний сад", "северный вход", "городской парк", "всё для дома", "речной вокзал",
    ),
    "it": (
        "caffè del porto", "città vecchia", "via roma", "buona giornata", "pane fresco",
        "vietato fumare", "porta nord", "lunedì chiuso", "più libri", "tè e caffè",
    ),
    "ar": (
        "أهلا وسهلا", "ممنوع التدخين", "سوق الخضار", "محطة القطار", "شارع النيل", "باب الشمال",
        "مكتبة المدينة", "خبز طازج", "مقهى الميناء",
    ),
}  # fmt: skip
_SIGN_NUMBERED: dict[str, tuple[str, ...]] = {
    "en": ("platform", "room", "gate", "track"),
    "ru": ("путь", "кабинет", "выход", "платформа"),
    "it": ("binario", "uscita", "stanza", "piano"),
    "ar": (),
}
#: Font sizes (px) tried from largest down; the smallest keeps capitals about 20 px tall.
_SIGN_SIZES = {"latin": (30, 40, 28), "cyrillic": (30, 40, 28), "arabic": (34, 44, 32)}


def sample_sign_text(rng: np.random.Generator, lang: str, canvas: int) -> SignText:
    """A word or short phrase in ``lang``, a print font that covers it, and a size that fits.

    Only fonts whose character map has every character are candidates (a fallback glyph or a
    box would make the reference lie); the text is redrawn when even the smallest size is too
    wide for the sign on a ``canvas``-px image.
    """
    script = _SCRIPT[lang]
    low, high, smallest = _SIGN_SIZES[script]
    margin = max(3, canvas // 56)
    for _ in range(100):
        text = _compose_sign(rng, lang)
        fonts = [spec for spec in fonts_for(script, ("print",)) if covers(spec, text)]
        if not fonts:
            continue
        font = fonts[int(rng.integers(len(fonts)))].name
        size = int(rng.integers(low, high + 1))
        while size >= smallest:
            extent = text_extent(text, font, size, lang)
            if (extent[2] - extent[0]) + 2 * max(8, size // 3) + 2 * margin <= canvas:
                return SignText(text, lang, font, size, extent)
            size -= 2
    raise RuntimeError(f"no {lang} sign text fits a {canvas}-px image")  # options forbid this


def _compose_sign(rng: np.random.Generator, lang: str) -> str:
    roll = rng.random()
    numbered = _SIGN_NUMBERED[lang]
    words = _SIGN_WORDS[lang]
    if roll < 0.4:
        text = _pick(rng, words)
    elif roll < 0.6:
        text = _pick(rng, _SIGN_PHRASES[lang])
    elif roll < 0.85 or not numbered:
        # Two different sign words ("hotel garden"): hundreds of strings per language, so a
        # model has to read the letters rather than recognise a few dozen pictures of words.
        first, second = rng.choice(len(words), size=2, replace=False)
        text = f"{words[int(first)]} {words[int(second)]}"
    else:
        text = f"{_pick(rng, numbered)} {int(rng.integers(1, 100))}"
    if lang != "ar":
        case = rng.random()
        text = text.upper() if case < 0.35 else text.title() if case < 0.65 else text
    return unicodedata.normalize("NFC", text)


def _sign_variants(text: str, lang: str) -> list[str]:
    """What careful annotators write instead of the exact text: other case, a dropped accent."""
    forms = [text.lower(), text.upper(), text.title()] if lang != "ar" else []
    if lang == "ru":
        forms.append(text.replace("ё", "е").replace("Ё", "Е"))
    elif lang == "ar":
        forms.append(text.replace("أ", "ا").replace("إ", "ا").replace("آ", "ا"))
    else:
        bare = "".join(
            c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)
        )
        forms += [bare, bare.lower()]
    return _distinct([unicodedata.normalize("NFC", f) for f in forms], exclude=text)


def _sign_typos(text: str) -> list[str]:
    """Careless minority answers: one letter dropped, or two neighbours swapped."""
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    forms = []
    if len(letters) > 2:
        i = letters[len(letters) // 2]
        forms.append(text[:i] + text[i + 1 :])
        j = letters[1]
        if j + 1 < len(text) and text[j + 1].isalpha():
            forms.append(text[:j] + text[j + 1] + text[j] + text[j + 2 :])
    return _distinct(forms, exclude=text)


# --- questions and answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A question about a scene with its true answer and what annotators may say instead:
    ``variants`` mean the same thing (``two`` for ``2``), ``wrong`` are plausible mistakes."""

    family: str
    question: str
    truth: str
    answer_type: str
    variants: tuple[str, ...] = ()
    wrong: tuple[str, ...] = ()


_COLOUR_VARIANTS = {
    "red": ("dark red", "bright red"),
    "orange": ("dark orange", "light orange"),
    "yellow": ("gold", "golden"),
    "green": ("dark green", "light green"),
    "blue": ("dark blue", "navy", "royal blue"),
    "purple": ("violet", "dark purple"),
}
_COLOUR_MISTAKES = {
    "red": ("orange", "pink"),
    "orange": ("red", "yellow"),
    "yellow": ("orange",),
    "green": ("blue", "teal"),
    "blue": ("purple", "teal"),
    "purple": ("blue", "pink"),
}
_KIND_VARIANTS = {
    "circle": ("round", "oval"),
    "square": ("box", "rectangle"),
    "triangle": ("triangular",),
    "star": ("star shape",),
    "cross": ("plus", "plus sign"),
}
_KIND_MISTAKES = {
    "circle": ("square",),
    "square": ("circle", "diamond"),
    "triangle": ("star",),
    "star": ("cross", "triangle"),
    "cross": ("star",),
}
_DIRECTIONS = {
    # name: (phrase, axis, sign): the extreme shape has the smallest (sign 1) or largest
    # (sign -1) coordinate along the axis (0 = x, 1 = y).
    "left": ("on the far left", 0, 1),
    "right": ("on the far right", 0, -1),
    "top": ("at the top", 1, 1),
    "bottom": ("at the bottom", 1, -1),
}
_RELATIONS = {"left": "to the left of", "right": "to the right of", "up": "above", "down": "below"}


def scene_questions(
    scene: Scene,
    rng: np.random.Generator,
    limit: int,
    *,
    families: tuple[str, ...] = ALL_FAMILIES,
    kinds: tuple[str, ...] = KINDS,
    colours: tuple[str, ...] = tuple(COLOURS),
) -> list[Question]:
    """Up to ``limit`` questions about the shapes, at most one per family, in random order.

    A question is only asked when its answer is unambiguous in this scene: "What color is the
    square?" needs exactly one square, a relation needs two shapes that can be named uniquely
    and do not overlap along the axis asked about. Only ``families`` are asked; ``kinds`` and
    ``colours`` are those of the world: questions about something absent pick only from them,
    and annotator mistakes that name a kind or colour outside them are left out.
    """
    kinds = tuple(k for k in KINDS if k in kinds)  # canonical order: the set decides
    colours = tuple(c for c in COLOURS if c in colours)
    makers = {
        "color": _colour_q,
        "shape": _shape_q,
        "count": _count_q,
        "count_attr": lambda shapes, rng: _count_attr_q(shapes, rng, kinds, colours),
        "exists": lambda shapes, rng: _exists_q(shapes, rng, kinds, colours),
        "relation": _relation_q,
        "extreme": _extreme_q,
    }
    chosen = [makers[family] for family in ALL_FAMILIES if family in families]
    unseen = (set(KINDS) - set(kinds)) | (set(COLOURS) - set(colours))
    questions = []
    for index in rng.permutation(len(chosen)):
        question = chosen[int(index)](scene.shapes, rng)
        if question is not None:
            if unseen and set(question.wrong) & unseen:
                question = replace(
                    question, wrong=tuple(w for w in question.wrong if w not in unseen)
                )
            questions.append(question)
    return questions[:limit]


def sign_question(scene: Scene, rng: np.random.Generator) -> Question:
    """The reading question of a sign scene."""
    assert scene.sign is not None
    text, lang = scene.sign.text, scene.sign.lang
    phrasing = _pick(
        rng,
        ("What does the sign say?", "What is written on the sign?", "What text is on the sign?"),
    )
    return Question(
        "sign", phrasing, text, "other", tuple(_sign_variants(text, lang)), tuple(_sign_typos(text))
    )


def _colour_q(shapes: tuple[Shape, ...], rng: np.random.Generator) -> Question | None:
    kinds = Counter(s.kind for s in shapes)
    unique = [s for s in shapes if kinds[s.kind] == 1]
    if not unique:
        return None
    shape = unique[int(rng.integers(len(unique)))]
    return _colour_answer("color", f"What color is the {shape.kind}?", shape.color)


def _shape_q(shapes: tuple[Shape, ...], rng: np.random.Generator) -> Question | None:
    colours = Counter(s.color for s in shapes)
    unique = [s for s in shapes if colours[s.color] == 1]
    if not unique:
        return None
    shape = unique[int(rng.integers(len(unique)))]
    phrasing = _pick(rng, ("What shape is the {} object?", "What is the {} shape?"))
    return _kind_answer("shape", phrasing.format(shape.color), shape.kind)


def _count_q(shapes: tuple[Shape, ...], rng: np.random.Generator) -> Question:
    phrasing = _pick(
        rng,
        ("How many shapes are there?", "How many shapes are in the picture?", "How many objects?"),
    )
    return _number_answer("count", phrasing, len(shapes))


def _count_attr_q(
    shapes: tuple[Shape, ...],
    rng: np.random.Generator,
    kinds: tuple[str, ...] = KINDS,
    colours: tuple[str, ...] = tuple(COLOURS),
) -> Question:
    if rng.random() < 0.5:
        present = sorted({s.color for s in shapes})
        colour = _pick(rng, present) if rng.random() < 0.7 else _pick(rng, colours)
        count = sum(s.color == colour for s in shapes)
        return _number_answer("count_attr", f"How many {colour} shapes are there?", count)
    present = sorted({s.kind for s in shapes})
    kind = _pick(rng, present) if rng.random() < 0.7 else _pick(rng, kinds)
    count = sum(s.kind == kind for s in shapes)
    return _number_answer("count_attr", f"How many {PLURALS[kind]} are there?", count)


def _exists_q(
    shapes: tuple[Shape, ...],
    rng: np.random.Generator,
    kinds: tuple[str, ...] = KINDS,
    colours: tuple[str, ...] = tuple(COLOURS),
) -> Question:
    present = sorted({(s.color, s.kind) for s in shapes})
    absent = [(c, k) for c in colours for k in kinds if (c, k) not in present]
    if rng.random() < 0.5 or not absent:  # a tiny world may show every pair there is
        colour, kind = _pick(rng, present)
    else:
        # Half of the "no" cases are near misses (right kind or right colour), so the answer
        # needs colour and shape bound together, not either alone.
        near = [(c, k) for c, k in absent if any(c == pc or k == pk for pc, pk in present)]
        colour, kind = _pick(rng, near if near and rng.random() < 0.5 else absent)
    truth = "yes" if (colour, kind) in present else "no"
    return _yes_no("exists", f"Is there {_article(colour)} {colour} {kind}?", truth)


def _relation_q(shapes: tuple[Shape, ...], rng: np.random.Generator) -> Question | None:
    names = _unique_names(shapes)
    pairs = [
        (a, b, axis)
        for a in names
        for b in names
        if a < b
        for axis in (0, 1)
        if _separated(shapes[a], shapes[b], axis)
    ]
    if not pairs:
        return None
    a, b, axis = pairs[int(rng.integers(len(pairs)))]
    if rng.random() < 0.5:
        a, b = b, a
    word = _pick(rng, ("left", "right") if axis == 0 else ("up", "down"))
    a_first = shapes[a].box[axis + 2] <= shapes[b].box[axis]  # a lies left of / above b
    truth = "yes" if a_first == (word in ("left", "up")) else "no"
    question = f"Is the {names[a]} {_RELATIONS[word]} the {names[b]}?"
    return _yes_no("relation", question, truth)


def _extreme_q(shapes: tuple[Shape, ...], rng: np.random.Generator) -> Question | None:
    options = []
    for name, (phrase, axis, sign) in _DIRECTIONS.items():
        ordered = sorted(shapes, key=lambda s: sign * s.center[axis])
        if len(ordered) > 1 and all(_separated(ordered[0], s, axis) for s in ordered[1:]):
            options.append((name, phrase, ordered[0]))
    if not options:
        return None
    _, phrase, shape = options[int(rng.integers(len(options)))]
    if rng.random() < 0.5:
        return _colour_answer("extreme", f"What color is the shape {phrase}?", shape.color)
    return _kind_answer("extreme", f"What shape is {phrase}?", shape.kind)


def _unique_names(shapes: tuple[Shape, ...]) -> dict[int, str]:
    """How each shape can be named unambiguously: "circle" or "red circle" (or not at all)."""
    kinds = Counter(s.kind for s in shapes)
    pairs = Counter((s.color, s.kind) for s in shapes)
    names = {}
    for i, shape in enumerate(shapes):
        if kinds[shape.kind] == 1:
            names[i] = shape.kind
        elif pairs[(shape.color, shape.kind)] == 1:
            names[i] = f"{shape.color} {shape.kind}"
    return names


def _separated(a: Shape, b: Shape, axis: int) -> bool:
    """True when the two boxes do not overlap along ``axis`` (0 = x, 1 = y)."""
    return a.box[axis + 2] <= b.box[axis] or b.box[axis + 2] <= a.box[axis]


def _colour_answer(family: str, question: str, colour: str) -> Question:
    return Question(
        family, question, colour, "other", _COLOUR_VARIANTS[colour], _COLOUR_MISTAKES[colour]
    )


def _kind_answer(family: str, question: str, kind: str) -> Question:
    return Question(family, question, kind, "other", _KIND_VARIANTS[kind], _KIND_MISTAKES[kind])


def _number_answer(family: str, question: str, count: int) -> Question:
    wrong = tuple(str(c) for c in (count - 1, count + 1) if c >= 0)
    variants = (NUMBER_WORDS[count], "none") if count == 0 else (NUMBER_WORDS[count],)
    return Question(family, question, str(count), "number", variants, wrong)


def _yes_no(family: str, question: str, truth: str) -> Question:
    variant = ("yeah",) if truth == "yes" else ("nope",)
    return Question(
        family, question, truth, "yes/no", variant, ("no" if truth == "yes" else "yes",)
    )


def ten_answers(question: Question, rng: np.random.Generator) -> tuple[tuple[str, str], ...]:
    """Ten ``(answer, answer_confidence)`` pairs with realistic annotator variation.

    At least six are the exact truth, so the truth is always the clear majority (and VQA
    accuracy of the truth is 1); up to four are synonyms ("two", "navy", "yeah": rarer for
    yes/no) and up to two are plausible mistakes.
    """
    wrong = int(rng.choice(3, p=(0.6, 0.3, 0.1))) if question.wrong else 0
    if not question.variants:
        variants = 0
    elif question.answer_type == "yes/no":
        variants = int(rng.choice(2, p=(0.85, 0.15)))
    else:
        variants = int(rng.choice(4, p=(0.4, 0.3, 0.2, 0.1)))
    variants = min(variants, 4 - wrong)
    answers = [
        (question.truth, "yes" if rng.random() < 0.9 else "maybe")
        for _ in range(10 - wrong - variants)
    ]
    answers += [
        (_pick(rng, question.variants), "yes" if rng.random() < 0.7 else "maybe")
        for _ in range(variants)
    ]
    answers += [
        (_pick(rng, question.wrong), _pick(rng, ("maybe", "maybe", "no", "yes")))
        for _ in range(wrong)
    ]
    order = rng.permutation(len(answers))
    return tuple(answers[int(i)] for i in order)


# --- captions ------------------------------------------------------------------------------------

_REGIONS = (
    ("near the top left", "near the top", "near the top right"),
    ("on the left", "in the center", "on the right"),
    ("near the bottom left", "near the bottom", "near the bottom right"),
)


def scene_captions(scene: Scene, rng: np.random.Generator) -> tuple[str, ...]:
    """Five references, each from a different template, all exact about the scene.

    Every caption names every shape (colour and kind, grouped "two red circles"), some add
    sizes, the background, the left-to-right order or the position; a sign is mentioned in
    every caption of a sign scene, with its text in most.
    """
    shapes = scene.shapes
    n = len(shapes)
    listing = _join(_phrases(shapes, sizes=False))
    background = _background_phrase(scene)
    templates = [
        f"{listing} on {background}",
        f"{NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'}: {listing}",
        f"{_pick(rng, ('a picture', 'an image', 'a drawing'))} of {listing}",
        f"{_join(_phrases(shapes, sizes=True))} drawn on {background}",
        f"this picture shows {listing}",
        f"a simple scene with {listing}",
    ]
    by_x = sorted(shapes, key=lambda s: s.center[0])
    if n == 1:
        shape = shapes[0]
        templates.append(
            f"{_article(shape.color)} {shape.color} {shape.kind} {_region(scene, shape)}"
            " of the picture"
        )
    elif all(b.center[0] - a.center[0] >= 6 for a, b in pairwise(by_x)):
        templates.append(f"from left to right: {_join([_one(s) for s in by_x])}")
    chosen = [templates[int(i)] for i in rng.permutation(len(templates))[:5]]
    captions = []
    for k, caption in enumerate(chosen):
        if scene.sign is not None:
            caption += _sign_clause(scene, rng, with_text=k != 4)
        if rng.random() < 0.5:
            caption = caption[0].upper() + caption[1:]
        if rng.random() < 0.4:
            caption += "."
        captions.append(caption)
    return tuple(captions)


def _phrases(shapes: tuple[Shape, ...], *, sizes: bool) -> list[str]:
    groups: Counter[tuple[str, str, str]] = Counter(
        (s.size if sizes else "", s.color, s.kind) for s in shapes
    )
    phrases = []
    for (size, colour, kind), count in groups.items():
        words = " ".join(w for w in (size, colour) if w)
        if count == 1:
            phrases.append(f"{_article(words)} {words} {kind}")
        else:
            phrases.append(f"{NUMBER_WORDS[count]} {words} {PLURALS[kind]}")
    return phrases


def _one(shape: Shape) -> str:
    return f"{_article(shape.color)} {shape.color} {shape.kind}"


def _background_phrase(scene: Scene) -> str:
    bg = scene.background
    if bg.style == "gradient":
        return f"a background fading from {bg.name} to {bg.second}"
    if bg.style == "textured":
        return f"a textured {bg.name} background"
    return f"a {bg.name} background"


def _region(scene: Scene, shape: Shape) -> str:
    x, y = shape.center
    col = min(2, int(3 * x / scene.width))
    row = min(2, int(3 * y / scene.height))
    return _REGIONS[row][col]


def _sign_clause(scene: Scene, rng: np.random.Generator, *, with_text: bool) -> str:
    sign = scene.sign
    assert sign is not None
    if not with_text:
        return f", with a sign at the {sign.position}"
    return _pick(
        rng,
        (
            f" and a sign that says {sign.text}",
            f", {'below' if sign.position == 'top' else 'above'} a sign reading {sign.text}",
            f", with a sign at the {sign.position} that says {sign.text}",
        ),
    )


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# --- one scene, end to end (runs in worker processes) -------------------------------------------


@dataclass(frozen=True)
class _Job:
    seed: int
    image_id: int
    split: str
    sign_lang: str | None
    options: WorldOptions
    staging: str


@dataclass(frozen=True)
class _Item:
    image_id: int
    split: str
    image: str
    scene: dict[str, Any]
    questions: tuple[tuple[int, Question, tuple[tuple[str, str], ...]], ...]
    sign: tuple[int, Question, tuple[tuple[str, str], ...]] | None
    captions: tuple[str, ...]


def image_path(split: str, image_id: int) -> str:
    """Manifest path of an image: ``images/<split>/COCO_<split>_<image_id:012d>.png``."""
    return f"images/{split}/{layouts.coco_image_name(split, image_id)}"


def _make_item(job: _Job) -> _Item:
    options = job.options

    def stream(kind: int) -> np.random.Generator:
        return np.random.default_rng([job.seed, kind, job.image_id])

    # Canonical order (that of KINDS and COLOURS), so the output depends only on the sets.
    kinds = tuple(k for k in KINDS if k in options.kinds)
    colours = tuple(c for c in COLOURS if c in options.colours)
    scene_rng = stream(_STREAM_SCENE)
    sign_text = None
    canvas = options.image_size
    if job.sign_lang is not None:
        canvas = options.sign_image_size
        sign_text = sample_sign_text(scene_rng, job.sign_lang, canvas)
    scene = sample_scene(
        scene_rng,
        size=canvas,
        unit=options.image_size,
        max_shapes=options.max_shapes,
        sign=sign_text,
        kinds=kinds,
        colours=colours,
    )
    image = render_scene(scene, stream(_STREAM_PIXELS))
    relative = image_path(job.split, job.image_id)
    # A plain write: the whole staging folder is discarded if anything fails.
    target = Path(job.staging) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encode_png(image))
    qa_rng = stream(_STREAM_QA)
    questions = tuple(
        (job.image_id * 1000 + k, q, ten_answers(q, qa_rng))
        for k, q in enumerate(
            scene_questions(
                scene,
                qa_rng,
                options.questions_per_image,
                families=options.families,
                kinds=kinds,
                colours=colours,
            )
        )
    )
    sign = None
    if scene.sign is not None:
        q = sign_question(scene, qa_rng)
        sign = (job.image_id * 1000 + SIGN_QID_OFFSET, q, ten_answers(q, qa_rng))
    captions = scene_captions(scene, stream(_STREAM_CAPTION))
    return _Item(job.image_id, job.split, relative, scene.to_json(), questions, sign, captions)


def encode_png(image: Image.Image) -> bytes:
    """PNG with fixed settings (no metadata, no optimizer search): same pixels, same bytes.

    Level 3 is about three times faster than zlib's default here for files only 1 % larger.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


# --- the whole world -----------------------------------------------------------------------------


def plan_splits(options: WorldOptions) -> tuple[list[str], dict[int, str | None]]:
    """The split of every image (``image_id`` = index + 1) and the sign language of sign scenes.

    Splits are by image, so no image is in two splits. Each split gets its share of sign scenes,
    with languages dealt in turn, so every split can test reading in every language.
    """
    n = options.n
    counts = {}
    for name, frac in (("val", options.val_frac), ("test", options.test_frac)):
        count = math.floor(n * frac + 0.5)
        counts[name] = max(1, count) if frac > 0 and n >= 3 else count
    while counts["val"] + counts["test"] > n - 1 and counts["val"] + counts["test"] > 0:
        counts["test" if counts["test"] >= counts["val"] else "val"] -= 1  # train keeps one
    order = np.random.default_rng([options.seed, _STREAM_SPLIT]).permutation(n)
    splits = ["train"] * n
    for position, index in enumerate(order):
        if position < counts["val"]:
            splits[int(index)] = "val"
        elif position < counts["val"] + counts["test"]:
            splits[int(index)] = "test"
    sign_rng = np.random.default_rng([options.seed, _STREAM_SIGNS])
    langs: dict[int, str | None] = dict.fromkeys(range(1, n + 1))
    turn = 0  # dealt across splits too, so small val/test splits do not all get the first one
    for split in SPLITS:
        members = [i + 1 for i in range(n) if splits[i] == split]
        chosen = sign_rng.permutation(len(members))[
            : math.floor(len(members) * options.sign_share + 0.5)
        ]
        for position in chosen:
            langs[members[int(position)]] = options.sign_langs[turn % len(options.sign_langs)]
            turn += 1
    return splits, langs


def synth_world(
    out: Path, options: WorldOptions, *, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Generate the world into ``out`` (staged, renamed into place when complete); return the
    card."""
    options.validate()
    splits, langs = plan_splits(options)
    out = Path(out)
    with staged_output_dir(out, overwrite=overwrite) as staging:
        jobs = [
            _Job(options.seed, i + 1, splits[i], langs[i + 1], options, str(staging))
            for i in range(options.n)
        ]
        items = list(_run_jobs(jobs, options.workers, progress))
        records = _write_world(staging, items)
        manifest_file = staging / MANIFEST_NAME
        write_manifest(manifest_file, records)
        notes = {
            "images": len(items),
            "sign scenes": sum(item.sign is not None for item in items),
            "vqa questions": sum(len(item.questions) for item in items),
            "sign questions": sum(item.sign is not None for item in items),
            "captions": sum(len(item.captions) for item in items),
        }
        card = build_card(
            records,
            manifest_file=manifest_file,
            importer=SOURCE,
            options={**asdict(options), "overwrite": overwrite},
            source_path=None,
            skipped=SkipLog(),
            notes=notes,
        )
        write_card(staging, card)
        if options.preview:
            atomic_write_bytes(staging / "preview.png", encode_png(_preview(staging, items)))
        write_marker(staging, "manifest", source=SOURCE)
    return card


def _run_jobs(jobs: list[_Job], workers: int, progress: bool) -> Iterator[_Item]:
    """Results in job order; in-process for one worker, else in a pool of processes.

    The pool is created and every job submitted before the progress display starts its refresh
    thread, so worker processes are never forked from a process with a live thread.
    """
    if workers == 1 or len(jobs) == 1:
        results: Iterator[_Item] = map(_make_item, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=min(workers, os.cpu_count() or workers))
        chunk = max(1, min(32, math.ceil(len(jobs) / (workers * 4))))
        results = pool.map(_make_item, jobs, chunksize=chunk)
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"rendering {len(jobs)} scenes", total=len(jobs))
            for item in results:
                bar.advance(task)
                yield item
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _write_world(staging: Path, items: list[_Item]) -> list[Record]:
    """Write every layout and ``scenes.json``; return the manifest records."""
    by_split = {split: [item for item in items if item.split == split] for split in SPLITS}
    records: list[Record] = []
    caption_images: list[layouts.CaptionImage] = []
    for split in SPLITS:
        members = by_split[split]
        if not members:
            continue
        vqa_items, sign_items = [], []
        for item in members:
            width, height = item.scene["width"], item.scene["height"]
            caption_images.append(
                layouts.CaptionImage(
                    image_id=item.image_id,
                    folder=split,
                    file_name=layouts.coco_image_name(split, item.image_id),
                    width=width,
                    height=height,
                    split=split,
                    captions=item.captions,
                )
            )
            sign = item.scene["sign"]
            records.append(
                Record.create(
                    id=f"cap-{item.image_id:06d}",
                    image=item.image,
                    text=item.captions[0],
                    lang="en",
                    source=SOURCE,
                    split=split,
                    task="caption",
                    meta={
                        "image_id": item.image_id,
                        "references": list(item.captions),
                        "width": width,
                        "height": height,
                        **({"sign_lang": sign["lang"]} if sign else {}),
                    },
                )
            )
            entries = [("vqav2", *q) for q in item.questions]
            if item.sign is not None:
                entries.append(("signs", *item.sign))
            for file_set, qid, question, answers in entries:
                vqa_item = layouts.VqaItem(
                    question_id=qid,
                    image_id=item.image_id,
                    question=question.question,
                    answer_type=question.answer_type,
                    answers=answers,
                    question_type=layouts.vqa_question_type(question.question),
                )
                (sign_items if file_set == "signs" else vqa_items).append(vqa_item)
                records.append(_vqa_record(item, split, file_set, question, vqa_item, sign))
        layouts.write_vqa(staging / "vqav2", split, vqa_items, info=_INFO, license=_LICENSE)
        layouts.write_vqa(staging / "signs", split, sign_items, info=_INFO, license=_LICENSE)
        split_images = [c for c in caption_images if c.split == split]
        layouts.write_json(
            staging / "coco" / layouts.coco_captions_name(split),
            layouts.coco_captions_document(
                split_images, info=_INFO, licenses=[{**_LICENSE, "id": 1}]
            ),
        )
    for dataset in layouts.KARPATHY_DATASETS:
        layouts.write_json(
            staging / "karpathy" / f"dataset_{dataset}.json",
            layouts.karpathy_document(caption_images, dataset=dataset),
        )
    atomic_write_json(
        staging / "scenes.json",
        {
            "schema": SCENES_SCHEMA,
            "scenes": [
                {"image_id": item.image_id, "split": item.split, "image": item.image, **item.scene}
                for item in sorted(items, key=lambda item: item.image_id)
            ],
        },
    )
    return records


def _vqa_record(
    item: _Item,
    split: str,
    file_set: str,
    question: Question,
    vqa_item: layouts.VqaItem,
    sign: dict[str, Any] | None,
) -> Record:
    meta: dict[str, Any] = {
        "question": question.question,
        "answers": [answer for answer, _ in vqa_item.answers],
        "answer_type": vqa_item.answer_type,
        "question_type": vqa_item.question_type,
        "question_id": vqa_item.question_id,
        "image_id": item.image_id,
        "family": question.family,
        "set": file_set,
        "width": item.scene["width"],
        "height": item.scene["height"],
    }
    if file_set == "signs" and sign is not None:
        meta["lang"] = sign["lang"]
    return Record.create(
        id=f"vqa-{vqa_item.question_id}",
        image=item.image,
        text=vqa_item.multiple_choice_answer,
        lang="en",
        source=SOURCE,
        split=split,
        task="vqa",
        meta=meta,
    )


def _preview(staging: Path, items: list[_Item]) -> Image.Image:
    """Twelve plain scenes and four sign scenes with one question and answer each."""
    plain = [item for item in items if item.sign is None][:12]
    signs = [item for item in items if item.sign is not None][:4]
    chosen = sorted(plain + signs, key=lambda item: item.image_id)
    cell = max(item.scene["width"] for item in chosen) if chosen else 224
    images, labels = [], []
    for item in chosen:
        with Image.open(staging / item.image) as opened:
            image = opened.convert("RGB")
        if image.width < cell:
            factor = cell // image.width
            image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
        images.append(image)
        _, question, answers = item.sign if item.sign is not None else item.questions[0]
        best = Counter(a for a, _ in answers).most_common(1)[0][0]
        if not covers(font_by_name(_LABEL_FONT), best):  # the sheet's labels are Latin only
            best = f"({item.scene['sign']['lang']} text)"
        labels.append(f"{question.question} {best}")
    return contact_sheet(images, labels, columns=4, cell_width=cell)


def _pick(rng: np.random.Generator, choices: tuple[Any, ...] | list[Any]) -> Any:
    return choices[int(rng.integers(len(choices)))]


def _distinct(forms: list[str], *, exclude: str) -> list[str]:
    return [f for f in dict.fromkeys(forms) if f and f != exclude]
