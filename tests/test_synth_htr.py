"""``data synth htr``: deterministic rendering, font coverage, Arabic shaping, the manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.synthetic.contact_sheet import contact_sheet
from vlm_retain.data.synthetic.fonts import FONTS, covers, font_by_name, fonts_for, missing_glyphs
from vlm_retain.data.synthetic.htr import (
    ERAS,
    HtrOptions,
    candidate_fonts,
    choose_font,
    line_generator,
    render_line,
    sample_style,
    synth_htr,
    text_mask,
)
from vlm_retain.errors import InputError

PER_LANG = 10
OPTIONS = HtrOptions(per_lang=PER_LANG, seed=5, workers=2, preview=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "htr"
    card = synth_htr(out, OPTIONS, progress=False)
    return out, card


def _files(folder: Path) -> dict[str, bytes]:
    """Every generated file's bytes except the card (it holds a creation time) and preview."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in {"card.json", "preview.png"}
    }


def test_same_seed_same_bytes_whatever_the_workers(generated, tmp_path: Path) -> None:
    out, card = generated
    again = tmp_path / "again"
    card_again = synth_htr(
        again, dataclasses.replace(OPTIONS, workers=1, preview=False), progress=False
    )
    assert _files(again) == _files(out)
    assert card_again["content_hash"] == card["content_hash"]


def test_other_seed_other_data(generated, tmp_path: Path) -> None:
    out, _ = generated
    other = tmp_path / "other"
    synth_htr(other, dataclasses.replace(OPTIONS, seed=6, preview=False), progress=False)
    a, b = _files(out), _files(other)
    assert a["manifest.jsonl"] != b["manifest.jsonl"]
    assert a["images/ru-000000.png"] != b["images/ru-000000.png"]


def test_manifest_and_card(generated, run_cli) -> None:
    out, card = generated
    records = read_jsonl(out / "manifest.jsonl")
    assert len(records) == 4 * PER_LANG == card["total"]
    assert {r["source"] for r in records} == {"synth-htr"}
    assert {r["task"] for r in records} == {"ocr"}
    for lang in OPTIONS.langs:
        mine = [r for r in records if r["lang"] == lang]
        assert sorted(r["id"] for r in mine) == [f"{lang}-{i:06d}" for i in range(PER_LANG)]
        assert card["counts"]["val"][lang] == card["counts"]["test"][lang] == 1
        assert card["counts"]["train"][lang] == PER_LANG - 2
    assert card["importer"]["name"] == "synth-htr"
    assert card["importer"]["options"]["per_lang"] == PER_LANG
    assert "font candidates rejected for coverage" in card["notes"]
    assert read_json(out / "card.json")["content_hash"] == card["content_hash"]
    eras = {e.year for e in ERAS}
    for record in records:
        meta = record["meta"]
        assert meta["era"] in eras
        assert {"font", "slant", "wobble", "elastic", "ink", "stains", "blur", "noise"} <= set(meta)
    result = run_cli("data", "check", out)
    assert result.code == 0, result.out + result.err


def test_images_have_the_height_and_a_width_on_the_patch_grid(generated) -> None:
    out, _ = generated
    for record in read_jsonl(out / "manifest.jsonl"):
        with Image.open(out / record["image"]) as image:
            assert image.mode == "RGB" and image.format == "PNG"
            assert image.height == 56 and image.width % 28 == 0
            assert (image.width, image.height) == (
                record["meta"]["width"],
                record["meta"]["height"],
            )


def test_other_height(tmp_path: Path) -> None:
    synth_htr(tmp_path / "h84", HtrOptions(langs=("ar", "ru"), per_lang=2, height=84, workers=1),
              progress=False)  # fmt: skip
    for path in (tmp_path / "h84" / "images").iterdir():
        with Image.open(path) as image:
            assert image.height == 84 and image.width % 28 == 0


def test_every_line_is_covered_by_its_font(generated) -> None:
    out, _ = generated
    for record in read_jsonl(out / "manifest.jsonl"):
        assert missing_glyphs(font_by_name(record["meta"]["font"]), record["text"]) == set()


