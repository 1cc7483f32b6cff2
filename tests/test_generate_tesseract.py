"""TesseractBackend: language mapping and errors always; real OCR only where tesseract exists."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageDraw

from vlm_retain.errors import InputError
from vlm_retain.evaluate.generate import Request
from vlm_retain.evaluate.generate import tesseract as tess

HAS_TESSERACT = shutil.which("tesseract") is not None
needs_tesseract = pytest.mark.skipif(not HAS_TESSERACT, reason="tesseract is not installed")


def test_lang_mapping():
    assert tess.tesseract_lang("ru") == "rus"
    assert tess.tesseract_lang("ar") == "ara"
    assert tess.tesseract_lang("en+it") == "eng+ita"
    assert tess.tesseract_lang("Cyrillic") == "Cyrillic"


def test_missing_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tess.shutil, "which", lambda _name: None)
    with pytest.raises(InputError, match=r"needs the tesseract binary.*apt-get install"):
        tess.TesseractBackend("en")


def test_missing_language_lists_installed(monkeypatch):
    monkeypatch.setattr(tess.shutil, "which", lambda _name: "/usr/bin/tesseract")
    monkeypatch.setattr(tess, "installed_languages", lambda _binary=None: ["eng", "osd"])
    with pytest.raises(InputError) as info:
        tess.TesseractBackend("ar")
    message = str(info.value)
    assert "no language data for ara" in message and "installed: eng, osd" in message
    assert "tesseract-ocr-ara" in message


def _printed(text: str) -> Image.Image:
    from vlm_retain.data.synthetic.fonts import font_by_name, load_font

    font = load_font(font_by_name("Noto Serif").file, 36)
    image = Image.new("RGB", (520, 64), "white")
    ImageDraw.Draw(image).text((10, 10), text, fill="black", font=font)
    return image


@needs_tesseract
def test_reads_a_printed_line(tmp_path):
    if "eng" not in tess.installed_languages():
        pytest.skip("tesseract has no eng data")
    backend = tess.TesseractBackend("en", workers=2)
    reqs = [
        Request("good", _printed("The quick brown fox"), "ignored"),
        Request("missing", tmp_path / "nope.png", "ignored"),
    ]
    results = {r.id: r for r in backend.generate(reqs)}
    assert "quick brown fox" in results["good"].text and results["good"].ok
    assert results["missing"].error == "image missing"
    assert backend.describe()["lang"] == "eng"
