"""A tiny VML-HD: book folders with a HADARA XML ``docElementsXml.ashx`` and page images.

Pages are composed, not scanned: each sub-word (PAW, a run of connected Arabic letters) is
rendered right to left and pasted onto a page canvas at a known box, and that box is what the
XML's ``zone`` polygon says. Tests can therefore check that a crop lands on the right pixels and
that a derived line reads right to left. Layout, as on the TC11 distribution: one folder per book
(book names here are illustrative), ``docElementsXml.ashx`` in it, ``<image src>`` naming the
page file. ``book01`` names pages with their extension and keeps them beside the XML (PNG, so
pixels are exact); ``book02`` names them without extension and keeps JPEGs in ``images/``.
Segments are listed in a different order from the zones, so only the id join pairs them.
With gotchas: an untranscribed zone on every ``book01`` page, a segment whose ``ref_id`` names
no zone, a page whose image file is missing, and first sub-words 1 px from the right page edge
(so a padded crop must be clamped).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, ImageDraw

from vlm_retain.data.samples.render import render_line

#: Letters that never join the next letter: a new sub-word (PAW) starts after each of them.
NON_CONNECTORS = frozenset("اأإآدذرزوؤةء")
PAW_HEIGHT = 30
_LINE_TEXTS = (
    "بسم الله الرحمن الرحيم",
    "الحمد لله رب العالمين",
    "قال الشيخ الرئيس",
    "في علم الطب",
    "كتاب القانون",
    "المقالة الأولى",
    "في حد الطب",
    "وموضوعه بدن الإنسان",
    "من جهة ما يصح",
    "ويزول عن الصحة",
    "والله أعلم بالصواب",
    "تمت المقالة",
)
#: (book folder, first page id, first zone id, page names as in image/@src, file suffix, subfolder)
_BOOKS = (
    ("book01", 101, 1001, ("page_001.png", "page_002.png", "page_003.png"), "", ""),
    ("book02", 201, 5001, ("0001", "0002", "0003"), ".jpg", "images"),
)
_BACKGROUND = 235
_LINE_PITCH = 52
_TOP = 14
_WORD_GAP = 14
_PAW_GAP = 3


def split_paws(word: str) -> list[str]:
    """Cut an Arabic word into its pieces of Arabic word (a new one after each non-connector)."""
    paws: list[str] = []
    current = ""
    for letter in word:
        current += letter
        if letter in NON_CONNECTORS:
            paws.append(current)
            current = ""
    if current:
        paws.append(current)
    return paws


def render_paw(text: str) -> Image.Image:
    """The image pasted for one sub-word (grayscale, right-to-left shaping)."""
    return render_line(text, height=PAW_HEIGHT, mode="L", padding=2, rtl=True)


@dataclass(frozen=True)
class SubWordTruth:
    """Where one sub-word was pasted and what it says: the ground truth a crop is compared
    with, pixel for pixel, which the importer never sees."""

    book: str
    page_id: str
    page_file: Path
    #: (left, top, right, bottom) of the pasted image on the page, right/bottom exclusive.
    box: tuple[int, int, int, int]
    text: str


@dataclass(frozen=True)
class VmlhdSample:
    """What the writer put on disk, so tests can predict both import levels."""

    root: Path
    #: ``<book>_<zone id>`` -> truth, for every sub-word an import should keep.
    subwords: dict[str, SubWordTruth]
    #: ``<book>_<page id>_lNN`` -> sub-word ids of that line, right to left.
    lines: dict[str, list[str]]
    #: (book, page id) -> page size (width, height).
    page_sizes: dict[tuple[str, str], tuple[int, int]]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)


@dataclass
class _Zone:
    zone_id: str
    zone_type: str
    box: tuple[int, int, int, int]
    text: str | None


def write_vmlhd_sample(root: Path, *, with_gotchas: bool = True) -> VmlhdSample:
    """Write ``root/<book>/docElementsXml.ashx`` and page images; return the expected import."""
    rng = random.Random(7)
    right_margin = 1 if with_gotchas else 10
    texts = iter(_LINE_TEXTS)
    rendered = {
        t: render_paw(t) for line in _LINE_TEXTS for w in line.split() for t in split_paws(w)
    }
    widest = max(_line_width(line, rendered) for line in _LINE_TEXTS)
    page_size = (widest + right_margin + 12, _TOP + 2 * _LINE_PITCH + 4)

    subwords: dict[str, SubWordTruth] = {}
    lines: dict[str, list[str]] = {}
    page_sizes: dict[tuple[str, str], tuple[int, int]] = {}
    skipped: dict[str, int] = {}
    untranscribed = 0
    for number, (book, first_page, first_zone, srcs, suffix, subfolder) in enumerate(_BOOKS, 1):
        book_dir = root / book
        book_dir.mkdir(parents=True, exist_ok=True)
        zone_number = first_zone
        pages: list[tuple[str, str, list[_Zone]]] = []
        for page_index, src in enumerate(srcs):
            page_id = str(first_page + page_index)
            canvas = Image.new("L", page_size, _BACKGROUND)
            zones: list[_Zone] = []
            page_lines: list[list[str]] = []
            for line_index in range(2):
                top = _TOP + line_index * _LINE_PITCH
                right = page_size[0] - right_margin
                ids: list[str] = []
                for word in next(texts).split():
                    for paw in split_paws(word):
                        image = rendered[paw]
                        y = top + rng.randint(-3, 3)
                        box = (right - image.width, y, right, y + image.height)
                        canvas.paste(image, box[:2])
                        zones.append(_Zone(str(zone_number), "2", box, paw))
                        ids.append(f"{book}_{zone_number}")
                        zone_number += 1
                        right = box[0] - _PAW_GAP
                    right -= _WORD_GAP - _PAW_GAP
                page_lines.append(ids)
            if with_gotchas and book == "book01":
                # A decoration box that was outlined but never transcribed.
                box = (3, 1, 17, 8)  # above the first line's sub-words (top >= 11)
                ImageDraw.Draw(canvas).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=60)
                zones.append(_Zone(str(zone_number), "1", box, None))
                zone_number += 1
                untranscribed += 1
            file = book_dir / subfolder / (src + suffix)
            missing = with_gotchas and book == "book02" and page_index == len(srcs) - 1
            if missing:
                skipped["page image not found"] = sum(z.text is not None for z in zones)
            else:
                file.parent.mkdir(parents=True, exist_ok=True)
                if file.suffix == ".jpg":
                    canvas.save(file, quality=95)
                else:
                    canvas.save(file)
                page_sizes[(book, page_id)] = page_size
                for z in zones:
                    if z.text is not None:
                        subwords[f"{book}_{z.zone_id}"] = SubWordTruth(
                            book, page_id, file, z.box, z.text
                        )
                for line_number, ids in enumerate(page_lines, start=1):
                    lines[f"{book}_{page_id}_l{line_number:02d}"] = ids
            pages.append((page_id, src, zones))
        orphan = with_gotchas and book == "book02"
        _write_xml(book_dir / "docElementsXml.ashx", str(number), pages, rng, orphan=orphan)
        if orphan:
            skipped["segment whose ref_id names no zone"] = 1
    notes = {"zones without a transcription (ignored)": untranscribed} if untranscribed else {}
    if with_gotchas:
        notes["page images not found"] = 1
        notes["crops clamped to the page edge"] = len(lines)  # the rightmost PAW of each line
    return VmlhdSample(root, subwords, lines, page_sizes, skipped, notes)


def _line_width(line: str, rendered: dict[str, Image.Image]) -> int:
    width = 0
    for word in line.split():
        width += sum(rendered[p].width + _PAW_GAP for p in split_paws(word)) - _PAW_GAP + _WORD_GAP
    return width - _WORD_GAP


def _write_xml(
    path: Path,
    document_id: str,
    pages: list[tuple[str, str, list[_Zone]]],
    rng: random.Random,
    *,
    orphan: bool,
) -> None:
    """HADARA XML as the annotation server exports it: images with zones, then contents."""
    out = ['<?xml version="1.0" encoding="utf-8"?>', '<HADARA version="0.1">']
    out.append(f'  <document id="{document_id}" nbpages="{len(pages)}">')
    for page_id, src, zones in pages:
        out.append(f"    <image id={quoteattr(page_id)} src={quoteattr(src)}>")
        out.append("      <page>")
        for zone in zones:
            left, top, right, bottom = zone.box
            out.append(f'        <zone id="{zone.zone_id}" type="{zone.zone_type}" parent_id="0">')
            out.append("          <polygon>")
            for x, y in ((left, top), (right, top), (right, bottom), (left, bottom)):
                out.append(f'            <point x="{x}" y="{y}"/>')
            out.append("          </polygon>")
            out.append("        </zone>")
        out.append("      </page>")
        out.append("    </image>")
    for page_id, _src, zones in pages:
        segments = [z for z in zones if z.text is not None]
        rng.shuffle(segments)
        out.append(f'    <content image_id="{page_id}">')
        out.append('      <section type="page">')
        for zone in segments:
            out.extend(_segment(zone.zone_id, str(zone.text)))
        if orphan and page_id == pages[0][0]:
            out.extend(_segment("9999", "ضائع"))
        out.append("      </section>")
        out.append("    </content>")
    out.append("  </document>")
    out.append("</HADARA>")
    # CRLF line ends, as a Windows (.NET) server writes them; XML parsers treat them as LF.
    path.write_bytes(("\r\n".join(out) + "\r\n").encode("utf-8"))


def _segment(ref_id: str, text: str) -> list[str]:
    return [
        f'        <segment id="{ref_id}" ref_id="{ref_id}">',
        "          <transcriptionInfo/>",
        f"          <transcription>{escape(text)}</transcription>",
        "        </segment>",
    ]
