"""``vlm-retain transcribe`` through the real entry point, on a tiny Qwen2.5-VL."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image, ImageDraw

from tests.conftest import read_jsonl


@pytest.fixture
def cli(run_cli):
    """The real entry point (``transcribe`` is registered in cli/main.py)."""
    return run_cli


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from vlm_retain.models.tiny import build_tiny

    return build_tiny("qwen2_5_vl", tmp_path_factory.mktemp("tr") / "qwen", size="xs")


def _line(path, width=168, text="line"):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (width, 28), "white")
    ImageDraw.Draw(image).text((2, 2), text, fill="black")
    image.save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "lines"
    for i in range(5):
        _line(root / f"p{i % 2}" / f"{i}.png", width=112 + 28 * i, text=f"line {i}")
    return root


def test_folder_to_jsonl(cli, model, folder, tmp_path):
    out = tmp_path / "out.jsonl"
    args = ("transcribe", "--model", model, folder, "--out", out, "--max-new-tokens", "4")
    result = cli(*args, "--batch-size", "2")
    assert result.code == 0, result.err
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == [
        "p0/0.png",
        "p0/2.png",
        "p0/4.png",
        "p1/1.png",
        "p1/3.png",
    ]
    assert all(set(line) == {"id", "image", "prediction", "meta"} for line in lines)
    assert all(1 <= line["meta"]["n_tokens"] <= 4 for line in lines)
    assert "transcribed 5 of 5 images" in result.out and "no errors" in result.out
    assert not (tmp_path / "out.jsonl.partial").exists()
    # batch size does not change greedy output
    again = cli(*args, "--batch-size", "1", "--overwrite")
    assert again.code == 0, again.err
    assert read_jsonl(out) == lines
    refused = cli(*args)
    assert refused.code == 2 and "already exists" in refused.err


def test_manifest_with_reference_and_a_bad_image(cli, model, tmp_path):
    root = tmp_path / "m"
    _line(root / "images" / "a.png")
    (root / "images" / "b.png").write_bytes(b"not a png")
    rows = [
        {"id": "a", "image": "images/a.png", "text": "Вѣра", "lang": "ru"},
        {"id": "b", "image": "images/b.png", "text": "two", "lang": "en"},
    ]
    text = "".join(
        json.dumps({**r, "source": "synth-htr", "split": "test"}, ensure_ascii=False) + "\n"
        for r in rows
    )
    (root / "manifest.jsonl").write_text(text, encoding="utf-8")
    out = tmp_path / "m.jsonl"
    result = cli("transcribe", "-m", model, root, "-o", out, "--max-new-tokens", "3")
    assert result.code == 0, result.err
    a, b = read_jsonl(out)
    assert a["reference"] == "Вѣра" and a["meta"]["lang"] == "ru" and "error" not in a["meta"]
    assert b["prediction"] == "" and b["meta"]["error"].startswith("unreadable image")
    assert "1 errors (unreadable image: 1; first: b:" in result.out


def test_interrupted_run_resumes(cli, model, folder, tmp_path, monkeypatch):
    from vlm_retain.evaluate.generate.hf import HFBackend

    out = tmp_path / "r.jsonl"
    args = ("transcribe", "-m", model, folder, "-o", out, "--max-new-tokens", "3")
    real = HFBackend.generate
    seen: list[str] = []

    def dies_after_three(self, requests):
        for n, result in enumerate(real(self, requests)):
            if n == 3:
                raise KeyboardInterrupt
            seen.append(result.id)
            yield result

    monkeypatch.setattr(HFBackend, "generate", dies_after_three)
    try:  # typer turns Ctrl-C into exit code 130; a bare KeyboardInterrupt would do as well
        code = cli(*args, "--batch-size", "2").code
    except KeyboardInterrupt:
        code = 130
    assert code != 0
    partial = tmp_path / "r.jsonl.partial"
    assert not out.exists() and len(read_jsonl(partial)) == 3
    monkeypatch.setattr(HFBackend, "generate", real)
    other = cli("transcribe", "-m", model, folder, "-o", out, "--prompt", "Other prompt.")
    assert other.code == 2 and "other settings" in other.err
    result = cli(*args, "--batch-size", "4")  # the batch size may change on resume
    assert result.code == 0, result.err
    assert "transcribed 2 of 5 images (3 done before, resumed)" in result.out
    lines = read_jsonl(out)
    assert len(lines) == 5 and {line["id"] for line in lines} >= set(seen)
    fresh = tmp_path / "fresh.jsonl"
    assert cli("transcribe", "-m", model, folder, "-o", fresh, "--max-new-tokens", "3").code == 0
    assert read_jsonl(fresh) == lines  # resumed output equals an uninterrupted run


def test_bad_usage_exits_2(cli, model, folder, tmp_path):
    out = tmp_path / "x.jsonl"
    missing_model = cli("transcribe", folder, "--out", out)
    assert missing_model.code == 2 and "needs --model" in missing_model.err
    backend = cli("transcribe", "-m", model, folder, "--out", out, "--backend", "onnx")
    assert backend.code == 2 and "unknown backend" in backend.err
    nothing = cli("transcribe", "-m", model, tmp_path / "nope", "--out", out)
    assert nothing.code == 2 and "not found" in nothing.err
    bad_model = cli("transcribe", "-m", tmp_path / "nomodel", folder, "--out", out)
    assert bad_model.code == 2 and "Traceback" not in bad_model.err


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_tesseract_backend(cli, folder, tmp_path):
    out = tmp_path / "t.jsonl"
    result = cli("transcribe", "--backend", "tesseract", "--lang", "en", folder, "-o", out)
    if result.code == 2 and "no language data" in result.err:
        pytest.skip("tesseract has no eng data")
    assert result.code == 0, result.err
    assert len(read_jsonl(out)) == 5
    no_lang = cli("transcribe", "--backend", "tesseract", folder, "-o", tmp_path / "u.jsonl")
    assert no_lang.code == 2 and "needs --lang" in no_lang.err


def _multilingual_manifest(root):
    rows = [("a", "ru", "Вѣра"), ("b", "en", "two"), ("c", "en", "three"), ("d", "it", "già")]
    for row_id, _, _ in rows:
        _line(root / "images" / f"{row_id}.png", text=row_id)
    lines = [
        json.dumps(
            {
                "id": row_id,
                "image": f"images/{row_id}.png",
                "text": text,
                "lang": lang,
                "source": "synth-htr",
                "split": "test",
                "meta": {"font": "Kristi", "era": 1850},
            },
            ensure_ascii=False,
        )
        for row_id, lang, text in rows
    ]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def fake_tesseract(monkeypatch):
    """A stand-in for TesseractBackend (no binary needed) that records its language."""
    from vlm_retain.evaluate.generate import tesseract
    from vlm_retain.evaluate.generate.base import Result

    langs: list[str] = []

    class FakeTesseract:
        name = "tesseract"

        def __init__(self, lang, workers=None):
            langs.append(lang)

        def generate(self, requests):
            for request in requests:
                yield Result(request.id, f"read {request.id}", 0)

    monkeypatch.setattr(tesseract, "TesseractBackend", FakeTesseract)
    return langs


def test_lang_keeps_only_that_language_of_a_manifest(cli, fake_tesseract, tmp_path):
    """`--lang en` on a multilingual manifest reads only its English lines, with the English
    model, and says how many were left out; without --lang tesseract still refuses."""
    root = _multilingual_manifest(tmp_path / "m")
    out = tmp_path / "en.jsonl"
    result = cli("transcribe", "-b", "tesseract", "--lang", "en", root, "-o", out)
    assert result.code == 0, result.err
    assert fake_tesseract == ["en"]
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == ["b", "c"]
    assert all(line["meta"]["lang"] == "en" for line in lines)
    assert "transcribed 2 of 2 images" in result.out
    assert "2 records not in language en left out" in result.out
    # meta is the record's lang/source/split with its own meta fields flattened in (docs say so)
    assert lines[0]["meta"] == {
        "lang": "en",
        "source": "synth-htr",
        "split": "test",
        "font": "Kristi",
        "era": 1850,
        "n_tokens": 0,
    }
    tess_name = cli("transcribe", "-b", "tesseract", "--lang", "rus", root, "-o", tmp_path / "r")
    assert tess_name.code == 0, tess_name.err
    assert [line["id"] for line in read_jsonl(tmp_path / "r")] == ["a"]
    no_lang = cli("transcribe", "-b", "tesseract", root, "-o", tmp_path / "x.jsonl")
    assert no_lang.code == 2 and "needs --lang" in no_lang.err
    assert "en, it, ru" in no_lang.err
    none = cli("transcribe", "-b", "tesseract", "--lang", "ar", root, "-o", tmp_path / "y.jsonl")
    assert none.code == 2 and "no records in language 'ar'" in none.err
    assert "Traceback" not in none.err


def test_lang_filter_applies_to_hf_too(cli, model, tmp_path):
    root = _multilingual_manifest(tmp_path / "m")
    out = tmp_path / "it.jsonl"
    result = cli(
        "transcribe", "-m", model, "--lang", "it", root, "-o", out, "--max-new-tokens", "2"
    )
    assert result.code == 0, result.err
    assert [line["id"] for line in read_jsonl(out)] == ["d"]
    assert "3 records not in language it left out" in result.out


def test_ignore_adapter_base_flag(cli, model, folder, tmp_path):
    """An adapter recording another base is one exit-2 line naming the flag; with the flag it
    loads (its shapes fit)."""
    from peft import LoraConfig, get_peft_model

    from vlm_retain.models.loading import load_model

    loaded = load_model(model)
    peft_model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=r".*\.q_proj"))
    adapter = tmp_path / "lora"
    peft_model.save_pretrained(str(adapter))
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/another-model"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    out = tmp_path / "a.jsonl"
    args = ("transcribe", "-m", model, "--adapter", adapter, folder, "-o", out)
    refused = cli(*args, "--max-new-tokens", "2")
    assert refused.code == 2 and "someone/another-model" in refused.err
    assert "--ignore-adapter-base" in refused.err and "Traceback" not in refused.err
    accepted = cli(*args, "--max-new-tokens", "2", "--ignore-adapter-base")
    assert accepted.code == 0, accepted.err
    assert len(read_jsonl(out)) == 5
