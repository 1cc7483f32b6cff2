"""``import hf`` on parquet files written the way ``datasets`` writes Teklia/IAM-line.

Teklia/IAM-line ships ``data/{train,validation,test}.parquet`` with an ``image`` column of
``{bytes, path}`` structs (RGB JPEG, resized to height 128) and a ``text`` column, and the
``huggingface`` schema metadata that marks ``image`` as an ``Image`` feature (datasets.md, HF
mirror schema). The helper below writes exactly that; tests add the variants they need.
"""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.samples.render import render_line

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HF_METADATA = {
    "huggingface": json.dumps(
        {
            "info": {
                "features": {
                    "image": {"_type": "Image"},
                    "text": {"dtype": "string", "_type": "Value"},
                }
            }
        }
    )
}
TEKLIA_SCHEMA = pa.schema([("image", IMAGE_TYPE), ("text", pa.string())], metadata=HF_METADATA)

LINES = {
    "train": [
        "put down a resolution on the subject",
        "and he is to be backed by",
        "Mr. Michael Foot has put down",
    ],
    "validation": ["It is a nice day , isn't it ?", "The  Labour  party"],
    "test": ["said , they were", "Sir Roy Welensky"],
}


def jpeg_line(text: str, *, height: int = 128) -> bytes:
    """A rendered line as Teklia stores it: RGB JPEG, fixed height 128."""
    buffer = io.BytesIO()
    render_line(text, height=height, mode="RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def write_parquet(
    path: Path,
    rows: list[dict[str, Any]],
    schema: pa.Schema = TEKLIA_SCHEMA,
    row_group_size: int = 100,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)


def write_teklia(root: Path) -> dict[str, list[bytes]]:
    """``root/data/{train,validation,test}.parquet``; returns the image bytes per split file."""
    written: dict[str, list[bytes]] = {}
    for split, texts in LINES.items():
        images = [jpeg_line(text) for text in texts]
        rows = [
            {"image": {"bytes": data, "path": None}, "text": text}
            for data, text in zip(images, texts, strict=True)
        ]
        write_parquet(root / "data" / f"{split}.parquet", rows)
        written[split] = images
    return written


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_teklia_layout_keeps_bytes_ids_and_splits(tmp_path: Path, run_cli) -> None:
    images = write_teklia(tmp_path / "IAM-line")
    out = tmp_path / "out"
    result = run_cli(
        "data", "import", "hf", tmp_path / "IAM-line", "--out", out, "--lang", "en", "-q"
    )
    assert result.code == 0, result.err
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert sorted(records) == [
        "test-000000",
        "test-000001",
        "train-000000",
        "train-000001",
        "train-000002",
        "validation-000000",
        "validation-000001",
    ]
    assert records["validation-000001"]["text"] == "The Labour party"
    assert records["validation-000000"]["split"] == "val"
    assert records["validation-000000"]["meta"]["original_split"] == "validation"
    assert records["train-000002"]["meta"]["file"] == "data/train.parquet"
    first = records["train-000000"]
    assert first["image"] == "images/train/train-000000.jpg"
    assert first["source"] == "hf" and first["lang"] == "en"
    assert first["meta"]["height"] == 128 and first["meta"]["width"] > 128
    # bytes are written as they are: no decode, no re-encode
    for split_word, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        for row, data in enumerate(images[split_word]):
            stored = (out / "images" / split / f"{split_word}-{row:06d}.jpg").read_bytes()
            assert sha(stored) == sha(data)
    card = read_json(out / "card.json")
    assert card["counts"] == {"train": {"en": 3}, "val": {"en": 2}, "test": {"en": 2}}
    assert card["importer"]["options"]["text_col"] == "text"


