"""Generated text for synthetic manuscript lines: pseudo-words with each language's statistics.

Nothing here is copied from a corpus. Words are sampled letter by letter from small frequency
tables (written from general knowledge of each language) with a consonant/vowel rhythm, so they
look and tokenize like the language without being real sentences a model could memorize; a few
dozen very common function words and endings keep the lines plausible. Russian follows the
pre-reform orthography of the manuscripts we target (Digital Peter era and later): ``ъ`` after
every word-final consonant, the decimal ``і`` before vowels and ``й``, ``ѣ`` for a share of
``е``, and the rare ``ѳ`` and ``ѵ``. Italian gets word-final accents and elisions (``dell'``),
Arabic the position-bound letters (``ة ى أ إ ء``) and the lam-alef sequence, stored in logical
order; the renderer shapes and lays it out right to left.

Randomness comes from a :class:`random.Random` the caller seeds per line, so a line's text
depends only on (seed, language, index) and never on worker scheduling.
"""

from __future__ import annotations

import random
import re
from bisect import bisect
from dataclasses import dataclass, field
from itertools import accumulate

from vlm_retain.errors import InputError
from vlm_retain.text import clean_text

LANGS = ("ru", "en", "it", "ar")
SCRIPTS = {"ru": "cyrillic", "en": "latin", "it": "latin", "ar": "arabic"}

#: Characters each language's lines must show in any reasonably sized sample (tests rely on it).
SPECIAL_CHARS = {
    "ru": "ъіѣѳѵ",
    "en": "",
    "it": "àèéìòù'",
    "ar": "ةىأإء",
}
#: Multi-character sequences that must occur too (the lam-alef ligature is a shaping case).
SPECIAL_SEQUENCES = {"ru": (), "en": (), "it": (), "ar": ("لا",)}


