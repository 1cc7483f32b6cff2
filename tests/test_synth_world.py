"""``data synth world``: determinism, the official layouts, and answers true to the scene.

The truth checks below recompute every answer and caption mention from ``scenes.json`` with
their own small parser of the question text, not with the generator's functions, so a wrong
answer in the generator cannot be hidden by the same mistake in the test.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.synthetic import layouts
from vlm_retain.data.synthetic.fonts import covers, font_by_name, load_font
from vlm_retain.data.synthetic.world import WorldOptions, synth_world
from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.vqa import vqa_accuracy

COLOURS = {"red", "orange", "yellow", "green", "blue", "purple"}
KINDS = {"circle", "square", "triangle", "star", "cross"}
PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle", "stars": "star"}
PLURAL["crosses"] = "cross"
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
OPTIONS = WorldOptions(n=40, seed=3, workers=1, sign_share=0.3)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    synth_world(out, OPTIONS, progress=False)
    return out


@pytest.fixture(scope="module")
def scenes(world: Path) -> dict[int, dict[str, Any]]:
    return {scene["image_id"]: scene for scene in read_json(world / "scenes.json")["scenes"]}


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "card.json"
    }


def _card_without_run_details(folder: Path) -> dict[str, Any]:
    card = read_json(folder / "card.json")
    card.pop("created")
    card["importer"]["options"].pop("workers")
    return card


def test_same_seed_same_bytes_whatever_the_workers(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth_world(again, replace(OPTIONS, workers=2), progress=False)
    first, second = _files(world), _files(again)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert _card_without_run_details(world) == _card_without_run_details(again)
    other = tmp_path / "other"
    synth_world(other, replace(OPTIONS, seed=4), progress=False)
    assert (other / "scenes.json").read_bytes() != (world / "scenes.json").read_bytes()


def test_vqa_files_follow_the_official_layout(world: Path) -> None:
    seen_qids: set[int] = set()
    for file_set in ("vqav2", "signs"):
        for split in ("train", "val", "test"):
            q_path = world / file_set / f"Questions/v2_OpenEnded_mscoco_{split}_questions.json"
            a_path = world / file_set / f"Annotations/v2_mscoco_{split}_annotations.json"
            questions, annotations = read_json(q_path), read_json(a_path)
            assert layouts.vqa_problems(questions, annotations) == []
            assert questions["task_type"] == "Open-Ended"
            assert questions["data_type"] == "mscoco"
            assert questions["data_subtype"] == annotations["data_subtype"] == split
            for ann in annotations["annotations"]:
                assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
                assert ann["answer_type"] in {"yes/no", "number", "other"}
            for question in questions["questions"]:
                image = world / "images" / split / f"COCO_{split}_{question['image_id']:012d}.png"
                assert image.is_file(), image
                assert question["question_id"] not in seen_qids
                seen_qids.add(question["question_id"])
            if file_set == "vqav2" and split == "train":
                assert len(questions["questions"]) > 50


def test_caption_files_follow_the_coco_and_karpathy_layouts(world: Path) -> None:
    image_ids = set()
    for split in ("train", "val", "test"):
        doc = read_json(world / "coco" / "annotations" / f"captions_{split}.json")
        assert layouts.coco_captions_problems(doc) == []
        for image in doc["images"]:
            assert (world / "images" / split / image["file_name"]).is_file()
            with Image.open(world / "images" / split / image["file_name"]) as opened:
                assert opened.size == (image["width"], image["height"])
            image_ids.add(image["id"])
    assert len(image_ids) == OPTIONS.n
    coco = read_json(world / "karpathy" / "dataset_coco.json")
    flickr = read_json(world / "karpathy" / "dataset_flickr30k.json")
    assert layouts.karpathy_problems(coco, dataset="coco") == []
    assert layouts.karpathy_problems(flickr, dataset="flickr30k") == []
    assert {image["split"] for image in coco["images"]} == {"train", "val", "test"}
    for entry in coco["images"]:
        assert (world / "images" / entry["filepath"] / entry["filename"]).is_file()
        assert len(entry["sentences"]) == 5
        assert all(s["tokens"] == re.findall(r"\w+", s["raw"].lower()) for s in entry["sentences"])
    for entry in flickr["images"]:
        assert (world / "images" / entry["filename"]).is_file()
        assert "cocoid" not in entry and "filepath" not in entry


# --- answers recomputed from the scene -----------------------------------------------------------


def _truth(question: str, shapes: list[dict[str, Any]]) -> tuple[str, str]:
    """(family, true answer) of a shape question, computed from the boxes; fails if unparsed."""
    if m := re.fullmatch(r"What color is the (\w+)\?", question):
        (shape,) = [s for s in shapes if s["kind"] == m[1]]
        return "color", shape["color"]
    if m := re.fullmatch(
        r"What (color|shape) is (?:the shape )?(on the far \w+|at the \w+)\?", question
    ):
        shape = _extreme(shapes, m[2].split()[-1])
        return "extreme", shape["color"] if m[1] == "color" else shape["kind"]
    if m := re.fullmatch(r"What (?:shape is the (\w+) object|is the (\w+) shape)\?", question):
        (shape,) = [s for s in shapes if s["color"] == (m[1] or m[2])]
        return "shape", shape["kind"]
    if re.fullmatch(r"How many (shapes are there|shapes are in the picture|objects)\?", question):
        return "count", str(len(shapes))
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", question):
        return "count", str(Counter(s["color"] for s in shapes)[m[1]])
    if m := re.fullmatch(r"How many (\w+) are there\?", question):
        return "count", str(Counter(s["kind"] for s in shapes)[PLURAL[m[1]]])
    if m := re.fullmatch(r"Is there an? (\w+) (\w+)\?", question):
        found = any(s["color"] == m[1] and s["kind"] == m[2] for s in shapes)
        return "exists", "yes" if found else "no"
    if m := re.fullmatch(
        r"Is the (.+) (to the left of|to the right of|above|below) the (.+)\?", question
    ):
        a, b = _named(shapes, m[1]), _named(shapes, m[3])
        axis = 0 if "left" in m[2] or "right" in m[2] else 1
        if a["box"][axis + 2] <= b["box"][axis]:
            first = True
        elif b["box"][axis + 2] <= a["box"][axis]:
            first = False
        else:
            pytest.fail(f"{question}: the shapes overlap along the axis asked about")
        return "relation", "yes" if first == (m[2] in ("to the left of", "above")) else "no"
    pytest.fail(f"question not understood by the test: {question!r}")


def _named(shapes: list[dict[str, Any]], name: str) -> dict[str, Any]:
    words = name.split()
    matches = [
        s for s in shapes if s["kind"] == words[-1] and (len(words) == 1 or s["color"] == words[0])
    ]
    assert len(matches) == 1, f"{name!r} does not name exactly one shape"
    return matches[0]


def _extreme(shapes: list[dict[str, Any]], side: str) -> dict[str, Any]:
    """The shape whose box lies entirely beyond every other box on ``side``."""
    beyond = {
        "left": lambda s, o: s["box"][2] <= o["box"][0],
        "right": lambda s, o: s["box"][0] >= o["box"][2],
        "top": lambda s, o: s["box"][3] <= o["box"][1],
        "bottom": lambda s, o: s["box"][1] >= o["box"][3],
    }[side]
    found = [s for s in shapes if all(beyond(s, o) for o in shapes if o is not s)]
    assert len(found) == 1, f"no unique shape on the far {side}"
    return found[0]


def _annotations(world: Path, file_set: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    pairs = []
    for split in ("train", "val", "test"):
        questions = read_json(
            world / file_set / f"Questions/v2_OpenEnded_mscoco_{split}_questions.json"
        )["questions"]
        annotations = read_json(
            world / file_set / f"Annotations/v2_mscoco_{split}_annotations.json"
        )
        by_qid = {a["question_id"]: a for a in annotations["annotations"]}
        pairs += [(q, by_qid[q["question_id"]]) for q in questions]
    return pairs


def test_every_answer_is_true_to_its_scene(world: Path, scenes: dict[int, dict[str, Any]]) -> None:
    families: Counter[str] = Counter()
    yes_no: Counter[str] = Counter()
    variation = 0
    for question, ann in _annotations(world, "vqav2"):
        family, truth = _truth(question["question"], scenes[question["image_id"]]["shapes"])
        families[family] += 1
        answers = [a["answer"] for a in ann["answers"]]
        top, votes = Counter(answers).most_common(1)[0]
        assert (top, ann["multiple_choice_answer"]) == (truth, truth), question
        assert votes >= 6, answers
        assert vqa_accuracy(truth, answers) == 1.0  # the project's VQAv2 metric, unchanged
        expected_type = {"count": "number", "exists": "yes/no", "relation": "yes/no"}
        assert ann["answer_type"] == expected_type.get(family, "other")
        if ann["answer_type"] == "yes/no":
            yes_no[truth] += 1
        variation += len(set(answers)) > 1
    assert set(families) == {"color", "shape", "count", "exists", "relation", "extreme"}
    assert 0.3 <= yes_no["yes"] / sum(yes_no.values()) <= 0.7  # balanced yes/no
    assert variation > 0  # annotators disagree sometimes ("two", "navy", a mistake)


def test_question_types_follow_vqav2() -> None:
    assert layouts.vqa_question_type("What color is the square?") == "what color is the"
    assert layouts.vqa_question_type("How many shapes are there?") == "how many"
    assert layouts.vqa_question_type("Is there a blue star?") == "is there a"
    assert layouts.vqa_question_type("What shape is the red object?") == "what"
    assert layouts.vqa_question_type("What does the sign say?") == "what does the"
    assert layouts.vqa_question_type("Is the star above the circle?") == "is the"


_PHRASE = re.compile(
    r"\b(an?|one|two|three|four|five|six) (?:(small|large) )?"
    r"(red|orange|yellow|green|blue|purple) (circles?|squares?|triangles?|stars?|cross(?:es)?)\b"
)


def test_captions_are_exact_about_the_scene(world: Path, scenes: dict[int, dict[str, Any]]) -> None:
    coco = read_json(world / "karpathy" / "dataset_coco.json")
    for entry in coco["images"]:
        scene = scenes[entry["cocoid"]]
        shapes = scene["shapes"]
        truth = Counter((s["color"], s["kind"]) for s in shapes)
        sizes = Counter((s["size"], s["color"], s["kind"]) for s in shapes)
        captions = [s["raw"] for s in entry["sentences"]]
        assert len(set(captions)) == 5
        for raw in captions:
            text = raw.lower()
            if scene["sign"]:
                assert "sign" in text
                text = text.replace(scene["sign"]["text"].lower(), " ")
            else:
                assert "sign" not in text
            found: Counter[tuple[str, str]] = Counter()
            found_sizes: Counter[tuple[str, str, str]] = Counter()
            for number, size, colour, kind in _PHRASE.findall(text):
                kind = PLURAL.get(kind, kind)
                found[(colour, kind)] += NUMBERS[number]
                if size:
                    found_sizes[(size, colour, kind)] += NUMBERS[number]
            assert found == truth, raw
            assert not found_sizes or found_sizes == sizes, raw
            words = set(re.findall(r"[a-z]+", text))
            assert words & COLOURS <= {c for c, _ in truth}, raw
            if m := re.match(r"(\w+) shapes?:", text):
                assert NUMBERS[m[1]] == len(shapes), raw
            if "background" in text:
                assert scene["background"]["name"] in text, raw
            if "from left to right" in text:
                order = [(c, k) for _, _, c, k in _PHRASE.findall(text)]
                by_x = sorted(shapes, key=lambda s: s["box"][0] + s["box"][2])
                assert order == [(s["color"], s["kind"]) for s in by_x], raw


# --- scenes and signs ----------------------------------------------------------------------------


def test_shapes_are_large_separate_and_varied(scenes: dict[int, dict[str, Any]]) -> None:
    kinds, colours, size_classes = set(), set(), set()
    for scene in scenes.values():
        boxes = [tuple(s["box"]) for s in scene["shapes"]]
        if scene["sign"]:
            boxes.append(tuple(scene["sign"]["box"]))
        assert 1 <= len(scene["shapes"]) <= OPTIONS.max_shapes
        for i, a in enumerate(boxes):
            assert 0 <= a[0] < a[2] <= scene["width"] and 0 <= a[1] < a[3] <= scene["height"]
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        for shape in scene["shapes"]:
            side = shape["box"][2] - shape["box"][0]
            assert side >= 0.24 * OPTIONS.image_size - 1  # at least one merged 28-px patch
            kinds.add(shape["kind"])
            colours.add(shape["color"])
            size_classes.add(shape["size"])
        expected = OPTIONS.sign_image_size if scene["sign"] else OPTIONS.image_size
        assert scene["width"] == scene["height"] == expected
    assert kinds == KINDS and colours == COLOURS and size_classes == {"small", "large"}


def test_signs_are_legible_covered_and_asked_about(
    world: Path, scenes: dict[int, dict[str, Any]]
) -> None:
    sign_scenes = {i: s for i, s in scenes.items() if s["sign"]}
    assert {s["sign"]["lang"] for s in sign_scenes.values()} == {"en", "ru", "it", "ar"}
    asked = {}
    for question, ann in _annotations(world, "signs"):
        answers = [a["answer"] for a in ann["answers"]]
        assert Counter(answers).most_common(1)[0][0] == ann["multiple_choice_answer"]
        assert question["image_id"] not in asked
        asked[question["image_id"]] = ann["multiple_choice_answer"]
    assert set(asked) == set(sign_scenes)
    scripts = {"ar": r"[\u0600-\u06ff]", "ru": r"[а-яё]", "en": r"[a-z]", "it": r"[a-zàèéìòù]"}
    for image_id, scene in sign_scenes.items():
        sign = scene["sign"]
        assert asked[image_id] == sign["text"]
        spec = font_by_name(sign["font"])
        assert spec.role == "print" and covers(spec, sign["text"])
        assert re.search(scripts[sign["lang"]], sign["text"].lower())
        # Capitals at least 20 px tall: legible for a small vision tower.
        cap = load_font(spec.file, sign["font_size"]).getbbox("H" if sign["lang"] != "ar" else "ا")
        assert cap[3] - cap[1] >= 20, sign


def test_manifest_passes_check_and_splits_by_image(world: Path, run_cli) -> None:
    result = run_cli("data", "check", world)
    assert result.code == 0, result.out + result.err
    records = read_jsonl(world / "manifest.jsonl")
    assert len({r["id"] for r in records}) == len(records)
    split_of: dict[str, set[str]] = {}
    for record in records:
        assert record["source"] == "synth-world" and record["lang"] == "en"
        split_of.setdefault(record["image"], set()).add(record["split"])
        meta = record["meta"]
        if record["task"] == "caption":
            assert record["text"] == meta["references"][0] and len(meta["references"]) == 5
        else:
            assert record["task"] == "vqa" and len(meta["answers"]) == 10
            assert record["text"] == Counter(meta["answers"]).most_common(1)[0][0]
            assert (meta["set"] == "signs") == ("lang" in meta)
    assert all(len(splits) == 1 for splits in split_of.values())
    card = read_json(world / "card.json")
    assert card["importer"]["name"] == "synth-world"
    assert card["notes"]["images"] == OPTIONS.n


def test_cli_writes_the_preview(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "w"
    result = run_cli("data", "synth", "world", "--out", out, "--n", "12", "--preview", "-q")
    assert result.code == 0, result.err
    assert "synth-world" in result.out
    with Image.open(out / "preview.png") as preview:
        assert preview.format == "PNG" and preview.width > 400


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--n", "0"], "--n"), (["--workers", "0"], "--workers"), (["--seed", "-1"], "--seed")],
)
def test_bad_options_exit_2(tmp_path: Path, run_cli, args: list[str], named: str) -> None:
    result = run_cli("data", "synth", "world", "--out", tmp_path / "w", *args, "-q")
    assert result.code == 2
    assert named in result.err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"image_size": 100}, "image_size"),
        ({"sign_image_size": 140}, "sign_image_size"),
        ({"max_shapes": 0}, "max_shapes"),
        ({"sign_share": 1.5}, "sign_share"),
        ({"sign_langs": ("de",)}, "sign_langs"),
        ({"val_frac": 0.5, "test_frac": 0.5}, "val_frac + test_frac"),
        ({"questions_per_image": 0}, "questions_per_image"),
    ],
)
def test_bad_options_name_the_option(change: dict[str, Any], named: str) -> None:
    with pytest.raises(InputError, match=re.escape(named)):
        replace(OPTIONS, **change).validate()


def test_validators_find_broken_layouts(world: Path) -> None:
    q_path = world / "vqav2" / "Questions/v2_OpenEnded_mscoco_train_questions.json"
    a_path = world / "vqav2" / "Annotations/v2_mscoco_train_annotations.json"
    questions, annotations = read_json(q_path), read_json(a_path)
    annotations["annotations"][0]["answers"].pop()
    annotations["annotations"][1]["question_id"] = annotations["annotations"][2]["question_id"]
    del questions["task_type"]
    assert layouts.vqa_problems(questions, read_json(a_path)) != []
    questions["task_type"] = "Open-Ended"
    problems = layouts.vqa_problems(questions, annotations)
    assert any("9 answers" in p for p in problems)
    assert any("duplicate question_id" in p for p in problems)
    captions = read_json(world / "coco" / "annotations" / "captions_train.json")
    captions["annotations"].pop()
    assert any("4 captions" in p for p in layouts.coco_captions_problems(captions))
    karpathy = read_json(world / "karpathy" / "dataset_coco.json")
    karpathy["images"][0]["split"] = "training"
    assert layouts.karpathy_problems(karpathy, dataset="coco") != []
    with pytest.raises(InputError, match="captions"):
        layouts.require_valid(layouts.coco_captions_problems(captions), Path("captions.json"))


def test_cli_exposes_the_world_options(tmp_path, run_cli) -> None:
    out = tmp_path / "easy"
    result = run_cli(
        "data",
        "synth",
        "world",
        "--out",
        out,
        "--n",
        "12",
        "--workers",
        "1",
        "--image-size",
        "84",
        "--max-shapes",
        "2",
        "--questions-per-image",
        "3",
        "--sign-share",
        "0",
        "-q",
    )
    assert result.code == 0, result.err
    import json

    records = [json.loads(line) for line in (out / "manifest.jsonl").open(encoding="utf-8")]
    questions = [r["meta"]["question"] for r in records if r["task"] == "vqa"]
    assert questions and not any("sign" in q.lower() for q in questions)  # --sign-share 0
    from PIL import Image

    first = next((out / "images").rglob("*.png"))
    with Image.open(first) as image:
        assert image.size == (84, 84)
    result = run_cli("data", "synth", "world", "--out", tmp_path / "bad", "--max-shapes", "9")
    assert result.code == 2


# --- a smaller world: --kinds, --colours, --families -------------------------------------------

EASY = WorldOptions(
    n=30,
    seed=5,
    workers=1,
    sign_share=0.2,
    kinds=("triangle", "circle", "square"),  # any order: the set decides
    colours=("red", "green", "blue", "yellow"),
    families=("color", "shape", "count", "exists"),
)


def _world_words(text: str) -> set[str]:
    """The world's kind and colour names in ``text`` (plurals as their kind)."""
    words = {PLURAL.get(word, word) for word in re.findall(r"[a-z]+", text.lower())}
    return words & (KINDS | COLOURS)


