"""A tiny LAM in the archive's layout: ``lines/img``, ``lines/transcriptions.json``, ``split/``.

Split files are JSON lists of ``{decade_id, img, nameset, text, width, height}`` written with
Python's default ``json.dump`` (non-ASCII escaped as ``\\uXXXX``). Configs: ``basic``,
``decades_vs_decade`` and the nested ``leave_decade_out/leave_decade_<k>_out`` folds, so a loader
must reach a config by its nested path. Line images differ in width and height, as LAM's do.
With gotchas: an accent stored decomposed (NFD), stray and doubled spaces, an empty
transcription, and a line listed in ``basic/test.json`` whose image is not in ``lines/img``.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from vlm_retain.data.samples.render import render_line
from vlm_retain.text import clean_text

#: (decade_id, text): Italian in the register of Muratori's letters.
_LINES = (
    (1, "Illustrissimo Signore e Padrone colendissimo"),
    (1, "Ricevo la gentilissima sua del dì passato"),
    (1, "e le rendo infinite grazie del favore"),
    (1, "che si è degnata di compartirmi"),
    (2, "Le antichità Estensi sono già sotto il torchio"),
    (2, "ma la stampa va lenta per la penuria di carta"),
    (2, "Intanto mi raccomando alla sua bontà"),
    (2, "e le bacio umilissimamente le mani"),
    (3, "Modena, a dì 12 di giugno"),
    (3, "Devotissimo ed obbligatissimo servitore"),
    (3, "Lodovico Antonio Muratori"),
    (3, "Perché la lettera giunga più presto"),
)
#: Split of each line in the ``basic`` config, in the order of ``_LINES``.
_BASIC = ("train", "train", "val", "test") * 3


@dataclass(frozen=True)
class _Item:
    """One record of a LAM split file, fields in the file's order."""

    decade_id: int
    img: str
    nameset: str
    text: str
    width: int
    height: int

    @property
    def stem(self) -> str:
        """The record id the importer gives this item (the image name without extension)."""
        return Path(self.img).stem


@dataclass(frozen=True)
class LamSample:
    """What the writer put on disk, so tests can predict the import."""

    root: Path
    #: image stem -> (basic split, cleaned text, decade_id) for lines an import should keep.
    expected_basic: dict[str, tuple[str, str, int]]
    #: configs written, as ``--config`` values.
    configs: tuple[str, ...]
    #: skip reason -> image stems the ``basic`` import must skip.
    skipped_basic: dict[str, list[str]] = field(default_factory=dict)


def write_lam_sample(root: Path, *, with_gotchas: bool = True) -> LamSample:
    """Write ``root/lines/...`` and return what an import of it should yield."""
    lines_dir = root / "lines"
    img_dir = lines_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    items: list[_Item] = []
    for index, ((decade, text), split) in enumerate(zip(_LINES, _BASIC, strict=True)):
        # Folder numbers of the full pages start at 002; page and line numbers are illustrative.
        name = f"{index // 4 + 2:03d}_{index % 4 + 1:03d}_{index:02d}.jpg"
        image = render_line(text, height=22 + 7 * (index % 5), mode="RGB")
        image.save(img_dir / name, quality=90)
        items.append(_Item(decade, name, split, text, image.width, image.height))

    skipped: dict[str, list[str]] = {}
    if with_gotchas:
        spaced = unicodedata.normalize("NFD", "  Ricevo la gentilissima  sua del dì passato ")
        items[1] = replace(items[1], text=spaced)
        items[5] = replace(items[5], text="")
        skipped["empty transcription"] = [items[5].stem]
        items.append(_Item(3, "004_004_12.jpg", "test", "riga senza immagine", 300, 40))
        skipped["image missing"] = ["004_004_12"]

    _dump(lines_dir / "transcriptions.json", items)
    split_dir = lines_dir / "split"
    _write_config(split_dir / "basic", items, lambda item: item.nameset)
    decades = sorted({item.decade_id for item in items})
    _write_config(split_dir / "decades_vs_decade", items, _leave_out(decades[-1]))
    configs = ["basic", "decades_vs_decade"]
    for decade in decades:
        fold = f"leave_decade_out/leave_decade_{decade}_out"
        _write_config(split_dir / fold, items, _leave_out(decade))
        configs.append(fold)

    dropped = {stem for stems in skipped.values() for stem in stems}
    expected = {
        item.stem: (item.nameset, clean_text(item.text), item.decade_id)
        for item in items
        if item.stem not in dropped
    }
    return LamSample(
        root=root, expected_basic=expected, configs=tuple(configs), skipped_basic=skipped
    )


def _leave_out(decade: int) -> Callable[[_Item], str]:
    """Split rule of a date-based config: one decade is the test set."""

    def split_of(item: _Item) -> str:
        if item.decade_id == decade:
            return "test"
        return "val" if item.nameset == "val" else "train"

    return split_of


def _write_config(folder: Path, items: list[_Item], split_of: Callable[[_Item], str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        chosen = [replace(item, nameset=split) for item in items if split_of(item) == split]
        _dump(folder / f"{split}.json", chosen)


def _dump(path: Path, items: list[_Item]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([asdict(item) for item in items], handle)