def test_a_font_lacking_a_glyph_is_never_chosen() -> None:
    garamond_italic = font_by_name("EB Garamond Italic")
    assert not covers(garamond_italic, "ѣ")  # the premise of this test
    text = "Въ городѣ"
    candidates = [(garamond_italic, 100.0), (font_by_name("Old Standard"), 1.0)]
    rejected = 0
    for key in range(40):
        spec, count = choose_font(text, candidates, np.random.default_rng(key))
        assert spec is not None and spec.name == "Old Standard"
        rejected += count
    assert rejected > 30  # the heavy candidate was drawn and turned down nearly every time
    # Latin hand fonts cannot draw Cyrillic: offered all Latin fonts, only Cyrillic ones win.
    latin = [(spec, 1.0) for spec in fonts_for("latin")]
    for key in range(40):
        spec, _ = choose_font("сіе", latin, np.random.default_rng(key))
        assert spec is not None and "cyrillic" in spec.scripts
    assert choose_font("ѣ", [(garamond_italic, 1.0)], np.random.default_rng(0)) == (None, 1)


def test_candidates_by_script() -> None:
    for era in ERAS:
        assert {s.name for s, _ in candidate_fonts("ru", era)} == {
            s.name for s in fonts_for("cyrillic")
        }
        assert all("arabic" in s.scripts for s, _ in candidate_fonts("ar", era))
        latin = candidate_fonts("en", era)
        assert latin and all("arabic" not in s.scripts for s, _ in latin)
        assert {s.role for s, _ in latin} == {"hand", "historical"}
    # Later eras lean towards hand fonts: the date split sees a shifting style mix.
    hand = [sum(w for s, w in candidate_fonts("en", era) if s.role == "hand") for era in ERAS]
    assert hand == sorted(hand) and hand[0] < hand[-1]


def _ink_columns(mask: Image.Image) -> np.ndarray:
    return np.flatnonzero(np.asarray(mask).max(axis=0) > 128)


def test_arabic_is_shaped_and_right_to_left() -> None:
    amiri = font_by_name("Amiri")
    # Joined beh takes its narrow initial/medial forms; unshaped text repeats the wide isolated one.
    single = len(_ink_columns(text_mask("ب", amiri, 48, "ar")[0]))
    joined = len(_ink_columns(text_mask("بببب", amiri, 48, "ar")[0]))
    unshaped = len(_ink_columns(text_mask("بببب", amiri, 48, "ar", basic=True)[0]))
    assert joined < 0.75 * 4 * single
    assert unshaped > 0.9 * 4 * single
    # Logical order: the first letter (a tall alif) is drawn at the right end.
    for basic, right_side in ((False, True), (True, False)):
        mask = np.asarray(text_mask("ابببب", amiri, 48, "ar", basic=basic)[0]) > 128
        rows = mask.sum(axis=0)
        tallest = int(np.argmax(rows))
        assert (tallest > mask.shape[1] / 2) is right_side


@pytest.mark.parametrize(("lang", "text"), [("ar", "الكتاب في البيت"), ("en", "the book")])
def test_ink_starts_at_the_start_side(lang: str, text: str) -> None:
    rng = line_generator(0, lang, 0)
    style, _ = sample_style(lang, text, rng, 56)
    assert style is not None
    clean = dataclasses.replace(
        style, stains=0, noise=0.0, blur=0.0, fade=0.0, tint=0.0, grain=0.0, elastic=0.0,
        wobble_amp=0.0, margin_start=6, margin_end=6,
    )  # fmt: skip
    image = render_line(text + " " + text, lang, clean, 56, rng)
    dark = np.flatnonzero(np.asarray(image.convert("L")).min(axis=0) < 150)
    left_gap, right_gap = dark[0], image.width - 1 - dark[-1]
    start_gap, end_gap = (right_gap, left_gap) if lang == "ar" else (left_gap, right_gap)
    assert start_gap <= 8 and start_gap <= end_gap