def _vqa_records(world: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(world / "manifest.jsonl") if r["task"] == "vqa"]


@pytest.fixture(scope="module")
def easy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("easy") / "w"
    synth_world(out, EASY, progress=False)
    return out


def test_defaults_are_the_full_world() -> None:
    from vlm_retain.data.synthetic.world import ALL_FAMILIES

    options = WorldOptions()
    assert options.kinds == ("circle", "square", "triangle", "star", "cross")
    assert options.colours == ("red", "orange", "yellow", "green", "blue", "purple")
    assert options.families == ALL_FAMILIES
    assert ALL_FAMILIES == (
        "color", "shape", "count", "count_attr", "exists", "relation", "extreme",
    )  # fmt: skip


def test_default_output_is_unchanged(tmp_path: Path) -> None:
    """The bytes from before --kinds/--colours/--families existed (numpy-only files, so the
    hashes do not depend on the Pillow or zlib build); listing every name, in any order, is
    the same as the default."""
    import hashlib

    options = WorldOptions(n=12, seed=0, workers=1, sign_share=0.0)
    synth_world(tmp_path / "d", options, progress=False)
    expected = {
        "scenes.json": "57917e467d99f1eb181a2241dc14c698add0e08f114aeffcac6c0071f9b94d1c",
        "vqav2/Annotations/v2_mscoco_train_annotations.json": (
            "08352b982eb049eca2f42571e49aff49cb09a9cd3dfdab090042d09b4cec70f0"
        ),
        "karpathy/dataset_coco.json": (
            "ff9b890b9614702976ea5935bb4f4c43763931e2c404f1752cd83580ce3ed866"
        ),
    }
    for name, digest in expected.items():
        assert hashlib.sha256((tmp_path / "d" / name).read_bytes()).hexdigest() == digest, name
    shuffled = replace(
        options,
        kinds=tuple(reversed(options.kinds)),
        colours=tuple(reversed(options.colours)),
        families=tuple(reversed(options.families)),
    )
    synth_world(tmp_path / "s", shuffled, progress=False)
    assert _files(tmp_path / "s") == _files(tmp_path / "d")


