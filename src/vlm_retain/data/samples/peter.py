"""A tiny Digital Peter release in the anonymized layout: images/, words/, mapper.csv."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from vlm_retain.data.samples.render import render_line

# Lowercase pre-reform Russian in Peter's spelling, with the Latin decimal i, ѣ, word-final ъ
# and the editorial marks the real transcriptions use.
LINES: dict[str, tuple[str, str]] = {
    # name: (text as written in words/NAME.txt, mapper flag)
    "1_1_10": ("          зело многа в гафѣ i непърестано выхо", "train"),
    "1_1_11": ("дятъ изъ города   и  приходятъ", "train"),
    "1_2_0": ("p s благодарствую за писмо ваше", "train"),
    "1_2_1": ("празником (+ також возми", "train"),
    "2_1_0": ("какъ здравъствуй ⊕ въ 3 ротѣ", "train"),
    "2_1_1": ("и тако онѣ пошли къ мосту", "train"),
    "2_3_4": ("а мы стоимъ у рѣки", "public"),
    "2_3_5": ("i того ради писано", "public"),
    "3_1_0": ("гдѣ сiя вещь обрѣтается", "private"),
    "3_1_1": ("а прочее все благополучно", "private"),
    "3_2_0": ("писано в санктъ питербурхе", ""),
}


@dataclass
class PeterSample:
    """What a test needs to know about the written sample."""

    root: Path
    expected: dict[str, str] = field(default_factory=dict)  # id -> cleaned text
    splits: dict[str, str] = field(default_factory=dict)  # id -> train/val/test
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    portrait: list[str] = field(default_factory=list)


def write_peter_sample(
    root: Path, *, with_mapper: bool = True, with_gotchas: bool = True
) -> PeterSample:
    """Write the sample under ``root``; gotchas add the cases a real release contains."""
    images, words = root / "images", root / "words"
    images.mkdir(parents=True, exist_ok=True)
    words.mkdir(parents=True, exist_ok=True)
    sample = PeterSample(root=root)
    flag_split = {"train": "train", "public": "val", "private": "test", "": "train"}
    rows = []
    for index, (name, (text, flag)) in enumerate(LINES.items()):
        render_line(text.strip(), height=84, mode="RGB").save(images / f"{name}.jpg", quality=90)
        (words / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        sample.expected[name] = " ".join(text.split())
        sample.splits[name] = flag_split[flag]
        rows.append((index, name, flag))
    if with_gotchas:
        # decomposed й (NFD) must come out composed; an empty transcription is skipped
        nfd = unicodedata.normalize("NFD", "пойдемъ")
        (words / "4_1_0.txt").write_text(nfd, encoding="utf-8")
        render_line("пойдемъ", height=84, mode="RGB").save(images / "4_1_0.jpg")
        sample.expected["4_1_0"] = "пойдемъ"
        sample.splits["4_1_0"] = "train"
        rows.append((len(rows), "4_1_0", "train"))
        (words / "4_1_1.txt").write_text("   \n", encoding="utf-8")
        render_line(" ", height=84, mode="RGB").save(images / "4_1_1.jpg")
        rows.append((len(rows), "4_1_1", "train"))
        # a portrait (rotated) line image, as ~121 real ones are
        render_line("на стругахъ", height=84, mode="RGB").rotate(90, expand=True).save(
            images / "4_2_0.jpg"
        )
        (words / "4_2_0.txt").write_text("на стругахъ", encoding="utf-8")
        sample.expected["4_2_0"] = "на стругахъ"
        sample.splits["4_2_0"] = "test"
        sample.portrait.append("4_2_0")
        rows.append((len(rows), "4_2_0", "private"))
        # unpaired files on both sides
        render_line("без текста", height=84, mode="RGB").save(images / "5_1_0.jpg")
        (words / "5_1_1.txt").write_text("без картинки", encoding="utf-8")
        sample.skipped = {
            "empty transcription": 1,
            "image without transcription": 1,
            "transcription without image": 1,
        }
    if with_mapper:
        lines = [",new_name,old_name,train,public,private"]
        for index, name, flag in rows:
            bits = [int(flag == f) for f in ("train", "public", "private")]
            old = f"{int(name.split('_')[0]) + 150}_{name.split('_', 1)[1]}.jpg"
            lines.append(f"{index},{name}.jpg,{old},{bits[0]},{bits[1]},{bits[2]}")
        (root / "mapper.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sample
