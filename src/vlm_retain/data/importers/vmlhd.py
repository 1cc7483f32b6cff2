"""VML-HD: one folder per book with a HADARA XML file ``docElementsXml.ashx`` and its page images.

The annotation is sub-word (PAW) boxes on whole pages, so this importer cuts images out:

- ``--level subword`` (default) crops each transcribed ``zone`` (its polygon's axis-aligned box,
  ``--pad`` pixels of margin, clamped to the page) and pairs it with the ``segment`` whose
  ``ref_id`` names the zone;
- ``--level line`` groups a page's sub-word boxes into lines by vertical overlap, orders each line
  right to left (Arabic), crops the union box and joins the texts with ``--paw-separator``
  (empty by default: PAWs are not words, so no word boundary can be recovered and WER on these
  lines means nothing; see docs/datasets/vmlhd.md).

Each page image is opened once and all its crops are cut from it (pages are large scans). The
source has no published split, so pages are assigned to train/val/test with
:func:`~vlm_retain.data.splits.grouped_split` over ``book/page`` keys: all crops of a page land
in one split. Gotchas handled: the ``.ashx`` extension (it is XML), ``image/@src`` with or
without a file extension and the page file possibly in a subfolder, zones without a
transcription (ignored, counted as a note), segments naming no zone (skipped, counted), pages
whose image is missing (all their zones skipped, counted), pages whose image is unreadable (an
error, or with ``--skip-bad-images`` all their zones skipped, counted). SRC may be a folder of
books, one book folder, or one book's ``docElementsXml.ashx`` (its folder is the book).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vlm_retain.data.images import IMAGE_SUFFIXES, BadImage, broken_image, open_image
from vlm_retain.data.importers.base import ImportContext
from vlm_retain.data.manifest import Record
from vlm_retain.data.naming import safe_name, unique_name
from vlm_retain.data.splits import check_fractions, grouped_split
from vlm_retain.errors import InputError
from vlm_retain.text import clean_text

ANNOTATION_NAME = "docElementsXml.ashx"
LEVELS = ("subword", "line")
_LAYOUT_HINT = (
    f"pass a folder of book folders, one book folder, or a book's {ANNOTATION_NAME} itself"
)
_POSITION_SUFFIX = re.compile(r": line \d+, column \d+$")
#: A sub-word joins a line when its vertical overlap with the line covers this share of the
#: shorter of the two heights: small PAWs (a lone alif) sit fully inside their line's band,
#: while tall letters reaching into the next line overlap that line only a little.
LINE_OVERLAP = 0.5

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class VmlhdOptions:
    """``seed``/``val_frac``/``test_frac`` drive the page-grouped split (VML-HD ships none)."""

    level: str = "subword"
    paw_separator: str = ""
    pad: int = 2
    seed: int = 0
    val_frac: float = 0.1
    test_frac: float = 0.1


@dataclass(frozen=True, slots=True)
class SubWord:
    """A transcribed zone: where it is and what it says."""

    zone_id: str
    zone_type: str
    parent_id: str
    box: Box
    text: str


@dataclass
class Page:
    """One ``image`` element of a book and the transcribed zones on it."""

    book: str
    page_id: str
    src: str
    subwords: list[SubWord] = field(default_factory=list)


def build(ctx: ImportContext, opts: VmlhdOptions) -> list[Record]:
    """Read every book under ``ctx.src`` and crop its transcribed zones (or lines).

    All pages are read before any is cropped, because the split is drawn over every page key
    of every book at once: a seed then gives the same split whichever book is listed first.
    """
    if opts.level not in LEVELS:
        raise InputError(f"--level must be one of {', '.join(LEVELS)}, got {opts.level!r}")
    if opts.pad < 0:
        raise InputError(f"--pad must be 0 or more pixels, got {opts.pad}")
    check_fractions(opts.val_frac, opts.test_frac)
    books = find_books(ctx.src)
    if ctx.src.is_file() and ctx.src.parent.resolve() in ctx.out.resolve().parents:
        raise InputError(
            "--out must not be inside the book folder",
            path=ctx.out,
            hint="page images are searched there; write derived data elsewhere",
        )
    if ctx.src.is_dir() and books[0][0] != ctx.src:
        for folder in sorted(p for p in ctx.src.iterdir() if p.is_dir()):
            if _annotation_file(folder) is None:
                ctx.note(f"folders without {ANNOTATION_NAME} (ignored)")
    pages_of = [(book_dir, read_book(ctx, book_dir, annotation)) for book_dir, annotation in books]
    split_of = grouped_split(
        (_page_key(page) for _, pages in pages_of for page in pages if page.subwords),
        seed=opts.seed,
        val_frac=opts.val_frac,
        test_frac=opts.test_frac,
    )
    records: list[Record] = []
    used_names: set[str] = set()
    for book_dir, pages in pages_of:
        images = _ImageIndex(book_dir)
        for page in pages:
            if page.subwords:
                split = split_of[_page_key(page)]
                records.extend(_page_records(ctx, opts, page, images, split, used_names))
    return records


def find_books(src: Path) -> list[tuple[Path, Path]]:
    """(book folder, annotation file) pairs: ``src`` itself when it is a book, else its children.

    ``src`` may also be a book's annotation file (what a user finds first when looking into a
    book): its folder is then the book, where the page images are looked for.
    """
    if src.is_file():
        if src.name.lower() != ANNOTATION_NAME.lower():
            raise InputError(
                f"expected a folder or a {ANNOTATION_NAME} file", path=src, hint=_LAYOUT_HINT
            )
        return [(src.parent, src)]
    own = _annotation_file(src)
    if own is not None:
        return [(src, own)]
    books = [
        (folder, annotation)
        for folder in sorted(p for p in src.iterdir() if p.is_dir())
        if (annotation := _annotation_file(folder)) is not None
    ]
    if not books:
        raise InputError(
            f"no {ANNOTATION_NAME} found here or in its subfolders", path=src, hint=_LAYOUT_HINT
        )
    return books


def _annotation_file(folder: Path) -> Path | None:
    """The annotation file of a book folder, matched case-insensitively (Windows-made archives)."""
    exact = folder / ANNOTATION_NAME
    if exact.is_file():
        return exact
    for path in sorted(folder.iterdir()):
        if path.name.lower() == ANNOTATION_NAME.lower() and path.is_file():
            return path
    return None


def read_book(ctx: ImportContext, book_dir: Path, annotation: Path) -> list[Page]:
    """Parse one HADARA file into pages of transcribed zones; count what cannot be joined."""
    root = _parse_xml(annotation)
    if root.tag != "HADARA":
        raise InputError(
            f"root element is <{root.tag}>, not <HADARA>",
            path=annotation,
            hint="is this a VML-HD docElementsXml.ashx?",
        )
    book = book_dir.name or book_dir.resolve().name
    pages: dict[str, Page] = {}
    zones: dict[str, tuple[Page, ET.Element]] = {}
    for number, image in enumerate(root.iter("image"), start=1):
        page_id = _attribute(image, "id", annotation, f"<image> number {number}")
        src = _attribute(image, "src", annotation, f"<image id={page_id!r}>")
        if page_id in pages:
            raise InputError(
                f"page id {page_id!r} appears twice", path=annotation, field="image/@id"
            )
        page = pages[page_id] = Page(book=book, page_id=page_id, src=src)
        for zone in image.iter("zone"):
            zone_id = _attribute(zone, "id", annotation, f"a <zone> of page {page_id!r}")
            if zone_id in zones:
                raise InputError(
                    f"zone id {zone_id!r} appears twice",
                    path=annotation,
                    field="zone/@id",
                    hint="the join of segments by ref_id would be ambiguous",
                )
            zones[zone_id] = (page, zone)

    transcribed: set[str] = set()
    for content in root.iter("content"):
        for segment in content.iter("segment"):
            ref_id = segment.get("ref_id", "").strip()
            example = f"{book}_segment_{segment.get('id', '?')}"
            if ref_id not in zones:
                ctx.skip("segment whose ref_id names no zone", example)
                continue
            if ref_id in transcribed:
                ctx.skip("second segment for the same zone", example)
                continue
            transcribed.add(ref_id)
            page, zone = zones[ref_id]
            if content.get("image_id") not in (None, page.page_id):
                ctx.note("segments filed under another page's content (zone's page used)")
            text = clean_text(_transcription(segment))
            if not text:
                ctx.skip("empty transcription", f"{book}_{ref_id}")
                continue
            box = _zone_box(zone, annotation, ref_id)
            if box is None:
                ctx.skip("zone without polygon points", f"{book}_{ref_id}")
                continue
            page.subwords.append(
                SubWord(
                    zone_id=ref_id,
                    zone_type=zone.get("type", ""),
                    parent_id=zone.get("parent_id", ""),
                    box=box,
                    text=text,
                )
            )
    untranscribed = len(zones.keys() - transcribed)
    if untranscribed:
        ctx.note("zones without a transcription (ignored)", untranscribed)
    return list(pages.values())


def _transcription(segment: ET.Element) -> str:
    """All text inside ``<transcription>`` (markup inside it, if any, is flattened)."""
    element = segment.find("transcription")
    return "".join(element.itertext()) if element is not None else ""


def _parse_xml(path: Path) -> ET.Element:
    """Parse ``path`` and drop XML namespaces, so ``<h:zone>`` and ``<zone>`` read the same."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        line, column = exc.position
        reason = _POSITION_SUFFIX.sub("", str(exc))
        raise InputError(
            f"malformed XML ({reason}, column {column + 1})",
            path=path,
            line=line,
            hint="re-extract the book folder",
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", path=path) from None
    root = tree.getroot()
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.rsplit("}", 1)[1]
    return root


def _attribute(element: ET.Element, name: str, path: Path, what: str) -> str:
    value = (element.get(name) or "").strip()
    if not value:
        raise InputError(
            f"{what} has no {name!r} attribute", path=path, field=f"{element.tag}/@{name}"
        )
    return value


def _zone_box(zone: ET.Element, path: Path, zone_id: str) -> Box | None:
    """Axis-aligned box (left, top, right, bottom) around a zone's polygon points."""
    xs: list[float] = []
    ys: list[float] = []
    for point in zone.iter("point"):
        try:
            x, y = float(point.get("x", "")), float(point.get("y", ""))
        except ValueError:
            raise InputError(
                f"zone {zone_id!r} has a point with non-numeric x/y "
                f"({point.get('x')!r}, {point.get('y')!r})",
                path=path,
                field="point/@x,@y",
            ) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InputError(f"zone {zone_id!r} has a non-finite point", path=path, field="point")
        xs.append(x)
        ys.append(y)
    if not xs:
        return None
    return (min(xs), min(ys), max(xs), max(ys))


class _ImageIndex:
    """Finds a page file from ``image/@src``: exact path, then file name, then name without
    extension, anywhere under the book folder (case-insensitive)."""

    def __init__(self, book_dir: Path) -> None:
        self.book_dir = book_dir
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)
        for path in sorted(book_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                self.by_name[path.name.lower()].append(path)
                self.by_stem[path.stem.lower()].append(path)

    def find(self, src: str) -> tuple[Path | None, bool]:
        """(page file or None, whether several files matched and the first was taken)."""
        direct = self.book_dir / src.replace("\\", "/")
        inside = not Path(src).is_absolute() and ".." not in Path(src).parts
        if inside and direct.suffix.lower() in IMAGE_SUFFIXES and direct.is_file():
            return direct, False
        name = Path(src.replace("\\", "/")).name.lower()
        stem = Path(name).stem if Path(name).suffix in IMAGE_SUFFIXES else name
        candidates = self.by_name.get(name) or self.by_stem.get(stem) or []
        return (candidates[0] if candidates else None), len(candidates) > 1


def _page_records(
    ctx: ImportContext,
    opts: VmlhdOptions,
    page: Page,
    images: _ImageIndex,
    split: str,
    used_names: set[str],
) -> list[Record]:
    """Crop the records of one page from its image, opened once; ``used_names`` keeps file
    names unique across pages (ids differing only in unsafe characters would share one)."""
    path, ambiguous = images.find(page.src)
    if path is None:
        ctx.note("page images not found")
        for subword in page.subwords:
            ctx.skip("page image not found", f"{page.book}_{subword.zone_id} (src {page.src!r})")
        return []
    if ambiguous:
        ctx.note("page names matching several files (first in path order taken)")
    base_meta = {
        "book": page.book,
        "page_id": page.page_id,
        "page_file": path.relative_to(images.book_dir).as_posix(),
        "split_rule": f"grouped by book/page, seed {opts.seed}",
    }
    if opts.level == "subword":
        items = [(f"{page.book}_{s.zone_id}", safe_name(s.zone_id), [s]) for s in page.subwords]
    else:
        items = [
            (f"{page.book}_{page.page_id}_l{n:02d}", f"l{n:02d}", line)
            for n, line in enumerate(group_lines(page.subwords), start=1)
        ]
    try:
        image = _load_page(path)
    except InputError:
        if not ctx.skip_bad_images:
            raise
        for record_id, _, _ in items:
            ctx.skip("unreadable page image", record_id)
        return []
    records: list[Record] = []
    for record_id, file_stem, members in items:
        wanted = _crop_box(_union(s.box for s in members), opts.pad)
        box = _clamp(wanted, image.width, image.height)
        if box[2] <= box[0] or box[3] <= box[1]:
            ctx.skip("zone outside its page image", record_id)
            continue
        if box != wanted:
            ctx.note("crops clamped to the page edge")
        meta = {**base_meta, "bbox": list(box)}
        if opts.level == "subword":
            only = members[0]
            meta.update(zone_id=only.zone_id, zone_type=only.zone_type)
            if only.parent_id:
                meta["parent_id"] = only.parent_id
            text = only.text
        else:
            meta.update(
                zone_ids=[s.zone_id for s in members],
                zone_types=sorted({s.zone_type for s in members}),
            )
            text = opts.paw_separator.join(s.text for s in members)
        name = unique_name(
            f"{safe_name(page.book)}/{safe_name(page.page_id)}/{file_stem}", used_names
        )
        records.append(
            Record.create(
                id=record_id,
                image=ctx.save_image(image.crop(box), name),
                text=text,
                lang="ar",
                source="vmlhd",
                split=split,
                meta=meta,
            )
        )
    return records


def group_lines(subwords: list[SubWord]) -> list[list[SubWord]]:
    """Cluster a page's sub-words into lines by vertical overlap; lines top to bottom, each
    ordered right to left (Arabic reading order)."""
    lines: list[tuple[list[float], list[SubWord]]] = []  # ([top, bottom], members)
    for subword in sorted(subwords, key=lambda s: ((s.box[1] + s.box[3]) / 2, -s.box[2])):
        top, bottom = subword.box[1], subword.box[3]
        best, best_share = None, 0.0
        for band, members in lines:
            overlap = min(bottom, band[1]) - max(top, band[0])
            shorter = max(1e-9, min(bottom - top, band[1] - band[0]))
            share = overlap / shorter
            if share > best_share:
                best, best_share = (band, members), share
        if best is not None and best_share >= LINE_OVERLAP:
            band, members = best
            band[0], band[1] = min(band[0], top), max(band[1], bottom)
            members.append(subword)
        else:
            lines.append(([top, bottom], [subword]))
    lines.sort(key=lambda line: line[0][0])
    return [sorted(members, key=lambda s: (-s.box[2], -s.box[0])) for _, members in lines]


def _load_page(path: Path) -> Image.Image:
    """Decode a page once, as L or RGB, refusing decompression bombs and broken files."""
    try:
        with open_image(path) as image:
            mode = image.mode if image.mode in ("L", "RGB") else "RGB"
            if image.mode in ("1", "LA", "I;16", "I;16B", "I;16L"):
                mode = "L"
            try:
                return image.convert(mode)
            except (OSError, SyntaxError, ValueError) as exc:
                raise broken_image(exc) from None
    except BadImage as bad:
        raise InputError(
            f"unreadable page image: {bad}", path=path, hint="re-extract the book folder"
        ) from None


def _union(boxes: Iterable[Box]) -> Box:
    listed = list(boxes)
    return (
        min(b[0] for b in listed),
        min(b[1] for b in listed),
        max(b[2] for b in listed),
        max(b[3] for b in listed),
    )


def _crop_box(box: Box, pad: int) -> tuple[int, int, int, int]:
    """Whole-pixel box around ``box`` grown by ``pad`` (may reach outside the page)."""
    return (
        math.floor(box[0]) - pad,
        math.floor(box[1]) - pad,
        math.ceil(box[2]) + pad,
        math.ceil(box[3]) + pad,
    )


def _clamp(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    return (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))


def _page_key(page: Page) -> str:
    return f"{page.book}/{page.page_id}"