def test_restricted_world_shows_and_asks_only_what_it_allows(
    easy: Path,
) -> None:
    scenes = {s["image_id"]: s for s in read_json(easy / "scenes.json")["scenes"]}
    shapes = [shape for scene in scenes.values() for shape in scene["shapes"]]
    assert {s["kind"] for s in shapes} == set(EASY.kinds)
    assert {s["color"] for s in shapes} == set(EASY.colours)
    allowed = set(EASY.kinds) | set(EASY.colours)
    records = _vqa_records(easy)
    assert {r["meta"]["family"] for r in records if r["meta"]["set"] == "vqav2"} == set(
        EASY.families
    )
    assert {r["meta"]["family"] for r in records if r["meta"]["set"] == "signs"} == {"sign"}
    for record in records:
        if record["meta"]["set"] == "signs":
            continue
        meta = record["meta"]
        for text in (meta["question"], *meta["answers"]):
            assert _world_words(text) <= allowed, (meta["question"], meta["answers"])
    # Still true to the scene, by the test's own parser ("exists" no's name allowed pairs).
    truths: Counter[str] = Counter()
    for question, ann in _annotations(easy, "vqav2"):
        family, truth = _truth(question["question"], scenes[question["image_id"]]["shapes"])
        assert ann["multiple_choice_answer"] == truth, question
        truths[family, truth] += 1
    assert truths["exists", "no"] > 0 and truths["exists", "yes"] > 0
    card = read_json(easy / "card.json")
    options = card["importer"]["options"]
    assert (options["kinds"], options["colours"], options["families"]) == (
        list(EASY.kinds),
        list(EASY.colours),
        list(EASY.families),
    )