class _Table:
    """A weighted choice among strings, sampled in O(log n) with cumulative weights."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.items = list(weights)
        self.cum = list(accumulate(weights.values()))

    def pick(self, rnd: random.Random) -> str:
        return self.items[bisect(self.cum, rnd.random() * self.cum[-1])]


@dataclass(frozen=True)
class LanguageModel:
    """The statistics of one language's pseudo-text.

    ``vowels`` and ``consonants`` are letter frequencies (per cent of running text; the split
    lets words alternate like real syllables while keeping the letters' relative rates).
    ``lengths[k]`` weighs a word of ``k + 1`` letters. ``function_words`` are drawn instead of a
    pseudo-word with probability ``p_function``; ``endings`` replace a word's tail with
    probability ``p_ending``.
    """

    vowels: dict[str, float]
    consonants: dict[str, float]
    lengths: tuple[float, ...]
    function_words: dict[str, float]
    p_function: float
    endings: dict[str, float] = field(default_factory=dict)
    p_ending: float = 0.0
    words_per_line: tuple[int, int] = (2, 5)
    max_chars: int = 34
    p_capital_first: float = 0.6
    p_capital_word: float = 0.06
    comma: str = ","
    final_marks: dict[str, float] = field(default_factory=dict)
    p_final_mark: float = 0.35
    p_comma: float = 0.07
    p_number: float = 0.1
    digits: str = "0123456789"


# fmt: off
RU = LanguageModel(
    vowels={"о": 10.97, "е": 8.45, "а": 8.01, "и": 7.35, "у": 2.62, "я": 2.01, "ы": 1.90,
            "ю": 0.64, "э": 0.32},
    consonants={"н": 6.70, "т": 6.26, "с": 5.47, "р": 4.73, "в": 4.54, "л": 4.40, "к": 3.49,
                "м": 3.21, "д": 2.98, "п": 2.81, "ь": 1.74, "г": 1.70, "з": 1.65, "б": 1.59,
                "ч": 1.44, "й": 1.21, "х": 0.97, "ж": 0.94, "ш": 0.73, "ц": 0.48, "щ": 0.36,
                "ф": 0.26},
    lengths=(0, 6, 9, 11, 12, 11, 10, 8, 6, 4, 2, 1),
    function_words={"и": 8, "въ": 6, "не": 4, "на": 4, "съ": 3, "что": 3, "по": 2, "къ": 2,
                    "изъ": 1.5, "отъ": 1.5, "какъ": 1.5, "онъ": 1.5, "его": 1.2, "ея": 0.6,
                    "для": 1, "безъ": 0.6, "сіе": 0.5, "при": 1, "о": 1, "а": 1.5},
    p_function=0.22,
    endings={"ія": 3, "іе": 3, "ій": 2, "ый": 2, "ой": 2, "ая": 2, "аго": 2, "ыя": 1.5,
             "ыхъ": 1.5, "ость": 1.5, "ать": 1.5, "ѣть": 1, "ѣ": 2, "ѣніе": 1, "ами": 1},
    p_ending=0.3,
    final_marks={".": 10, ";": 1, ":": 1, "!": 0.6, "?": 0.8},
)

EN = LanguageModel(
    vowels={"e": 12.7, "a": 8.2, "o": 7.5, "i": 7.0, "u": 2.8, "y": 1.0},
    consonants={"t": 7.0, "n": 6.7, "s": 5.3, "h": 3.6, "r": 6.0, "d": 4.3, "l": 4.0, "c": 2.4,
                "m": 2.4, "w": 2.4, "f": 2.2, "g": 1.7, "p": 1.9, "b": 1.5, "v": 1.0, "k": 0.8,
                "th": 2.0, "sh": 0.5, "ch": 0.4, "ng": 0.4, "ll": 0.3, "ss": 0.3,
                "j": 0.15, "x": 0.15, "qu": 0.1, "z": 0.07, "y": 0.9},
    lengths=(0, 13, 17, 15, 12, 10, 9, 7, 5, 4, 2, 1),
    function_words={"the": 12, "of": 7, "and": 6, "to": 5, "in": 4, "a": 4, "is": 2, "that": 2,
                    "for": 2, "it": 1.5, "was": 1.5, "with": 1.5, "by": 1.2, "his": 1,
                    "as": 1, "on": 1, "be": 0.8, "at": 0.8, "from": 0.8, "which": 0.6},
    p_function=0.3,
    endings={"ed": 3, "ing": 3, "ly": 1.5, "tion": 1.5, "er": 2, "es": 2, "ness": 0.5,
             "ment": 0.6, "ous": 0.4, "ight": 0.4},
    p_ending=0.25,
    final_marks={".": 10, ";": 1, ":": 1, "!": 0.5, "?": 0.8},
)

IT = LanguageModel(
    vowels={"e": 11.8, "a": 11.7, "i": 11.3, "o": 9.8, "u": 3.0},
    consonants={"n": 6.9, "l": 6.5, "r": 6.4, "t": 5.6, "s": 5.0, "c": 4.5, "d": 3.7, "p": 3.1,
                "m": 2.5, "v": 2.1, "g": 1.6, "ch": 0.8, "gh": 0.2, "gli": 0.3, "gn": 0.3,
                "f": 1.2, "b": 0.9, "z": 0.5, "qu": 0.5, "sc": 0.4},
    lengths=(0, 10, 12, 13, 13, 12, 10, 8, 6, 4, 2, 1),
    function_words={"di": 6, "e": 5, "il": 4, "la": 4, "che": 4, "a": 3, "per": 2.5, "in": 2.5,
                    "un": 2, "non": 1.5, "con": 1.5, "si": 1.5, "da": 1.5, "del": 1.5,
                    "della": 1.2, "le": 1.2, "è": 2.5, "più": 0.8, "però": 0.4, "perché": 0.5,
                    "così": 0.5, "già": 0.4},
    p_function=0.28,
    endings={"zione": 2, "mente": 1.5, "ato": 2, "ità": 1.5, "ando": 1, "ere": 1.5,
             "etto": 1, "ù": 0.6, "ò": 0.8, "ì": 0.4, "é": 0.3, "è": 0.3},
    p_ending=0.25,
    final_marks={".": 10, ";": 1, ":": 1, "!": 0.5, "?": 0.8},
)

AR = LanguageModel(
    vowels={},  # an abjad: no vowel rhythm, letters are drawn from ``consonants`` alone
    consonants={"ا": 12.5, "ل": 10.5, "ي": 7.5, "م": 6.5, "و": 6.0, "ن": 6.0, "ر": 4.5, "ب": 4.0,
                "ت": 4.0, "ه": 3.5, "ع": 3.5, "ف": 3.0, "د": 2.8, "ق": 2.5, "س": 2.5, "ك": 2.5,
                "ح": 2.0, "ج": 1.4, "ش": 1.0, "ص": 1.0, "ط": 0.9, "خ": 0.9, "ذ": 0.8,
                "ض": 0.6, "ث": 0.6, "ز": 0.5, "غ": 0.4, "ظ": 0.2, "أ": 0.6, "ئ": 0.3,
                "ؤ": 0.2},
    lengths=(0, 4, 14, 16, 12, 7, 3, 1),
    function_words={"في": 6, "من": 6, "على": 4, "إلى": 3, "أن": 3, "ما": 2, "لا": 2.5,
                    "عن": 2, "مع": 1.5, "هذا": 1.5, "التي": 1.2, "الذي": 1.2, "قد": 1,
                    "كان": 1.2, "ثم": 1, "أو": 1, "بن": 1, "إن": 1},
    p_function=0.25,
    p_capital_first=0.0,
    p_capital_word=0.0,
    comma="،",
    final_marks={".": 10, "؛": 1, "؟": 1, ":": 0.5},
    digits="٠١٢٣٤٥٦٧٨٩",
    max_chars=32,
)

MODELS = {"ru": RU, "en": EN, "it": IT, "ar": AR}

_RU_VOWELS = set("аеёиоуыэюяѣ")
_RU_NO_HARD_SIGN = _RU_VOWELS | set("йьъіѵ")
_IT_ELISIONS = {"l'": 4, "dell'": 2, "un'": 1.5, "all'": 1, "nell'": 1, "dall'": 0.6,
                "sull'": 0.4, "d'": 0.8, "c'": 0.3}
_IT_VOWELS = set("aeiouàèéìòù")
_IT_FINAL_ACCENTS = {"à": 3, "è": 1.5, "é": 0.8, "ì": 0.8, "ò": 1.5, "ù": 1.2}
# fmt: on


@dataclass(frozen=True)
class _Compiled:
    """A model's tables in sampling form."""

    vowels: _Table | None
    consonants: _Table
    lengths: _Table
    functions: _Table
    endings: _Table | None
    finals: _Table


_COMPILED: dict[int, _Compiled] = {}


def _tables(model: LanguageModel) -> _Compiled:
    """Cumulative tables of a model, built once per process (models are module constants)."""
    key = id(model)
    if key not in _COMPILED:
        _COMPILED[key] = _Compiled(
            vowels=_Table(model.vowels) if model.vowels else None,
            consonants=_Table(model.consonants),
            lengths=_Table({str(k + 1): w for k, w in enumerate(model.lengths) if w}),
            functions=_Table(model.function_words),
            endings=_Table(model.endings) if model.endings else None,
            finals=_Table(model.final_marks),
        )
    return _COMPILED[key]


def _letters(model: LanguageModel, rnd: random.Random, length: int) -> str:
    """``length`` units alternating consonant clusters and vowels like real syllables."""
    tables = _tables(model)
    vowels, consonants = tables.vowels, tables.consonants
    if vowels is None:
        return "".join(consonants.pick(rnd) for _ in range(length))
    out: list[str] = []
    run_vowel = run_consonant = 0
    while len(out) < length:
        if not out:
            p_vowel = 0.3
        elif len(out) == 1 and run_consonant:
            p_vowel = 0.85  # word-initial clusters are rare (no "Tdhun")
        elif run_vowel:
            p_vowel = 0.12 if run_vowel == 1 else 0.0
        else:
            p_vowel = 0.55 if run_consonant == 1 else 0.95
        if rnd.random() < p_vowel:
            out.append(vowels.pick(rnd))
            run_vowel, run_consonant = run_vowel + 1, 0
        else:
            out.append(consonants.pick(rnd))
            run_vowel, run_consonant = 0, run_consonant + 1
    return "".join(out)


def _word(lang: str, rnd: random.Random) -> str:
    model = MODELS[lang]
    tables = _tables(model)
    if rnd.random() < model.p_function:
        return tables.functions.pick(rnd)
    length = int(tables.lengths.pick(rnd))
    endings = tables.endings
    stem = _letters(model, rnd, length)
    if endings is not None and length >= 3 and rnd.random() < model.p_ending:
        ending = endings.pick(rnd)
        stem = stem[: max(2, length - len(ending))] + ending
    return {"ru": _russian, "en": _english, "it": _italian, "ar": _arabic}[lang](stem, rnd)


def _russian(word: str, rnd: random.Random) -> str:
    """Fix impossible sequences, then apply pre-reform spelling."""
    chars = list(word)
    for i, ch in enumerate(chars):
        prev = chars[i - 1] if i else ""
        if ch == "й" and prev not in _RU_VOWELS:
            chars[i] = "и"
        elif ch == "ь" and (not prev or prev in _RU_VOWELS or prev == "ь"):
            chars[i] = "н"
        elif ch == "ы" and (not prev or prev in _RU_VOWELS):
            chars[i] = "о"
    # е -> ѣ for about a fifth of the е's (the yat's share in 19th-century texts).
    chars = ["ѣ" if ch == "е" and rnd.random() < 0.2 else ch for ch in chars]
    # Greek loans: ѳ (fita) for т/ф in about 1.5 % of words, ѵ (izhitsa) for a vowel in about 1 %.
    if rnd.random() < 0.015:
        spots = [i for i, ch in enumerate(chars) if ch in "тфдк"] or [0]
        chars[rnd.choice(spots)] = "ѳ"
    if rnd.random() < 0.01:
        spots = [i for i, ch in enumerate(chars) if ch in "иеуы"]
        if spots:
            chars[rnd.choice(spots)] = "ѵ"
    # The decimal і before a vowel or й (right to left, so "иі" from an ending becomes "іі").
    for i in range(len(chars) - 2, -1, -1):
        if chars[i] == "и" and (chars[i + 1] in _RU_VOWELS or chars[i + 1] in "йі"):
            chars[i] = "і"
    return _hard_sign("".join(chars))


def _hard_sign(word: str) -> str:
    """Pre-reform rule: a word ending in a consonant is closed with ``ъ``."""
    if word and word[-1] not in _RU_NO_HARD_SIGN and word[-1].isalpha():
        return word + "ъ"
    return word


def _english(word: str, rnd: random.Random) -> str:
    return word


def _italian(word: str, rnd: random.Random) -> str:
    """Italian words end in a vowel; some carry the final accent (città, però)."""
    if word[-1] not in _IT_VOWELS:
        word += rnd.choice("aeio")
    if word[-1] in "aeiou" and len(word) >= 3 and rnd.random() < 0.04:
        word = word[:-1] + _pick(_IT_FINAL_ACCENTS, rnd)
    return word


def _arabic(word: str, rnd: random.Random) -> str:
    """Place the position-bound letters: ة/ى/ء at the end, أ/إ at the start, ال in front."""
    word = re.sub(r"(.)\1\1+", r"\1\1", word)
    if rnd.random() < 0.05:
        cut = rnd.randrange(len(word) + 1)
        word = word[:cut] + "لا" + word[cut:]
    roll = rnd.random()
    if roll < 0.14:
        word += "ة"
    elif roll < 0.19:
        word += "ى"
    elif roll < 0.22:
        word += "اء"
    roll = rnd.random()
    if roll < 0.07:
        word = "أ" + word
    elif roll < 0.1:
        word = "إ" + word
    if rnd.random() < 0.33:
        word = "ال" + word
    if rnd.random() < 0.1:
        word = "و" + word
    return re.sub(r"([اأإ])[اأإ]+", r"\1", word)


def _pick(weights: dict[str, float], rnd: random.Random) -> str:
    return rnd.choices(list(weights), weights=list(weights.values()))[0]


def _number(model: LanguageModel, lang: str, rnd: random.Random) -> str:
    """A year (most manuscripts date things) or a small count, in the language's digits."""
    if rnd.random() < 0.5:
        value = str(rnd.randrange(1690, 1925)) if lang != "ar" else str(rnd.randrange(1100, 1345))
    else:
        value = str(rnd.randrange(1, 100))
    digits = "".join(model.digits[int(d)] for d in value)
    return digits + " г." if lang == "ru" and len(value) == 4 and rnd.random() < 0.5 else digits


def _capitalize(word: str) -> str:
    return word[:1].upper() + word[1:]


def generate_line(lang: str, rnd: random.Random, words: tuple[int, int] | None = None) -> str:
    """One line of pseudo-text in ``lang`` (clean: NFC, single spaces, no edge whitespace).

    ``words`` overrides the language's words-per-line range (a demo wants short lines).
    """
    model = MODELS[lang]
    finals = _tables(model).finals
    n_words = rnd.randint(*(words or model.words_per_line))
    words: list[str] = []
    number_at = rnd.randrange(n_words) if rnd.random() < model.p_number else -1
    length = 0
    for i in range(n_words):
        if i == number_at:
            word = _number(model, lang, rnd)
        elif lang == "it" and rnd.random() < 0.07:
            word = _pick(_IT_ELISIONS, rnd) + _vowel_word("it", rnd)
        else:
            word = _word(lang, rnd)
        capital = model.p_capital_first if i == 0 else model.p_capital_word
        if word[:1].isalpha() and rnd.random() < capital:
            word = _capitalize(word)
        if i < n_words - 1 and rnd.random() < model.p_comma:
            word += model.comma
        if words and length + 1 + len(word) > model.max_chars:
            break
        words.append(word)
        length += len(word) + (1 if len(words) > 1 else 0)
    line = " ".join(words)
    if rnd.random() < model.p_final_mark and line[-1:].isalpha():
        line += finals.pick(rnd)
    elif lang != "ar" and rnd.random() < 0.04 and len(words[-1]) > 4:
        line += "-"  # a word broken at the line end, as scribes did
    return clean_text(line)


def _vowel_word(lang: str, rnd: random.Random) -> str:
    """A pseudo-word starting with a vowel, for an elision (dell'acqua, l'anima)."""
    for _ in range(20):
        word = _word(lang, rnd)
        if word[:1] in _IT_VOWELS and len(word) > 2:
            return word
    return "a" + _word(lang, rnd)


def line_rng(seed: int, lang: str, index: int, attempt: int = 0) -> random.Random:
    """The text RNG of one line: a function of (seed, lang, index, attempt) only."""
    return random.Random(f"synth-htr:text:{seed}:{lang}:{index}:{attempt}")


def lexicon(lang: str, size: int) -> tuple[str, ...]:
    """The first ``size`` words of a fixed list of distinct lower-case pseudo-words of ``lang``.

    A closed vocabulary: lines built from it can be read by recognising whole words, which a
    sub-million-parameter model learns on a CPU in minutes, where reading letter by letter
    takes it hours (research/demo-feasibility.md). The list does not depend on the line seed,
    so sets drawn with different seeds (print for pretraining, manuscripts for fine-tuning)
    have different lines over the same words; a larger ``size`` extends a smaller one.
    """
    rnd = random.Random(f"lexicon:{lang}")
    words: list[str] = []
    for _ in range(size * 200):
        word = _word(lang, rnd).lower()
        if len(word) >= 2 and word.isalpha() and word not in words:
            words.append(word)
            if len(words) == size:
                return tuple(words)
    raise ValueError(f"cannot draw {size} distinct {lang} words; use a smaller lexicon")


def lexicon_line(
    vocabulary: tuple[str, ...], rnd: random.Random, words: tuple[int, int] | None
) -> str:
    """Words of a closed vocabulary joined by spaces (no capitals, marks or numbers)."""
    count = rnd.randint(*(words or (2, 5)))
    return " ".join(vocabulary[rnd.randrange(len(vocabulary))] for _ in range(count))


def generate_lines(
    lang: str,
    n: int,
    seed: int,
    *,
    avoid: set[str] | None = None,
    words: tuple[int, int] | None = None,
    lexicon_size: int | None = None,
) -> list[str]:
    """``n`` distinct lines of ``lang``; a repeat (or a text in ``avoid``) is redrawn.

    Distinct texts keep ``data check`` free of train/test text leaks by construction. With
    ``lexicon_size``, words come from :func:`lexicon` instead of being drawn letter by letter.
    """
    seen = avoid if avoid is not None else set()
    vocabulary = lexicon(lang, lexicon_size) if lexicon_size else None
    lines: list[str] = []
    for index in range(n):
        for attempt in range(1000):
            rnd = line_rng(seed, lang, index, attempt)
            if vocabulary is None:
                text = generate_line(lang, rnd, words)
            else:
                text = lexicon_line(vocabulary, rnd, words)
            if text not in seen:
                break
        else:
            raise InputError(
                f"only {index} distinct {lang} lines could be drawn, {n} were asked for",
                field="per_lang",
                hint="lower --per-lang, or allow more variety (--lexicon, --words)",
            )
        seen.add(text)
        lines.append(text)
    return lines
