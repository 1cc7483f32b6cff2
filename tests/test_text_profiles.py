"""Normalization profiles: what each one changes and, as important, what it leaves alone."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest

from vlm_retain.errors import InputError
from vlm_retain.text.profiles import PROFILES, normalize

ALL = sorted(PROFILES)


def test_the_four_documented_profiles_exist() -> None:
    assert set(PROFILES) == {"raw", "casefold", "nopunct", "peter"}
    assert all(PROFILES[name] for name in PROFILES)


@pytest.mark.parametrize("profile", ALL)
def test_every_profile_strips_collapses_and_composes(profile: str) -> None:
    # NFD "é" (e + U+0301) and "й" (и + U+0306) become the single NFC code points.
    text = "  Ke\u0301pi  \t\n и\u0306ти  "
    out = normalize(text, profile)
    assert out == normalize("Képi йти", profile)
    assert unicodedata.is_normalized("NFC", out)
    assert "  " not in out and out == out.strip()


def test_raw_keeps_case_and_punctuation() -> None:
    assert normalize("  Вѣра, «Надежда»!  ", "raw") == "Вѣра, «Надежда»!"


def test_casefold_folds_case_including_full_folding() -> None:
    assert normalize("ПЕТРЪ Ѣдетъ", "casefold") == "петръ ѣдетъ"
    # Full case folding: ß -> ss, so "Straße" and "STRASSE" compare equal.
    assert normalize("Straße", "casefold") == normalize("STRASSE", "casefold") == "strasse"
    # U+01F0 (ǰ) folds to j + combining caron; NFC afterwards composes it back to one code point.
    assert normalize("ǰ", "casefold") == "\u01f0"


def test_nopunct_deletes_unicode_punctuation_and_keeps_symbols() -> None:
    # Po/Ps/Pe/Pd/Pi/Pf go (, ! « » ( ) - ¿ ?), the spaces they leave collapse.
    assert normalize("Hello, (world) - «да»! ¿Qué?", "nopunct") == "Hello world да Qué"
    # Arabic comma U+060C and question mark U+061F are punctuation (Po).
    assert normalize("قال، نعم؟", "nopunct") == "قال نعم"
    # Symbols (Sm + = | ×, So ⊕ ⊗, Sc $) and the letter ǂ (Lo) are content, so they stay.
    assert normalize("1 + 1 = 2 | × ⊕ ⊗ $5 ǂ", "nopunct") == "1 + 1 = 2 | × ⊕ ⊗ $5 ǂ"
    # Punctuation inside a word joins the halves; nothing else is touched (case kept).
    assert normalize("Peter's", "nopunct") == "Peters"
    assert normalize("...", "nopunct") == ""


def test_peter_applies_the_organisers_letter_maps() -> None:
    # Latin c -> Cyrillic с; Cyrillic і (U+0456) -> Latin i (U+0069); ҍ -> ѣ.
    assert normalize("cамъ", "peter") == "самъ"
    assert normalize("\u0456 здѣлал", "peter") == "i здѣлал"
    assert normalize("мҍсто", "peter") == "мѣсто"
    # Everything else stays: Cyrillic с, Latin i, ѣ, ѳ, ъ, uppercase Latin C, punctuation.
    assert normalize("с i ѣ ѳ ъ C (+ [", "peter") == "с i ѣ ѳ ъ C (+ ["
    # Scorer strips both sides; fix script collapses whitespace runs.
    assert normalize("   зело  многа в гафѣ \u0456  ", "peter") == "зело многа в гафѣ i"


def test_peter_keeps_decomposed_yi_as_one_letter() -> None:
    # NFD ї is і + U+0308; NFC composes it to U+0457 first, which the map does not touch.
    assert normalize("\u0456\u0308", "peter") == "\u0457" == normalize("\u0457", "peter")


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(InputError) as excinfo:
        normalize("x", "lower")
    message = str(excinfo.value)
    assert "'lower'" in message
    for name in PROFILES:
        assert name in message


def test_importable_without_numpy() -> None:
    code = (
        "import sys; import vlm_retain.text.profiles as p; "
        "assert p.normalize('a  b', 'nopunct') == 'a b'; "
        "assert 'numpy' not in sys.modules, 'numpy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