def test_preview_written(generated) -> None:
    out, _ = generated
    with Image.open(out / "preview.png") as sheet:
        assert sheet.width > 400 and sheet.height > 56 * 8


def test_contact_sheet_layout() -> None:
    images = [Image.new("RGB", (w, 56), (200, 0, 0)) for w in (100, 600, 300)]
    sheet = contact_sheet(images, ["a", "b", "c"], columns=2, cell_width=200)
    assert sheet.mode == "RGB"
    assert sheet.width == 2 * 206 + 6  # columns x (cell + pad) + pad
    with pytest.raises(ValueError):
        contact_sheet(images, ["a"], columns=2, cell_width=200)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--langs", "ru,xx"], "--langs"),
        (["--per-lang", "0"], "--per-lang"),
        (["--height", "50"], "--height"),
        (["--height", "0"], "--height"),
        (["--workers", "0"], "--workers"),
        (["--seed", "-1"], "--seed"),
        (["--style", "typed"], "--style"),
        (["--words", "0,2"], "--words"),
        (["--words", "3,2"], "--words"),
        (["--words", "two"], "--words"),
    ],
)
def test_bad_options_exit_2(run_cli, tmp_path: Path, args: list[str], names: str) -> None:
    result = run_cli("data", "synth", "htr", "--out", tmp_path / "x", "--quiet", *args)
    assert result.code == 2
    assert names in result.err
    if names == "--height":
        assert "28" in result.err and "patch" in result.err
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_set(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = run_cli(
        "data", "synth", "htr", "--out", out, "--langs", "it", "--per-lang", "3", "--quiet"
    )
    assert result.code == 0, result.err
    assert "synth-htr" in result.out
    assert len(read_jsonl(out / "manifest.jsonl")) == 3
    again = run_cli("data", "synth", "htr", "--out", out, "--langs", "it", "--quiet")
    assert again.code == 2 and "--overwrite" in again.err


def test_validation_from_python() -> None:
    from vlm_retain.data.synthetic.htr import validate

    with pytest.raises(InputError, match="val_frac"):
        validate(HtrOptions(val_frac=0.6, test_frac=0.5))
    with pytest.raises(InputError, match="twice"):
        validate(HtrOptions(langs=("ru", "ru")))
    validate(HtrOptions())


def test_every_bundled_script_font_draws_its_languages_punctuation() -> None:
    """The generators' fixed characters (digits, marks) must not exhaust a script's fonts."""
    marks = {"cyrillic": "0123456789.,;:!?- г.", "latin": "0123456789.,;:!?-'",
             "arabic": "٠١٢٣٤٥٦٧٨٩.،؛؟:"}  # fmt: skip
    for spec in FONTS:
        for script in spec.scripts:
            if spec.role != "print" and not (script == "latin" and "arabic" in spec.scripts):
                assert covers(spec, marks[script]), spec.name


def test_arabic_without_raqm_is_one_clear_error(run_cli, tmp_path: Path, monkeypatch) -> None:
    """Without raqm Pillow would raise KeyError mid-render: refuse up front, saying what is
    missing and how to get it; other languages still work."""
    import PIL.features

    from vlm_retain.data.synthetic.htr import validate

    real = PIL.features.check
    monkeypatch.setattr(PIL.features, "check", lambda name: False if name == "raqm" else real(name))
    with pytest.raises(InputError, match="raqm") as err:
        validate(HtrOptions(langs=("ru", "ar")))
    message = str(err.value)
    assert "\n" not in message and "Pillow wheel from PyPI" in message and "fribidi" in message
    validate(HtrOptions(langs=("ru", "en")))
    result = run_cli("data", "synth", "htr", "--out", tmp_path / "x", "--quiet", "--langs", "ar")
    assert result.code == 2 and "raqm" in result.err and "--langs" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "x").exists()


