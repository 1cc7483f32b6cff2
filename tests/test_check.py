"""``data check``: every kind of finding fires on a crafted manifest; clean manifests pass."""

from __future__ import annotations

import json
import os
import struct
import unicodedata
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import read_json
from vlm_retain.data.check import KINDS, MAX_ASPECT, MIN_LEAK_TEXT, check_manifest
from vlm_retain.data.manifest import Record, write_manifest
from vlm_retain.data.samples.peter import write_peter_sample
from vlm_retain.data.samples.render import render_line
from vlm_retain.fsutil import write_marker


def line_image(path: Path, text: str) -> str:
    """A small rendered line (distinct texts give distinct bytes); returns the path's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_line(text, height=24).save(path)
    return path.name


def blank_image(path: Path, size: tuple[int, int], shade: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, shade).save(path)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height``: what a decompression bomb looks like
    before decoding (the check must refuse it from the header, without allocating)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def rec(id: str, image: str, text: str, split: str, **kw) -> Record:
    return Record.create(
        id=id,
        image=image,
        text=text,
        lang=kw.pop("lang", "ru"),
        source=kw.pop("source", "peter"),
        split=split,
        **kw,
    )


def write_raw(folder: Path, objects: list[dict]) -> None:
    """Manifest lines exactly as given (write_manifest would clean or refuse them)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(obj, ensure_ascii=False) for obj in objects]
    (folder / "manifest.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    write_marker(folder, "manifest", source="test")


def raw(id: str, image: str, text: str, split: str, **kw) -> dict:
    return {
        "id": id,
        "image": image,
        "text": text,
        "lang": kw.get("lang", "ru"),
        "source": kw.get("source", "peter"),
        "split": split,
        "task": kw.get("task", "ocr"),
        **({"meta": kw["meta"]} if "meta" in kw else {}),
    }


@pytest.fixture
def clean_folder(tmp_path: Path) -> Path:
    """Two sources, three splits, images both inside the folder and referenced with ../."""
    source = tmp_path / "source"
    folder = tmp_path / "clean"
    records = []
    texts = {
        "train": ["зело многа в гафѣ", "дятъ изъ города", "благодарствую за писмо"],
        "val": ["а мы стоимъ у рѣки"],
        "test": ["гдѣ сiя вещь обрѣтается"],
    }
    for split, lines in texts.items():
        for index, text in enumerate(lines):
            name = line_image(source / f"{split}_{index}.png", text)
            records.append(rec(f"{split}-{index}", f"../source/{name}", text, split))
    for index, (split, text) in enumerate(
        [("train", "the quick brown fox"), ("test", "jumps over the lazy dog")]
    ):
        line_image(folder / "images" / f"en{index}.png", text)
        records.append(
            rec(f"en-{index}", f"images/en{index}.png", text, split, lang="en", source="iam")
        )
    # VQA questions share one image within a split: not a duplicate-image finding
    blank_image(folder / "images" / "scene.png", (64, 64))
    records += [
        rec("q1", "images/scene.png", "yes", "train", lang="en", source="world", task="vqa"),
        rec("q2", "images/scene.png", "two", "train", lang="en", source="world", task="vqa"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / "manifest.jsonl", records)
    write_marker(folder, "manifest", source="test")
    return folder


def test_clean_manifest_passes_with_exit_0(clean_folder: Path, run_cli) -> None:
    result = run_cli("data", "check", clean_folder)
    assert result.code == 0, result.out + result.err
    assert "OK" in result.out and "0 errors, 0 warnings" in result.out
    report = check_manifest(clean_folder)
    assert report.findings == [] and report.lines == 9 and report.images == 8


def test_imported_peter_sample_passes(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter")
    out = tmp_path / "out"
    assert run_cli("data", "import", "peter", sample.root, "--out", out, "-q").code == 0
    result = run_cli("data", "check", out / "manifest.jsonl")  # the file itself is accepted too
    assert result.code == 0, result.out
    assert check_manifest(out).errors == 0


@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    """One crafted case for every kind of finding (ids say which)."""
    folder = tmp_path / "broken"
    images = folder / "images"
    ok = {
        name: line_image(images / f"{name}.png", name)
        for name in ("ok1", "ok2", "ok3", "ok4", "ok5", "ok6", "ok7", "ok8")
    }
    truncated = images / "truncated.png"
    line_image(truncated, "this file will be cut short by a failed copy")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (images / "garbage.png").write_bytes(b"this is not an image at all")
    png_header_only(images / "bomb.png", 20000, 20000)
    blank_image(images / "wide.png", (8 * MAX_ASPECT, 8))
    blank_image(images / "tiny.png", (40, 5))
    # the same bytes under two names, and one file reached through a symlink
    line_image(images / "copy_a.png", "identical")
    (images / "copy_b.png").write_bytes((images / "copy_a.png").read_bytes())
    line_image(images / "linked.png", "linked")
    os.symlink(images / "linked.png", images / "alias.png")
    line_image(images / "shared.png", "shared")
    line_image(images / "valtest.png", "valtest")
    line_image(images / "short_val.png", "short val")
    long_text = "и тако онѣ пошли къ мосту"
    assert len(long_text) >= MIN_LEAK_TEXT
    nfd = unicodedata.normalize("NFD", "пойдемъ")
    write_raw(
        folder,
        [
            raw("dup", f"images/{ok['ok1']}", "первая", "train"),
            raw("dup", f"images/{ok['ok2']}", "вторая", "train"),
            raw("missing", "images/nowhere.png", "нет файла", "train"),
            raw("truncated", "images/truncated.png", "обрезан", "train"),
            raw("garbage", "images/garbage.png", "мусор", "train"),
            raw("bomb", "images/bomb.png", "бомба", "train"),
            raw("wide", "images/wide.png", "широкая", "train"),
            raw("tiny", "images/tiny.png", "мелкая", "train"),
            raw("empty", f"images/{ok['ok3']}", "   ", "train"),
            raw("nfd", f"images/{ok['ok4']}", nfd, "train"),
            raw("spaces", f"images/{ok['ok5']}", " два  пробела\tи таб", "train"),
            raw("copy-train", "images/copy_a.png", "копия", "train"),
            raw("copy-test", "images/copy_b.png", "копия два", "test"),
            raw("link-train", "images/linked.png", "ссылка", "train"),
            raw("link-val", "images/alias.png", "ссылка два", "val"),
            raw("twice-1", "images/shared.png", "одна картинка", "train"),
            raw("twice-2", "images/shared.png", "две строки", "train"),
            raw("vt-val", "images/valtest.png", "вал", "val"),
            raw("vt-test", "images/valtest.png", "тест", "test"),
            raw("long-train", f"images/{ok['ok6']}", long_text, "train"),
            raw("long-test", f"images/{ok['ok7']}", long_text, "test"),
            raw("short-train", f"images/{ok['ok8']}", "и", "train"),
            raw("short-val", "images/short_val.png", "и", "val"),
        ],
    )
    return folder


def test_every_kind_of_finding_fires(broken_folder: Path) -> None:
    report = check_manifest(broken_folder)
    found = {(f.kind, f.ids) for f in report.findings}
    expected = {
        ("duplicate-id", ("dup",)),
        ("image-missing", ("missing",)),
        ("image-truncated", ("truncated",)),
        ("image-unreadable", ("garbage",)),
        ("decompression-bomb", ("bomb",)),
        ("aspect-ratio", ("wide",)),
        ("image-too-small", ("tiny",)),
        ("empty-text", ("empty",)),
        ("text-not-nfc", ("nfd",)),
        ("text-not-clean", ("spaces",)),
        ("leak-image", ("copy-train", "copy-test")),
        ("leak-image", ("link-train", "link-val")),
        ("duplicate-image", ("twice-1", "twice-2")),
        ("overlap-val-test", ("vt-val", "vt-test")),
        ("leak-text", ("long-train", "long-test")),
        ("leak-text-short", ("short-train", "short-val")),
    }
    assert found == expected
    assert {kind for kind, _ in found} == set(KINDS) - {"leak-text-other-writer"}
    severities = {f.kind: f.severity for f in report.findings}
    assert severities["image-too-small"] == severities["leak-text-short"] == "warning"
    assert severities["duplicate-image"] == severities["overlap-val-test"] == "warning"
    assert severities["leak-text"] == severities["aspect-ratio"] == "error"
    assert report.errors == 12 and report.warnings == 4
    details = {f.kind: f.detail for f in report.findings if f.kind != "leak-image"}
    assert "U+0438 U+0306 -> U+0439" in details["text-not-nfc"]
    assert "runs of spaces" in details["text-not-clean"] and "U+0009" in details["text-not-clean"]
    assert details["duplicate-id"] == "2 lines: 1, 2"
    assert "1600x8" in details["aspect-ratio"] and "40x5" in details["image-too-small"]
    leaks = sorted(f.detail for f in report.findings if f.kind == "leak-image")
    assert leaks[0].startswith("identical bytes")
    assert (
        leaks[1]
        == "same file images/alias.png (also referenced as images/linked.png) (train 1, val 1)"
    )


def test_cli_exits_1_prints_tables_and_writes_all_findings_as_json(
    broken_folder: Path, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "findings.json"
    result = run_cli("data", "check", broken_folder, "--json-out", out, "--max-rows", "1")
    assert result.code == 1
    assert "FAILED" in result.out and "12 errors, 4 warnings" in result.out
    assert "leak-image (error): 2" in result.out and "... and 1 more leak-image" in result.out
    data = read_json(out)
    assert data["schema"] == "vlm-retain/check/1"
    assert data["errors"] == 12 and data["counts"]["leak-image"] == 2
    assert len(data["findings"]) == 16
    assert {"kind", "severity", "ids", "detail"} <= set(data["findings"][0])


def test_aspect_ratio_limit_is_at_200_not_below(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    blank_image(folder / "a.png", (8 * (MAX_ASPECT - 1), 8))
    blank_image(folder / "b.png", (8, 8 * MAX_ASPECT), shade=100)  # tall counts the same
    write_manifest(
        folder / "manifest.jsonl",
        [rec("a", "a.png", "ок", "train"), rec("b", "b.png", "нет", "train")],
    )
    report = check_manifest(folder)
    assert [(f.kind, f.ids) for f in report.findings] == [("aspect-ratio", ("b",))]


def test_warnings_alone_exit_0(tmp_path: Path, run_cli) -> None:
    folder = tmp_path / "m"
    line_image(folder / "a.png", "a")
    line_image(folder / "b.png", "b")
    write_manifest(
        folder / "manifest.jsonl", [rec("a", "a.png", "1", "train"), rec("b", "b.png", "1", "test")]
    )
    result = run_cli("data", "check", folder)
    assert result.code == 0
    assert "leak-text-short (warning): 1" in result.out and "0 errors, 1 warnings" in result.out


def test_same_text_by_other_writers_is_a_warning_same_writer_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    text = "the same LOB passage copied by two writers"
    for name in ("a", "b", "c"):
        line_image(folder / f"{name}.png", name)
    write_manifest(
        folder / "manifest.jsonl",
        [
            rec("a", "a.png", text, "train", lang="en", source="iam", meta={"writer": "000"}),
            rec("b", "b.png", text, "test", lang="en", source="iam", meta={"writer": "551"}),
            # another source with the same text is not a leak of this one
            rec("c", "c.png", text, "test", lang="en", source="hf", meta={"writer": "000"}),
        ],
    )
    kinds = [(f.kind, f.ids) for f in check_manifest(folder).findings]
    assert kinds == [("leak-text-other-writer", ("a", "b"))]
    write_manifest(
        folder / "manifest.jsonl",
        [
            rec("a", "a.png", text, "train", lang="en", source="iam", meta={"writer": "000"}),
            rec("b", "b.png", text, "val", lang="en", source="iam", meta={"writer": "000"}),
        ],
    )
    assert [(f.kind, f.severity) for f in check_manifest(folder).findings] == [
        ("leak-text", "error")
    ]


def test_unclean_text_is_reported_not_fatal_but_malformed_json_is_exit_2(
    tmp_path: Path, run_cli
) -> None:
    folder = tmp_path / "m"
    line_image(folder / "a.png", "a")
    write_raw(folder, [raw("a", "a.png", " пробел ", "train")])
    assert run_cli("data", "check", folder).code == 1
    manifest = folder / "manifest.jsonl"
    manifest.write_text(
        manifest.read_text(encoding="utf-8") + '{"id": "b", "image": \n', encoding="utf-8"
    )
    result = run_cli("data", "check", folder)
    assert result.code == 2
    assert f"{manifest}:2" in result.err and "malformed JSON" in result.err
    result = run_cli("data", "check", tmp_path / "nothing-here")
    assert result.code == 2 and "no manifest here" in result.err


def test_many_distinct_lines_give_no_findings(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    images = folder / "images"
    images.mkdir(parents=True)
    records = []
    for index in range(300):
        image = Image.new("L", (48, 16), 230)
        image.putpixel((0, 0), index % 256)  # distinct bytes per image: no leak findings
        image.putpixel((1, 0), index // 256)
        image.save(images / f"{index}.png")
        records.append(
            rec(
                f"l{index}",
                f"images/{index}.png",
                f"строка номер {index}",
                ("train", "val", "test")[index % 3],
            )
        )
    write_manifest(folder / "manifest.jsonl", records)
    report = check_manifest(folder)
    assert report.lines == 300 and report.errors == 0, report.findings[:3]


def test_duplicate_ids_are_reported_with_file_line_numbers(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    line_image(folder / "a.png", "a")
    line_image(folder / "b.png", "b")
    write_raw(folder, [raw("x", "a.png", "один", "train"), raw("x", "b.png", "два", "train")])
    manifest = folder / "manifest.jsonl"
    first, second = manifest.read_text(encoding="utf-8").splitlines()
    manifest.write_text(f"{first}\n\n{second}\n", encoding="utf-8")  # a blank line is skipped
    [finding] = check_manifest(folder).findings
    assert (finding.kind, finding.ids, finding.detail) == ("duplicate-id", ("x",), "2 lines: 1, 3")
