"""Digital Peter importer on a sample in the real anonymized layout (images, words, mapper)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.samples.peter import write_peter_sample


def test_import_with_mapper_keeps_ids_splits_and_counts_skips(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter")
    out = tmp_path / "out"
    result = run_cli("data", "import", "peter", sample.root, "--out", out, "-q")
    assert result.code == 0, result.err
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert {i: r["text"] for i, r in records.items()} == sample.expected
    assert {i: r["split"] for i, r in records.items()} == sample.splits
    assert records["1_1_10"]["text"] == "зело многа в гафѣ i непърестано выхо"
    assert records["3_1_0"]["meta"]["original_split"] == "private"
    assert records["3_2_0"]["meta"]["original_split"] == "unflagged"
    assert records["2_3_4"]["meta"]["old_name"] == "152_3_4"
    assert {r["lang"] for r in records.values()} == {"ru"}
    # referenced where it lies, relative to the manifest folder
    image = out / records["1_1_10"]["image"]
    assert image.resolve() == (sample.root / "images" / "1_1_10.jpg").resolve()
    assert records["1_1_10"]["meta"]["width"] > 0

    card = read_json(out / "card.json")
    assert {reason: v["count"] for reason, v in card["skipped"].items()} == sample.skipped
    assert card["notes"]["unflagged in mapper.csv (assigned to train)"] == 1
    assert card["notes"]["portrait images (height > width)"] == 1
    assert card["total"] == len(sample.expected)
    assert "ѣ" in card["charset"]
    assert card["content_hash"].startswith("sha256:")
    assert card["importer"]["name"] == "peter"


def test_without_mapper_split_is_grouped_by_page_and_deterministic(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_mapper=False)
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert (
            run_cli("data", "import", "peter", sample.root, "--out", out, "--seed", "3", "-q").code
            == 0
        )
    records = read_jsonl(first / "manifest.jsonl")
    assert records == read_jsonl(second / "manifest.jsonl")
    page_split: dict[tuple[int, int], str] = {}
    for record in records:
        page = (record["meta"]["series"], record["meta"]["page"])
        assert page_split.setdefault(page, record["split"]) == record["split"]
    assert len(set(page_split.values())) == 3


def test_rotate_portrait_writes_a_landscape_copy(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter")
    out = tmp_path / "out"
    assert (
        run_cli(
            "data", "import", "peter", sample.root, "--out", out, "--rotate-portrait", "ccw", "-q"
        ).code
        == 0
    )
    record = next(r for r in read_jsonl(out / "manifest.jsonl") if r["id"] == "4_2_0")
    assert record["image"] == "images/4_2_0.png"
    with Image.open(out / record["image"]) as image:
        assert image.width > image.height


def test_legacy_fixes_apply_the_organisers_normalizations(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    (sample.root / "words" / "1_1_11.txt").write_text("\u0456 cie \u048d", encoding="utf-8")
    out = tmp_path / "out"
    assert (
        run_cli("data", "import", "peter", sample.root, "--out", out, "--legacy-fixes", "-q").code
        == 0
    )
    record = next(r for r in read_jsonl(out / "manifest.jsonl") if r["id"] == "1_1_11")
    assert record["text"] == "i \u0441ie \u0463"
    assert read_json(out / "card.json")["notes"]["lines changed by legacy fixes"] == 1


def test_missing_words_folder_is_a_one_line_error(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    for file in (sample.root / "words").iterdir():
        file.unlink()
    (sample.root / "words").rmdir()
    out = tmp_path / "out"
    result = run_cli("data", "import", "peter", sample.root, "--out", out)
    assert result.code == 2
    assert "words" in result.err and result.err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [sample.root]


def test_invalid_utf8_names_the_file(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    (sample.root / "words" / "2_1_1.txt").write_bytes(b"\xff\xfe bad")
    out = tmp_path / "out"
    result = run_cli("data", "import", "peter", sample.root, "--out", out)
    assert result.code == 2
    assert "2_1_1.txt" in result.err and "UTF-8" in result.err
    assert not out.exists()


def test_truncated_image_fails_or_is_counted_when_asked(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    victim = sample.root / "images" / "2_1_0.jpg"
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    out = tmp_path / "out"
    result = run_cli("data", "import", "peter", sample.root, "--out", out)
    assert result.code == 2 and "2_1_0.jpg" in result.err and "truncated" in result.err
    assert not out.exists()
    result = run_cli(
        "data", "import", "peter", sample.root, "--out", out, "--skip-bad-images", "-q"
    )
    assert result.code == 0
    card = read_json(out / "card.json")
    assert card["skipped"]["truncated image"]["examples"] == ["2_1_0"]


def test_malformed_mapper_names_file_and_line(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    mapper = sample.root / "mapper.csv"
    lines = mapper.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",yes"
    mapper.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli("data", "import", "peter", sample.root, "--out", tmp_path / "out")
    assert result.code == 2
    assert "mapper.csv:4" in result.err and "private" in result.err


def test_existing_output_needs_overwrite(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    out = tmp_path / "out"
    assert run_cli("data", "import", "peter", sample.root, "--out", out, "-q").code == 0
    again = run_cli("data", "import", "peter", sample.root, "--out", out, "-q")
    assert again.code == 2 and "--overwrite" in again.err
    assert (
        run_cli("data", "import", "peter", sample.root, "--out", out, "-q", "--overwrite").code == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "peter"]


def test_two_images_for_one_name_are_skipped_not_guessed(tmp_path: Path, run_cli) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    images, words = sample.root / "images", sample.root / "words"
    # a second image for a paired name, and for a name without text
    Image.open(images / "2_1_0.jpg").save(images / "2_1_0.png")
    Image.new("L", (40, 10), 255).save(images / "6_1_0.png")
    Image.new("L", (40, 10), 255).save(images / "6_1_0.jpg")
    # files that are neither images nor transcriptions
    (images / "Thumbs.db").write_bytes(b"\x00" * 8)
    (words / "2_1_0.txt.bak").write_text("old", encoding="utf-8")
    (words / "notes").mkdir()
    out = tmp_path / "out"
    assert run_cli("data", "import", "peter", sample.root, "--out", out, "-q").code == 0
    records = {r["id"] for r in read_jsonl(out / "manifest.jsonl")}
    assert records == set(sample.expected) - {"2_1_0"}
    card = read_json(out / "card.json")
    assert card["skipped"] == {
        "several images with the same name": {"count": 2, "examples": ["2_1_0", "6_1_0"]}
    }
    assert card["notes"]["files in images/ that are not images (ignored)"] == 1
    assert card["notes"]["files in words/ that are not .txt (ignored)"] == 2


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A valid, complete 1-bit PNG of ``width`` x ``height`` white pixels, a few KB on disk
    (what ``Image.new("1", size).save(path)`` writes, without holding the pixels in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "size",
    [
        (20_000, 10_000),
        (10_000, 10_000),
    ],  # over twice Pillow's limit (its error), over it (a warning)
)
def test_decompression_bomb_is_a_one_line_error_or_a_counted_skip(
    tmp_path: Path, run_cli, size: tuple[int, int]
) -> None:
    sample = write_peter_sample(tmp_path / "peter", with_gotchas=False)
    victim = sample.root / "images" / "2_1_0.jpg"
    victim.unlink()
    bomb = victim.with_suffix(".png")
    _png_declaring(bomb, *size)
    assert bomb.stat().st_size < 100_000
    out = tmp_path / "out"
    result = run_cli("data", "import", "peter", sample.root, "--out", out, "-q")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert str(bomb) in result.err and "decompression bomb" in result.err
    assert not out.exists()
    result = run_cli(
        "data", "import", "peter", sample.root, "--out", out, "--skip-bad-images", "-q"
    )
    assert result.code == 0, result.err
    card = read_json(out / "card.json")
    assert card["skipped"]["decompression bomb"]["examples"] == ["2_1_0"]
