"""``import sharegpt`` on LLaMA-Factory multimodal JSON as the current workflow writes it.

The layout follows LLaMA-Factory's ``data/mllm_demo.json``: a JSON array (indent 2) of objects
with ``messages`` (``content`` then ``role``; ``<image>`` in the user turn) and ``images``
(paths relative to the JSON's folder), registered with ``role/content/user/assistant`` tags.
The classic form is ``conversations`` with ``from``/``value`` and ``human``/``gpt``.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.samples.render import render_line

PROMPT = "<image>Transcribe the handwritten text in this image."
LINES = ["зело многа в гафѣ", "put down a resolution", "la lettera del duca", "sir roy welensky"]


def user(content: str) -> dict[str, str]:
    return {"content": content, "role": "user"}


def assistant(content: str) -> dict[str, str]:
    return {"content": content, "role": "assistant"}


def write_workflow_json(root: Path, name: str = "htr_train.json") -> tuple[Path, list[dict]]:
    """``root/<name>`` + ``root/images/line_NNN.png``; items in the mllm_demo shape."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    items: list[dict[str, Any]] = []
    for index, text in enumerate(LINES):
        render_line(text, height=32).save(root / "images" / f"line_{index:03d}.png")
        items.append(
            {
                "messages": [user(PROMPT), assistant(text)],
                "images": [f"images/line_{index:03d}.png"],
            }
        )
    path = root / name
    path.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    return path, items


def test_messages_form_keeps_prompt_and_references_images(tmp_path: Path, run_cli) -> None:
    path, _ = write_workflow_json(tmp_path / "lf")
    out = tmp_path / "out"
    result = run_cli("data", "import", "sharegpt", path, "--out", out, "--lang", "ru", "-q")
    assert result.code == 0, result.err
    records = read_jsonl(out / "manifest.jsonl")
    assert [r["id"] for r in records] == [f"htr_train-{i:06d}" for i in range(4)]
    assert [r["text"] for r in records] == LINES
    assert {r["split"] for r in records} == {"train"}
    first = records[0]
    assert first["meta"]["prompt"] == "Transcribe the handwritten text in this image."
    assert first["meta"]["original_split"] == "train"
    assert first["meta"]["index"] == 0
    assert (out / first["image"]).resolve() == (tmp_path / "lf/images/line_000.png").resolve()
    assert first["meta"]["width"] > 0
    assert read_json(out / "card.json")["importer"]["name"] == "sharegpt"


def test_conversations_jsonl_with_ids_split_option_and_image_dir(tmp_path: Path, run_cli) -> None:
    images = tmp_path / "media"
    images.mkdir()
    render_line("one", height=24).save(images / "a.jpg")
    render_line("two", height=24).save(images / "b.jpg")
    absolute = tmp_path / "elsewhere.png"
    render_line("three", height=24).save(absolute)
    rows = [
        {
            "id": "a01-000u-00",
            "conversations": [
                {"from": "human", "value": "<image>Read this."},
                {"from": "gpt", "value": "one"},
            ],
            "images": ["a.jpg"],
        },
        {
            "id": 17,
            "conversations": [
                {"from": "system", "value": "You read manuscripts."},
                {"from": "human", "value": "<image>Read this."},
                {"from": "gpt", "value": unicodedata.normalize("NFD", "two é")},
            ],
            "images": ["b.jpg"],
        },
        {
            "id": "abs",
            "conversations": [
                {"from": "human", "value": "Read <image>"},
                {"from": "gpt", "value": "three"},
            ],
            "images": [str(absolute)],
        },
    ]
    path = tmp_path / "lines.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(
        "data",
        "import",
        "sharegpt",
        path,
        "--out",
        out,
        "--lang",
        "en",
        "--split",
        "validation",
        "--image-dir",
        images,
        "--source",
        "mine",
        "-q",
    )
    assert result.code == 0, result.err
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert sorted(records) == ["17", "a01-000u-00", "abs"]
    assert {r["split"] for r in records.values()} == {"val"}
    assert records["17"]["meta"]["original_split"] == "validation"
    assert records["17"]["text"] == "two é" and unicodedata.is_normalized(
        "NFC", records["17"]["text"]
    )
    assert records["17"]["meta"]["system"] == "You read manuscripts."
    assert records["abs"]["meta"]["prompt"] == "Read"
    assert (out / records["a01-000u-00"]["image"]).resolve() == (images / "a.jpg").resolve()
    assert (out / records["abs"]["image"]).resolve() == absolute.resolve()
    assert {r["source"] for r in records.values()} == {"mine"}


