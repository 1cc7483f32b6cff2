"""VML-HD importer on composed pages whose sub-word boxes are known to the pixel."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.importers import vmlhd
from vlm_retain.data.samples.vmlhd import render_paw, split_paws, write_vmlhd_sample

PAD = 2


def _import(run_cli, src: Path, out: Path, *extra: str):
    return run_cli("data", "import", "vmlhd", src, "--out", out, "-q", *extra)


def _padded(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return (
        max(0, left - PAD),
        max(0, top - PAD),
        min(size[0], right + PAD),
        min(size[1], bottom + PAD),
    )


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return (
        a.size == b.size and ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None
    )


def test_split_paws_cuts_after_non_connecting_letters() -> None:
    assert split_paws("الرحمن") == ["ا", "لر", "حمن"]
    assert split_paws("بسم") == ["بسم"]
    assert split_paws("وموضوعه") == ["و", "مو", "ضو", "عه"]


def test_subword_crops_land_on_the_right_pixels(tmp_path: Path, run_cli) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 0, result.err
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert set(records) == set(sample.subwords)
    for record_id, truth in sample.subwords.items():
        record = records[record_id]
        assert record["text"] == truth.text
        assert (record["lang"], record["source"]) == ("ar", "vmlhd")
        meta = record["meta"]
        assert (meta["book"], meta["page_id"], meta["zone_id"]) == (
            truth.book,
            truth.page_id,
            record_id.split("_")[1],
        )
        assert meta["zone_type"] == "2"
        assert meta["page_file"] == truth.page_file.relative_to(sample.root / truth.book).as_posix()
        size = sample.page_sizes[(truth.book, truth.page_id)]
        assert tuple(meta["bbox"]) == _padded(truth.box, size)
        assert record["image"].startswith(f"images/{truth.book}/{truth.page_id}/")
        with Image.open(out / record["image"]) as crop:
            assert crop.size == (
                meta["bbox"][2] - meta["bbox"][0],
                meta["bbox"][3] - meta["bbox"][1],
            )
            if truth.page_file.suffix == ".png":  # lossless: the crop is exactly those pixels
                with Image.open(truth.page_file) as page:
                    assert _same_pixels(crop, page.crop(tuple(meta["bbox"])))
                inner = crop.crop(
                    (PAD, PAD, PAD + truth.box[2] - truth.box[0], PAD + truth.box[3] - truth.box[1])
                )
                assert _same_pixels(inner, render_paw(truth.text))

    card = read_json(out / "card.json")
    assert {k: v["count"] for k, v in card["skipped"].items()} == sample.skipped
    assert card["notes"] == sample.notes
    assert card["skipped"]["segment whose ref_id names no zone"]["examples"] == [
        "book02_segment_9999"
    ]
    assert "src '0003'" in card["skipped"]["page image not found"]["examples"][0]
    assert card["importer"]["options"]["level"] == "subword"


def test_line_level_groups_by_overlap_and_reads_right_to_left(tmp_path: Path, run_cli) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD")
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--level", "line").code == 0
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert set(records) == set(sample.lines)
    for line_id, ids in sample.lines.items():
        record = records[line_id]
        assert record["text"] == "".join(sample.subwords[i].text for i in ids)
        assert record["meta"]["zone_ids"] == [i.split("_")[1] for i in ids]
        truths = [sample.subwords[i] for i in ids]
        union = (
            min(t.box[0] for t in truths),
            min(t.box[1] for t in truths),
            max(t.box[2] for t in truths),
            max(t.box[3] for t in truths),
        )
        size = sample.page_sizes[(truths[0].book, truths[0].page_id)]
        assert tuple(record["meta"]["bbox"]) == _padded(union, size)
        rights = [t.box[2] for t in truths]
        assert rights == sorted(rights, reverse=True)  # right to left
    assert records["book01_101_l01"]["text"] == "بسماللهالرحمنالرحيم"
    assert records["book01_101_l02"]["text"] == "الحمدللهربالعالمين"
    assert records["book01_101_l01"]["image"] == "images/book01/101/l01.png"
    with Image.open(sample.subwords["book01_1001"].page_file) as page:
        line = records["book01_101_l01"]
        with Image.open(out / line["image"]) as crop:
            assert _same_pixels(crop, page.crop(tuple(line["meta"]["bbox"])))

    spaced = tmp_path / "spaced"
    assert (
        _import(run_cli, sample.root, spaced, "--level", "line", "--paw-separator", " ").code == 0
    )
    texts = {r["id"]: r["text"] for r in read_jsonl(spaced / "manifest.jsonl")}
    assert texts["book01_101_l01"] == "بسم ا لله ا لر حمن ا لر حيم"


def test_group_lines_handles_unordered_boxes_and_small_paws() -> None:
    def sub(zone: str, box: tuple[float, float, float, float]) -> vmlhd.SubWord:
        return vmlhd.SubWord(zone_id=zone, zone_type="2", parent_id="0", box=box, text=zone)

    lower_left = sub("d", (10, 62, 40, 92))
    upper_alif = sub("b", (60, 14, 66, 34))  # a lone alif: short, inside the band of line 1
    upper_right = sub("a", (80, 10, 120, 40))
    upper_left = sub("c", (20, 12, 50, 44))
    lower_right = sub("e", (70, 60, 110, 95))
    lines = vmlhd.group_lines([lower_left, upper_alif, upper_right, upper_left, lower_right])
    assert [[s.zone_id for s in line] for line in lines] == [["a", "b", "c"], ["e", "d"]]


def test_split_is_by_page_and_deterministic(tmp_path: Path, run_cli) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD", with_gotchas=False)
    outs = [tmp_path / name for name in ("a", "b")]
    for out in outs:
        assert _import(run_cli, sample.root, out, "--seed", "5").code == 0
    records = read_jsonl(outs[0] / "manifest.jsonl")
    assert records == read_jsonl(outs[1] / "manifest.jsonl")
    page_split: dict[tuple[str, str], str] = {}
    for record in records:
        page = (record["meta"]["book"], record["meta"]["page_id"])
        assert page_split.setdefault(page, record["split"]) == record["split"]
    assert len(page_split) == 6 and set(page_split.values()) == {"train", "val", "test"}
    assert records[0]["meta"]["split_rule"] == "grouped by book/page, seed 5"
    # the line level assigns the same pages to the same splits
    lines = tmp_path / "lines"
    assert _import(run_cli, sample.root, lines, "--seed", "5", "--level", "line").code == 0
    for record in read_jsonl(lines / "manifest.jsonl"):
        assert page_split[(record["meta"]["book"], record["meta"]["page_id"])] == record["split"]
    card = read_json(outs[0] / "card.json")
    assert card["skipped_total"] == 0 and "crops clamped to the page edge" not in card["notes"]


def test_one_book_folder_and_each_page_opened_once(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD")
    opened: list[Path] = []
    real_load = vmlhd._load_page

    def counting_load(path: Path) -> Image.Image:
        opened.append(path)
        return real_load(path)

    monkeypatch.setattr(vmlhd, "_load_page", counting_load)
    out = tmp_path / "out"
    assert _import(run_cli, sample.root / "book02", out).code == 0
    records = read_jsonl(out / "manifest.jsonl")
    assert {r["id"] for r in records} == {i for i in sample.subwords if i.startswith("book02_")}
    assert {r["meta"]["book"] for r in records} == {"book02"}
    assert sorted(p.name for p in opened) == ["0001.jpg", "0002.jpg"]


def test_src_forms_and_subfolders_are_found(tmp_path: Path, run_cli) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD", with_gotchas=False)
    book = sample.root / "book01"
    xml = book / "docElementsXml.ashx"
    text = xml.read_text(encoding="utf-8")
    # page 1: no extension, file moved to a subfolder; page 2: upper-case extension on disk
    text = text.replace('src="page_001.png"', 'src="page_001"')
    (book / "scans").mkdir()
    shutil.move(book / "page_001.png", book / "scans" / "page_001.png")
    (book / "page_002.png").rename(book / "page_002.PNG")
    xml.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert _import(run_cli, book, out).code == 0
    files = {
        r["meta"]["page_id"]: r["meta"]["page_file"] for r in read_jsonl(out / "manifest.jsonl")
    }
    assert files == {"101": "scans/page_001.png", "102": "page_002.PNG", "103": "page_003.png"}


def test_annotation_file_as_src_reads_its_book(tmp_path: Path, run_cli) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD", with_gotchas=False)
    book = sample.root / "book02"
    from_folder, from_file = tmp_path / "folder", tmp_path / "file"
    assert _import(run_cli, book, from_folder).code == 0
    result = _import(run_cli, book / "docElementsXml.ashx", from_file)
    assert result.code == 0, result.err
    expected = read_jsonl(from_folder / "manifest.jsonl")
    assert expected and read_jsonl(from_file / "manifest.jsonl") == expected
    assert {r["meta"]["book"] for r in expected} == {"book02"}
    assert "folders without" not in " ".join(read_json(from_file / "card.json")["notes"])


def test_another_file_as_src_is_a_one_line_error(tmp_path: Path, run_cli) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD", with_gotchas=False)
    page = sample.root / "book02" / "images" / "0001.jpg"
    assert page.is_file()
    out = tmp_path / "out"
    result = _import(run_cli, page, out)
    assert result.code == 2 and result.err.count("\n") == 1
    assert str(page) in result.err and "expected a folder or a docElementsXml.ashx" in result.err
    assert not out.exists()
    # an --out inside the book would be searched for page images
    inside = sample.root / "book02" / "crops"
    result = _import(run_cli, sample.root / "book02" / "docElementsXml.ashx", inside)
    assert result.code == 2 and "inside the book folder" in result.err
    assert not inside.exists()
    assert sorted(p.name for p in inside.parent.iterdir()) == ["docElementsXml.ashx", "images"]


def _break_xml(root: Path) -> Path:
    xml = root / "book01" / "docElementsXml.ashx"
    lines = xml.read_bytes().split(b"\r\n")
    lines[9] = lines[9].replace(b"/>", b">")  # an unclosed <point>, noticed at </polygon>
    xml.write_bytes(b"\r\n".join(lines))
    return xml


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("malformed", ":12: malformed XML (mismatched tag, column 13)"),
        ("not-hadara", "root element is <document>, not <HADARA>"),
        ("bad-point", "zone '1001' has a point with non-numeric x/y ('12a2"),
        ("no-annotation", "no docElementsXml.ashx found here or in its subfolders"),
        ("truncated-page", "unreadable page image"),
        ("no-src", "<image id='101'> has no 'src' attribute"),
    ],
)
def test_bad_inputs_are_input_errors(tmp_path: Path, run_cli, breakage: str, expected: str) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD")
    xml = sample.root / "book01" / "docElementsXml.ashx"
    named = xml
    if breakage == "malformed":
        _break_xml(sample.root)
    elif breakage == "not-hadara":
        text = xml.read_text(encoding="utf-8")
        xml.write_text(
            text.replace('<HADARA version="0.1">', "").replace("</HADARA>", ""), encoding="utf-8"
        )
    elif breakage == "bad-point":
        text = xml.read_text(encoding="utf-8")
        xml.write_text(text.replace('<point x="', '<point x="12a', 1), encoding="utf-8")
    elif breakage == "no-annotation":
        for book in ("book01", "book02"):
            (sample.root / book / "docElementsXml.ashx").unlink()
        named = sample.root
    elif breakage == "truncated-page":
        named = sample.root / "book01" / "page_002.png"
        named.write_bytes(named.read_bytes()[:300])
    elif breakage == "no-src":
        xml.write_text(
            xml.read_text(encoding="utf-8").replace(' src="page_001.png"', ""), encoding="utf-8"
        )
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2, result.err
    assert expected in result.err
    assert str(named) in result.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--level", "word", "--level must be one of subword, line"),
        ("--pad", "-1", "--pad must be 0 or more pixels"),
        ("--val-frac", "0.7", "--val-frac plus --test-frac"),
    ],
)
def test_bad_options_are_input_errors(
    tmp_path: Path, run_cli, option: str, value: str, expected: str
) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD", with_gotchas=False)
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, option, value, "--test-frac", "0.5")
    assert result.code == 2
    assert expected in result.err
    assert not out.exists()


def test_skip_bad_images_counts_the_zones_of_an_unreadable_page(tmp_path: Path, run_cli) -> None:
    sample = write_vmlhd_sample(tmp_path / "VML-HD", with_gotchas=False)
    page = sample.root / "book01" / "page_002.png"
    page.write_bytes(page.read_bytes()[:300])
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, "--skip-bad-images")
    assert result.code == 0, result.err
    card = read_json(out / "card.json")
    skipped = card["skipped"]["unreadable page image"]
    assert skipped["count"] > 0
    ids = {r["id"] for r in read_jsonl(out / "manifest.jsonl")}
    assert ids and not ids & set(skipped["examples"])
    assert all(r["meta"]["page_id"] != "102" for r in read_jsonl(out / "manifest.jsonl"))