def test_cyrillic_handwriting_font_keeps_a_pre_reform_mix() -> None:
    """Steve Hand (no ѣ ѳ ѵ) draws only Russian lines without those letters; most Russian lines
    still get a font with every pre-reform letter, and hand fonts grow with the era."""
    from vlm_retain.data.synthetic.text import generate_lines

    steve = font_by_name("Steve Hand")
    assert steve.role == "hand" and steve.scripts == ("latin", "cyrillic")
    assert covers(steve, "Вера сіе міръ, 1887 г.") and not covers(steve, "ѣ")
    texts = generate_lines("ru", 600, 0)
    fonts, by_era = [], {era.year: [] for era in ERAS}
    for index, text in enumerate(texts):
        style, _ = sample_style("ru", text, line_generator(0, "ru", index), 56)
        assert style is not None
        fonts.append(style.font)
        by_era[style.era].append(style.font)
        if style.font == "Steve Hand":
            assert not set(text) & set("ѣѢѳѲѵѴ")
    pre_reform = sum(covers(font_by_name(name), "ѣѢѳѲѵѴіІ") for name in fonts) / len(fonts)
    assert pre_reform > 0.7
    assert 0.03 < fonts.count("Steve Hand") / len(fonts) < 0.2
    share = {era: lines.count("Steve Hand") / len(lines) for era, lines in by_era.items()}
    assert share[1900] > share[1720]


def test_print_style_uses_print_fonts_and_no_wear(tmp_path: Path) -> None:
    out = tmp_path / "print"
    options = HtrOptions(per_lang=6, seed=2, workers=1, style="print", words=(1, 2))
    card = synth_htr(out, options, progress=False)
    records = read_jsonl(out / "manifest.jsonl")
    print_fonts = {spec.name for spec in FONTS if spec.role == "print"}
    assert {r["meta"]["font"] for r in records} <= print_fonts
    assert all(r["meta"]["era"] == 2000 for r in records)
    assert all(r["meta"]["wobble"] == 0 and r["meta"]["stains"] == 0 for r in records)
    assert all(1 <= len(r["text"].split()) <= 2 for r in records)
    assert card["importer"]["options"]["style"] == "print"
    manuscript = synth_htr(
        tmp_path / "hand", dataclasses.replace(options, style="manuscript"), progress=False
    )
    hand = read_jsonl(tmp_path / "hand" / "manifest.jsonl")
    # Same texts (the text does not depend on the style), other fonts.
    assert [r["text"] for r in hand] == [r["text"] for r in records]
    assert not {r["meta"]["font"] for r in hand} & print_fonts
    assert manuscript["content_hash"] != card["content_hash"]


def test_words_option_bounds_the_words_per_line() -> None:
    from vlm_retain.data.synthetic.text import generate_lines

    lines = generate_lines("en", 60, 0, words=(1, 1))
    assert all(len(line.split()) == 1 for line in lines)
    assert max(len(line.split()) for line in generate_lines("en", 60, 0)) > 2


def test_lexicon_lines_share_words_between_styles_and_never_repeat() -> None:
    from vlm_retain.data.synthetic.text import generate_lines, lexicon

    words = lexicon("ru", 16)
    assert len(set(words)) == 16 and all(w.isalpha() and w == w.lower() for w in words)
    assert lexicon("ru", 24)[:16] == words and lexicon("en", 16) != words
    lines = generate_lines("ru", 100, 3, words=(1, 2), lexicon_size=16)
    other = generate_lines("ru", 100, 4, words=(1, 2), lexicon_size=16)
    assert len(set(lines)) == 100 and lines != other
    assert {w for line in lines + other for w in line.split()} <= set(words)


def test_a_lexicon_too_small_for_the_lines_is_one_clear_error(run_cli, tmp_path: Path) -> None:
    result = run_cli(
        "data", "synth", "htr", "--out", tmp_path / "x", "--langs", "en", "--per-lang", "40",
        "--lexicon", "4", "--words", "1,2", "--quiet",
    )  # fmt: skip
    assert result.code == 2
    assert "distinct" in result.err and "--per-lang" in result.err
    assert not (tmp_path / "x").exists()
