"""Generated text for synthetic lines: each language's letters, rules and special characters."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import pytest

from vlm_retain.data.synthetic.text import (
    LANGS,
    MODELS,
    SPECIAL_CHARS,
    SPECIAL_SEQUENCES,
    generate_line,
    generate_lines,
    line_rng,
)
from vlm_retain.text import clean_text

N = 600
_LINES = {lang: generate_lines(lang, N, seed=0) for lang in LANGS}


def _words(lang: str) -> list[str]:
    return [
        w
        for line in _LINES[lang]
        for w in re.split(r"[\s.,;:!?،؛؟\-]+", line)
        if w and not any(ch.isdigit() for ch in w) and w != "г"
    ]


@pytest.mark.parametrize("lang", LANGS)
def test_special_characters_present(lang: str) -> None:
    joined = "\n".join(_LINES[lang])
    assert [ch for ch in SPECIAL_CHARS[lang] if ch not in joined] == []
    assert [seq for seq in SPECIAL_SEQUENCES[lang] if seq not in joined] == []


@pytest.mark.parametrize("lang", LANGS)
def test_lines_are_clean_distinct_and_short(lang: str) -> None:
    lines = _LINES[lang]
    assert all(line == clean_text(line) and line for line in lines)
    assert len(set(lines)) == len(lines)
    assert max(len(line) for line in lines) <= MODELS[lang].max_chars + 6
    assert any(ch.isdigit() for line in lines for ch in line)
    assert any(line[-1] in ".;:!?؛؟" for line in lines)


def test_deterministic_per_seed() -> None:
    assert generate_lines("ru", 50, seed=0) == _LINES["ru"][:50]
    assert generate_lines("ru", 50, seed=1) != _LINES["ru"][:50]
    assert generate_line("ar", line_rng(3, "ar", 7)) == generate_line("ar", line_rng(3, "ar", 7))


def test_avoid_makes_texts_distinct_across_languages() -> None:
    seen: set[str] = set()
    a = generate_lines("en", 200, seed=0, avoid=seen)
    b = generate_lines("it", 200, seed=0, avoid=seen)
    assert not set(a) & set(b)
    assert len(seen) == 400


@pytest.mark.parametrize(
    ("lang", "expected"),
    [("ru", {"о", "е", "а", "и"}), ("en", {"e", "t", "a"}), ("it", {"e", "a", "i"}),
     ("ar", {"ا", "ل"})],
)  # fmt: skip
def test_letter_frequencies_follow_the_language(lang: str, expected: set[str]) -> None:
    letters = Counter(ch.lower() for line in _LINES[lang] for ch in line if ch.isalpha())
    top = {ch for ch, _ in letters.most_common(6)}
    assert expected <= top, letters.most_common(8)


def test_russian_pre_reform_orthography() -> None:
    words = [w.lower() for w in _words("ru")]
    consonants = set("бвгджзклмнпрстфхцчшщѳ")
    assert [w for w in words if w[-1] in consonants] == []  # ъ closes every final consonant
    vowels_or_short_i = set("аеёиоуыэюяѣій")
    for word in words:
        for i, ch in enumerate(word):
            if ch == "і":
                assert i + 1 < len(word) and word[i + 1] in vowels_or_short_i, word
            if ch == "и" and i + 1 < len(word):
                assert word[i + 1] not in vowels_or_short_i, word
    letters = Counter("".join(words))
    yat_share = letters["ѣ"] / (letters["ѣ"] + letters["е"])
    assert 0.1 < yat_share < 0.4
    assert letters["ѵ"] < letters["ѳ"] < letters["ѣ"]
    assert "ё" not in letters


def test_italian_accents_mostly_final_and_elisions() -> None:
    words = _words("it")
    accented = [(w, i) for w in words for i, ch in enumerate(w) if ch in "àèéìòù"]
    final = sum(1 for w, i in accented if i == len(w) - 1)
    assert final / len(accented) > 0.9
    elided = [w for w in words if "'" in w]
    assert elided and all(re.fullmatch(r"[a-zA-Z]+'[aeiouàèéìòù]\w+", w) for w in elided)


def test_arabic_positions_and_script() -> None:
    for word in _words("ar"):
        assert "ة" not in word[:-1] and "ى" not in word[:-1], word
        assert all(unicodedata.name(ch).startswith("ARABIC") for ch in word), word
    digits = "".join(ch for line in _LINES["ar"] for ch in line if ch.isdigit())
    assert digits and set(digits) <= set("٠١٢٣٤٥٦٧٨٩")


def test_english_is_plain_ascii() -> None:
    assert all(line.isascii() for line in _LINES["en"])