def test_a_one_kind_one_colour_world_still_asks_true_questions(tmp_path: Path) -> None:
    options = WorldOptions(
        n=15,
        seed=1,
        workers=1,
        sign_share=0.0,
        max_shapes=3,
        kinds=("circle",),
        colours=("blue",),
        families=("count_attr", "exists"),
    )
    synth_world(tmp_path / "w", options, progress=False)
    scenes = {s["image_id"]: s for s in read_json(tmp_path / "w" / "scenes.json")["scenes"]}
    assert {(s["color"], s["kind"]) for sc in scenes.values() for s in sc["shapes"]} == {
        ("blue", "circle")
    }
    pairs = _annotations(tmp_path / "w", "vqav2")
    assert len(pairs) == 2 * options.n  # both families can always be asked
    for question, ann in pairs:
        shapes = scenes[question["image_id"]]["shapes"]
        family, truth = _truth(question["question"], shapes)
        assert ann["multiple_choice_answer"] == truth, question
        # Every pair the world can show is in every scene: "Is there ...?" can only be yes,
        # and a count of "blue shapes" or "circles" is every shape.
        assert truth == ("yes" if family == "exists" else str(len(shapes)))
        assert _world_words(question["question"]) <= {"blue", "circle"}
        assert all(_world_words(a["answer"]) <= {"blue", "circle"} for a in ann["answers"])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"kinds": ()}, "kinds"),
        ({"kinds": ("circle", "hexagon")}, "kinds"),
        ({"kinds": ("circle", "circle")}, "kinds"),
        ({"colours": ()}, "colours"),
        ({"colours": ("red", "pink")}, "colours"),
        ({"colours": ("red", "red")}, "colours"),
        ({"families": ()}, "families"),
        ({"families": ("sign",)}, "families"),
        ({"families": ("count", "count")}, "families"),
    ],
)
def test_bad_world_subsets_name_the_option(change: dict[str, Any], named: str) -> None:
    with pytest.raises(InputError, match=rf"^{named} must be a non-empty subset of ") as info:
        replace(OPTIONS, **change).validate()
    message = str(info.value)
    assert "\n" not in message
    allowed = {"kinds": KINDS, "colours": COLOURS, "families": {"color", "count_attr", "extreme"}}
    assert all(name in message for name in allowed[named])  # lists the allowed values