def test_items_that_are_not_one_image_one_answer_are_counted(tmp_path: Path, run_cli) -> None:
    path, items = write_workflow_json(tmp_path / "lf", "set_test.json")
    two = "images/line_001.png"
    items += [
        {"messages": [user("Transcribe."), assistant("no image")], "images": []},
        {"messages": [user(PROMPT)], "images": [two]},
        {"messages": [user("<image><image>Two"), assistant("x")], "images": [two, two]},
        {"messages": [user(PROMPT), assistant("   ")], "images": [two]},
        {
            "messages": [user(PROMPT), assistant("a"), user("more?"), assistant("b")],
            "images": [two],
        },
        {"messages": [user(PROMPT), assistant("lost")], "images": ["images/missing.png"]},
        {"messages": [user("no tag"), assistant("untagged")], "images": [two]},
    ]
    path.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli("data", "import", "sharegpt", path, "--out", out, "--lang", "en", "-q")
    assert result.code == 0, result.err
    records = read_jsonl(out / "manifest.jsonl")
    assert [r["text"] for r in records] == [*LINES, "untagged"]
    assert {r["split"] for r in records} == {"test"}
    card = read_json(out / "card.json")
    assert {k: v["count"] for k, v in card["skipped"].items()} == {
        "no image": 1,
        "no assistant turn": 1,
        "more than one image": 1,
        "empty answer": 1,
        "more than one exchange": 1,
        "image missing": 1,
    }
    assert card["skipped"]["no image"]["examples"] == ["set_test-000004"]
    assert card["notes"] == {"user turns without <image> (LLaMA-Factory would reject them)": 1}


def _assert_input_error(result, out: Path, *needles: str) -> None:
    assert result.code == 2, result.err
    for needle in needles:
        assert needle in result.err, result.err
    assert not out.exists()


def test_malformed_json_names_line_and_column(tmp_path: Path, run_cli) -> None:
    path, _ = write_workflow_json(tmp_path / "lf")
    text = path.read_text(encoding="utf-8").splitlines()
    assert text[4].endswith(",")
    text[4] = text[4].rstrip(",")  # drop the comma after the first "content"
    path.write_text("\n".join(text), encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli("data", "import", "sharegpt", path, "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "htr_train.json:6", "malformed JSON at column 9")


def test_malformed_jsonl_line(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "x_test.jsonl"
    good = {"messages": [user(PROMPT), assistant("a")], "images": ["a.png"]}
    path.write_text(json.dumps(good) + "\n" + '{"messages": [}\n', encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli("data", "import", "sharegpt", path, "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "x_test.jsonl:2", "malformed JSON")


def test_split_must_be_known(tmp_path: Path, run_cli) -> None:
    path, _ = write_workflow_json(tmp_path / "lf", "mllm_demo.json")
    out = tmp_path / "out"
    result = run_cli("data", "import", "sharegpt", path, "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "mllm_demo.json", "cannot tell the split", "--split")
    result = run_cli(
        "data", "import", "sharegpt", path, "--out", out, "--lang", "en", "--split", "holdout", "-q"
    )
    _assert_input_error(result, out, "--split 'holdout'")


def test_structural_errors_name_the_item(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    cases = {
        "dup_train.json": ([{"id": "a", "messages": [], "images": []}] * 2, "duplicate id 'a'"),
        "role_train.json": (
            [{"messages": [{"role": "bot", "content": "x"}]}],
            "unknown role 'bot'",
        ),
        "alpaca_train.json": ([{"instruction": "x", "output": "y"}], "neither 'messages'"),
        "content_train.json": ([{"messages": [{"role": "user", "content": [1]}]}], "turn 0"),
        "object_train.json": ({"messages": []}, "expected a JSON array"),
    }
    for name, (data, needle) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        result = run_cli("data", "import", "sharegpt", path, "--out", out, "--lang", "en", "-q")
        _assert_input_error(result, out, name, needle)


def test_invalid_utf8_and_directory_source(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "bad_train.json"
    path.write_bytes(b'[{"messages": [{"role": "user", "content": "\xff"}]}]')
    out = tmp_path / "out"
    result = run_cli("data", "import", "sharegpt", path, "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "bad_train.json", "invalid UTF-8")
    (tmp_path / "folder").mkdir()
    result = run_cli(
        "data", "import", "sharegpt", tmp_path / "folder", "--out", out, "--lang", "en", "-q"
    )
    _assert_input_error(result, out, "sharegpt JSON file not found")