def test_shards_count_rows_across_files_and_batches(tmp_path: Path, run_cli) -> None:
    tiny = jpeg_line("x", height=12)
    first = [{"image": {"bytes": tiny, "path": None}, "text": f"line {i}"} for i in range(70)]
    second = [{"image": {"bytes": tiny, "path": None}, "text": f"line {70 + i}"} for i in range(3)]
    # written out of order on purpose: shard order comes from the names, not the listing
    write_parquet(tmp_path / "src" / "data" / "train-00001-of-00002.parquet", second)
    write_parquet(
        tmp_path / "src" / "data" / "train-00000-of-00002.parquet", first, row_group_size=30
    )
    out = tmp_path / "out"
    assert (
        run_cli("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q").code
        == 0
    )
    texts = {r["id"]: r["text"] for r in read_jsonl(out / "manifest.jsonl")}
    assert len(texts) == 73
    assert texts["train-000069"] == "line 69"
    assert texts["train-000070"] == "line 70"
    assert texts["train-000072"] == "line 72"
    record = next(r for r in read_jsonl(out / "manifest.jsonl") if r["id"] == "train-000071")
    assert record["meta"]["file"] == "data/train-00001-of-00002.parquet"
    assert record["meta"]["row"] == 1


def test_gotchas_are_skipped_counted_or_referenced(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "src"
    (src / "data" / "lines").mkdir(parents=True)
    render_line("by path", height=40).save(src / "data" / "lines" / "p1.png")
    png = io.BytesIO()
    render_line("png bytes", height=40).save(png, format="PNG")
    nfd = unicodedata.normalize("NFD", "café  au lait ")
    rows = [
        {"image": {"bytes": jpeg_line("ok"), "path": None}, "text": nfd},
        {"image": {"bytes": jpeg_line("no text"), "path": None}, "text": None},
        {"image": {"bytes": jpeg_line("blank"), "path": None}, "text": "   "},
        {"image": None, "text": "no image at all"},
        {"image": {"bytes": None, "path": "lines/p1.png"}, "text": "by path"},
        {"image": {"bytes": png.getvalue(), "path": "orig/p2.png"}, "text": "png bytes"},
        {"image": {"bytes": None, "path": "lines/gone.png"}, "text": "missing file"},
    ]
    write_parquet(src / "data" / "test.parquet", rows)
    out = tmp_path / "out"
    result = run_cli("data", "import", "hf", src, "--out", out, "--lang", "fr", "-q")
    assert result.code == 0, result.err
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert records["test-000000"]["text"] == "café au lait"
    assert unicodedata.is_normalized("NFC", records["test-000000"]["text"])
    assert (out / records["test-000004"]["image"]).resolve() == (
        src / "data" / "lines" / "p1.png"
    ).resolve()
    assert records["test-000005"]["image"] == "images/test/test-000005.png"
    assert records["test-000005"]["meta"]["image_path"] == "orig/p2.png"
    assert sorted(records) == ["test-000000", "test-000004", "test-000005"]
    card = read_json(out / "card.json")
    skipped = {reason: info["count"] for reason, info in card["skipped"].items()}
    assert skipped == {"empty text": 2, "no image": 1, "image missing": 1}
    assert card["skipped"]["empty text"]["examples"] == ["test-000001", "test-000002"]
    assert card["notes"]["images referenced by path (no bytes in the parquet)"] == 2


def test_id_column_and_custom_columns(tmp_path: Path, run_cli) -> None:
    schema = pa.schema(
        [("line_id", pa.string()), ("img", IMAGE_TYPE), ("transcription", pa.string())]
    )
    rows = [
        {
            "line_id": f"a01-000u-0{i}",
            "img": {"bytes": jpeg_line(f"w{i}", height=20), "path": None},
            "transcription": f"w{i}",
        }
        for i in range(3)
    ]
    write_parquet(tmp_path / "src" / "train.parquet", rows, schema)
    out = tmp_path / "out"
    result = run_cli(
        "data",
        "import",
        "hf",
        tmp_path / "src" / "train.parquet",
        "--out",
        out,
        "--lang",
        "en",
        "--id-col",
        "line_id",
        "--image-col",
        "img",
        "--text-col",
        "transcription",
        "--source",
        "iam-hf",
        "-q",
    )
    assert result.code == 0, result.err
    records = read_jsonl(out / "manifest.jsonl")
    assert [r["id"] for r in records] == ["a01-000u-00", "a01-000u-01", "a01-000u-02"]
    assert {r["source"] for r in records} == {"iam-hf"}
    assert records[0]["image"] == "images/train/a01-000u-00.jpg"
    assert records[0]["meta"]["file"] == "train.parquet"


def _assert_input_error(result, out: Path, *needles: str) -> None:
    assert result.code == 2, result.err
    for needle in needles:
        assert needle in result.err, result.err
    assert not out.exists()


def test_missing_column_lists_the_columns_present(tmp_path: Path, run_cli) -> None:
    write_teklia(tmp_path / "src")
    out = tmp_path / "out"
    result = run_cli(
        "data",
        "import",
        "hf",
        tmp_path / "src",
        "--out",
        out,
        "--lang",
        "en",
        "--text-col",
        "label",
        "-q",
    )
    _assert_input_error(result, out, "train.parquet", "no column 'label'", "image, text")


def test_unknown_split_name_says_how_to_rename(tmp_path: Path, run_cli) -> None:
    write_teklia(tmp_path / "src")
    (tmp_path / "src" / "data" / "test.parquet").rename(tmp_path / "src" / "data" / "extra.parquet")
    out = tmp_path / "out"
    result = run_cli("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "extra.parquet", "cannot tell the split", "validation.parquet")


def test_truncated_image_bytes_name_file_and_row(tmp_path: Path, run_cli) -> None:
    good = jpeg_line("fine")
    rows = [
        {"image": {"bytes": good, "path": None}, "text": "fine"},
        {"image": {"bytes": good[: len(good) // 2], "path": None}, "text": "cut"},
    ]
    write_parquet(tmp_path / "src" / "train.parquet", rows)
    out = tmp_path / "out"
    result = run_cli("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    _assert_input_error(
        result, out, "train.parquet", "row 1", "truncated image", "--skip-bad-images"
    )


def test_bytes_that_are_no_image_are_refused(tmp_path: Path, run_cli) -> None:
    rows = [{"image": {"bytes": b"<html>not found</html>", "path": None}, "text": "x"}]
    write_parquet(tmp_path / "src" / "train.parquet", rows)
    out = tmp_path / "out"
    result = run_cli("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "train.parquet", "row 0", "unknown format")


def test_skip_bad_images_counts_bad_bytes(tmp_path: Path, run_cli) -> None:
    good = jpeg_line("fine")
    rows = [
        {"image": {"bytes": good, "path": None}, "text": "fine"},
        {"image": {"bytes": good[: len(good) // 2], "path": None}, "text": "cut"},
    ]
    write_parquet(tmp_path / "src" / "train.parquet", rows)
    out = tmp_path / "out"
    result = run_cli(
        "data",
        "import",
        "hf",
        tmp_path / "src",
        "--out",
        out,
        "--lang",
        "en",
        "--skip-bad-images",
        "-q",
    )
    assert result.code == 0, result.err
    assert [r["id"] for r in read_jsonl(out / "manifest.jsonl")] == ["train-000000"]
    assert read_json(out / "card.json")["skipped"]["truncated image"]["count"] == 1
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["train-000000.jpg"]


def test_damaged_parquet_file_is_an_input_error(tmp_path: Path, run_cli) -> None:
    write_teklia(tmp_path / "src")
    path = tmp_path / "src" / "data" / "validation.parquet"
    path.write_bytes(path.read_bytes()[:200])
    out = tmp_path / "out"
    result = run_cli("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "validation.parquet", "re-download")


def test_duplicate_ids_in_id_column(tmp_path: Path, run_cli) -> None:
    schema = pa.schema([("id", pa.string()), ("image", IMAGE_TYPE), ("text", pa.string())])
    data = jpeg_line("a", height=20)
    rows = [{"id": "same", "image": {"bytes": data, "path": None}, "text": t} for t in "ab"]
    write_parquet(tmp_path / "src" / "test.parquet", rows, schema)
    out = tmp_path / "out"
    result = run_cli(
        "data",
        "import",
        "hf",
        tmp_path / "src",
        "--out",
        out,
        "--lang",
        "en",
        "--id-col",
        "id",
        "-q",
    )
    _assert_input_error(result, out, "test.parquet", "duplicate id 'same'")


def test_wrong_column_types_and_options(tmp_path: Path, run_cli) -> None:
    schema = pa.schema([("image", pa.string()), ("text", pa.string())])
    write_parquet(tmp_path / "src" / "train.parquet", [{"image": "a.png", "text": "a"}], schema)
    out = tmp_path / "out"
    result = run_cli("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "train.parquet", "not an image struct")
    result = run_cli(
        "data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "english", "-q"
    )
    _assert_input_error(result, out, "ISO 639-1")
    (tmp_path / "empty").mkdir()
    result = run_cli("data", "import", "hf", tmp_path / "empty", "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "no .parquet files")


def _rows_with_ids(ids: list[str]) -> list[dict[str, Any]]:
    data = jpeg_line("x", height=20)
    return [{"id": i, "image": {"bytes": data, "path": None}, "text": f"t {i}"} for i in ids]


ID_SCHEMA = pa.schema(
    [("image", IMAGE_TYPE), ("text", pa.string()), ("id", pa.string())], metadata=HF_METADATA
)


def test_an_id_column_is_used_by_default_and_can_be_declined(tmp_path: Path, run_cli) -> None:
    write_parquet(tmp_path / "src" / "test.parquet", _rows_with_ids(["b-7", "a/1"]), ID_SCHEMA)
    write_parquet(
        tmp_path / "src" / "train.parquet",
        [{"image": {"bytes": jpeg_line("y", height=20), "path": None}, "text": "no id column"}],
    )
    out = tmp_path / "out"
    args = ("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    assert run_cli(*args).code == 0
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    # the file with an id column keeps its ids; the one without numbers its rows
    assert sorted(records) == ["a/1", "b-7", "train-000000"]
    assert records["a/1"]["image"] == "images/test/a_1.jpg"
    # --id-col "" asks for row numbers although there is an id column
    assert run_cli(*args, "--id-col", "", "--overwrite").code == 0
    assert sorted(r["id"] for r in read_jsonl(out / "manifest.jsonl")) == [
        "test-000000",
        "test-000001",
        "train-000000",
    ]


def test_a_repeated_default_id_column_says_how_to_decline_it(tmp_path: Path, run_cli) -> None:
    write_parquet(tmp_path / "src" / "train.parquet", _rows_with_ids(["x", "x"]), ID_SCHEMA)
    out = tmp_path / "out"
    result = run_cli("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    _assert_input_error(result, out, "train.parquet", "duplicate id 'x'", '--id-col ""')


def test_split_option_imports_a_file_whose_name_says_no_split(tmp_path: Path, run_cli) -> None:
    rows = [{"image": {"bytes": jpeg_line(t, height=20), "path": None}, "text": t} for t in "ab"]
    write_parquet(tmp_path / "src" / "iam_lines.parquet", rows)
    write_parquet(tmp_path / "src" / "validation.parquet", rows[:1])
    out = tmp_path / "out"
    args = ("data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "-q")
    _assert_input_error(run_cli(*args), out, "iam_lines.parquet", "cannot tell the split")
    result = run_cli(*args, "--split", "test")
    assert result.code == 0, result.err
    records = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert sorted(records) == ["test-000000", "test-000001", "validation-000000"]
    assert {r["split"] for r in records.values()} == {"test"}
    # the name's own split word is still kept; a name without one has none to keep
    assert records["validation-000000"]["meta"]["original_split"] == "validation"
    assert "original_split" not in records["test-000000"]["meta"]
    assert records["test-000001"]["meta"]["file"] == "iam_lines.parquet"


def test_bad_split_option_is_a_usage_error(tmp_path: Path, run_cli) -> None:
    write_teklia(tmp_path / "src")
    out = tmp_path / "out"
    result = run_cli(
        "data", "import", "hf", tmp_path / "src", "--out", out, "--lang", "en", "--split", "dev"
    )
    _assert_input_error(result, out, "--split must be one of train, val, test, got 'dev'")