def test_cli_parses_the_world_subsets(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "easy"
    result = run_cli(
        "data",
        "synth",
        "world",
        "--out",
        out,
        "--n",
        "12",
        "--workers",
        "1",
        "--sign-share",
        "0",
        "--kinds",
        "circle, square,triangle",
        "--colours",
        "red,green,blue,yellow",
        "--families",
        "color,shape,count,exists",
        "-q",
    )
    assert result.code == 0, result.err
    options = read_json(out / "card.json")["importer"]["options"]
    assert options["kinds"] == ["circle", "square", "triangle"]
    assert options["colours"] == ["red", "green", "blue", "yellow"]
    assert options["families"] == ["color", "shape", "count", "exists"]
    assert {r["meta"]["family"] for r in _vqa_records(out)} <= {"color", "shape", "count", "exists"}
    shapes = [s for sc in read_json(out / "scenes.json")["scenes"] for s in sc["shapes"]]
    assert {s["kind"] for s in shapes} <= {"circle", "square", "triangle"}
    for flag, value in (("--kinds", "circle,hexagon"), ("--colours", ""), ("--families", "sign")):
        bad = tmp_path / flag.strip("-")
        result = run_cli("data", "synth", "world", "--out", bad, flag, value, "-q")
        assert result.code == 2
        assert flag.strip("-") in result.err
        assert not bad.exists()
