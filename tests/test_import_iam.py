"""IAM lines importer on a sample in the real layout (ascii/lines.txt + lines/ PNG tree)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_json, read_jsonl
from vlm_retain.data.importers.iam import detokenize
from vlm_retain.data.samples.iam import (
    FORM_WRITERS,
    LWITLRT_FORMS,
    MISSING_IMAGE,
    line_image_path,
    write_iam_sample,
    write_lwitlrt_lists,
)
from vlm_retain.data.samples.render import render_line


def _import(run_cli, src: Path, out: Path, *args: str | Path):
    return run_cli("data", "import", "iam", src, "--out", out, "-q", *args)


def _by_id(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}


def _skipped(out: Path) -> dict[str, int]:
    return {reason: v["count"] for reason, v in read_json(out / "card.json")["skipped"].items()}


def _form(line_id: str) -> str:
    return line_id.rsplit("-", 1)[0]


def test_default_import_keeps_tokenization_meta_and_counts_skips(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 0, result.err
    records = _by_id(out)
    assert set(records) == set(sample.usable)
    assert {i: r["text"] for i, r in records.items()} == {i: sample.tokenized[i] for i in records}
    # '|' became a space, punctuation stays a separate token (the benchmark convention)
    assert records["c04-160-09"]["text"] == 'Twenty Years , " was anti-British .'
    # a token holding spaces (more than nine fields) survives whole
    assert records["c04-160-07"]["text"] == "the B B C last night that an American film ,"
    # '#' inside a transcription is text, not a comment
    assert records["f07-036-00"]["text"] == "When Nero supped in # his Golden House ,"
    first = records["a01-000u-00"]
    assert first["lang"] == "en" and first["source"] == "iam" and first["task"] == "ocr"
    assert first["meta"]["form"] == "a01-000u"
    assert first["meta"]["segmentation"] == "ok"
    assert first["meta"]["tokenized"] == "A|MOVE|to|stop|Mr.|Gaitskell|from"
    assert isinstance(first["meta"]["graylevel"], int)
    assert len(first["meta"]["bbox"]) == 4 and all(
        isinstance(v, int) for v in first["meta"]["bbox"]
    )
    assert first["meta"]["split_rule"] == "grouped by form, seed 0"
    # the writer comes from ascii/forms.txt, for every line of the form
    assert {i: r["meta"]["writer"] for i, r in records.items()} == {
        i: FORM_WRITERS[_form(i)] for i in records
    }
    assert first["meta"]["writer"] == "000"
    # err lines are kept, flagged in meta
    assert set(sample.err) <= set(records)
    assert {i for i, r in records.items() if r["meta"]["segmentation"] == "err"} == set(sample.err)
    # images referenced in place, never copied
    assert (out / first["image"]).resolve() == line_image_path(sample.root, first["id"]).resolve()
    assert first["meta"]["width"] > 0
    assert not (out / "images").exists()

    card = read_json(out / "card.json")
    assert _skipped(out) == {"image missing": 1, "empty transcription": 1}
    assert card["skipped"]["image missing"]["examples"] == [MISSING_IMAGE]
    assert card["skipped"]["empty transcription"]["examples"] == sample.empty
    assert card["notes"]["lines with word segmentation 'err' (kept)"] == len(sample.err)
    assert card["notes"]["transcriptions with spaces inside a token (kept)"] == 1
    assert card["total"] == len(sample.usable)
    assert card["importer"]["name"] == "iam"


def test_detokenize_reattaches_punctuation_contractions_quotes_and_brackets(
    tmp_path: Path, run_cli
) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--detokenize").code == 0
    records = _by_id(out)
    assert {i: r["text"] for i, r in records.items()} == {i: sample.detokenized[i] for i in records}
    # a quote opened on one line closes on the next line of the same form
    assert records["c04-160-08"]["text"].startswith('"Britain')
    assert records["c04-160-09"]["text"] == 'Twenty Years," was anti-British.'
    assert records["e01-014-06"]["text"] == "to have her gown laced.'"
    assert records["r06-000-00"]["text"] == "We'll go, she said; don't wait!"
    # the tokenized original stays in meta
    assert records["r06-000-00"]["meta"]["tokenized"] == "We|'ll|go|,|she|said|;|do|n't|wait|!"


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ("said|,|they", "said, they"),
        ("We|'ll", "We'll"),
        ("do|n't|CA|N'T|it|'S", "don't CAN'T it'S"),
        ("(|Hell|)|.|An", "(Hell). An"),
        ("[|sic|]|and|{|x|}", "[sic] and {x}"),
        ('he|said|,|"|I|am|"|.', 'he said, "I am".'),
        ("Tears|...|Plus|?!|-|dash", "Tears... Plus?! - dash"),
        ("'|single|'|and|\"|double|\"", "'single' and \"double\""),
    ],
)
def test_detokenize_rules(tokens: str, expected: str) -> None:
    assert detokenize(tokens.split("|"), {}) == expected


def test_detokenize_quote_state_is_per_form_and_per_quote_kind() -> None:
    state: dict[str, bool] = {}
    assert detokenize(['"', "open", "'", "inner"], state) == "\"open 'inner"
    assert detokenize(["end", "'", "now", '"', "."], state) == "end' now\"."
    assert state == {'"': False, "'": False}


def test_lwitlrt_lists_map_both_validation_sets_to_val(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    lists = tmp_path / "lwitlrt"
    left_out = "a01-000u-02"
    write_lwitlrt_lists(lists, sample, leave_out=(left_out,))
    with (lists / "testset.txt").open("a", encoding="utf-8") as handle:
        handle.write("z99-999-00\n")  # names no line in lines.txt
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--splits", lists).code == 0
    records = _by_id(out)
    assert set(records) == set(sample.usable) - {left_out}
    list_of_form = {form: name for name, forms in LWITLRT_FORMS.items() for form in forms}
    for line_id, record in records.items():
        name = list_of_form[_form(line_id)]
        assert record["meta"]["original_split"] == name.removesuffix(".txt")
        assert record["split"] == {"trainset": "train", "testset": "test"}.get(
            record["meta"]["original_split"], "val"
        )
    assert records["c06-083-06"]["meta"]["original_split"] == "validationset1"
    assert records["r06-000-00"]["meta"]["original_split"] == "validationset2"
    assert "split_rule" not in records["c06-083-06"]["meta"]
    card = read_json(out / "card.json")
    assert _skipped(out) == {
        "image missing": 1,
        "empty transcription": 1,
        "not in any split list": 1,
    }
    assert card["skipped"]["not in any split list"]["examples"] == [left_out]
    assert card["notes"]["split-list entries matching no line in lines.txt"] == 1
    assert card["importer"]["options"]["splits"] == str(lists)


def test_uttlist_with_form_ids_takes_all_lines_of_each_form(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    lists = tmp_path / "aachen"
    lists.mkdir()
    # RWTH/Aachen lists name forms, one a line; train_val.uttlist is their union and is not read
    (lists / "train.uttlist").write_text("a01-000u\nc04-160\ne01-014\n", encoding="utf-8")
    (lists / "validation.uttlist").write_text("c06-083\nr06-000\nx01-001\n", encoding="utf-8")
    (lists / "test.uttlist").write_text("f07-036\n", encoding="utf-8")
    (lists / "train_val.uttlist").write_text("a01-000u\nc06-083\n", encoding="utf-8")
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--splits", lists).code == 0
    records = _by_id(out)
    assert set(records) == set(sample.usable)
    expected_split = {
        "a01-000u": "train",
        "c04-160": "train",
        "e01-014": "train",
        "c06-083": "val",
        "r06-000": "val",
        "f07-036": "test",
    }
    assert {i: r["split"] for i, r in records.items()} == {
        i: expected_split[_form(i)] for i in records
    }
    assert records["c06-083-06"]["meta"]["original_split"] == "validation"
    notes = read_json(out / "card.json")["notes"]
    assert notes["split-list entries matching no line in lines.txt"] == 1
    assert notes["files in the --splits folder that are not split lists (not read)"] == 1
    # missing PNG and empty row still counted when their form is listed
    assert _skipped(out) == {"image missing": 1, "empty transcription": 1}


def test_lst_lists_mix_line_and_form_ids(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM", with_gotchas=False)
    lists = tmp_path / "laia"
    lists.mkdir()
    # Laia's aachen lists are tr/va/te.lst; CRLF line ends and blank lines are tolerated
    train = [i for i in sample.rows if not i.startswith(("c06", "f07"))]
    (lists / "tr.lst").write_bytes(("\r\n".join(train) + "\r\n\r\n").encode())
    (lists / "va.lst").write_text("c06-083\n", encoding="utf-8")
    (lists / "test.lst").write_text("f07-036-00\n", encoding="utf-8")
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--splits", lists).code == 0
    records = _by_id(out)
    assert set(records) == set(sample.rows)
    assert {i for i, r in records.items() if r["split"] == "val"} == {"c06-083-06", "c06-083-07"}
    assert {i for i, r in records.items() if r["split"] == "test"} == {"f07-036-00"}
    assert records["f07-036-00"]["meta"]["original_split"] == "test"
    assert read_json(out / "card.json")["skipped"] == {}


def test_id_in_two_splits_lists_is_an_error_naming_both_files(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("a01-000u\nc04-160\n", encoding="utf-8")
    (lists / "test.txt").write_text("f07-036\na01-000u-01\n", encoding="utf-8")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, "--splits", lists)
    assert result.code == 2
    assert f"{lists / 'train.txt'}:1" in result.err and f"{lists / 'test.txt'}:2" in result.err
    assert "a01-000u-01" in result.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"trainset.txt": "a01-000u-00\n", "test.uttlist": "f07-036\n"}, "keep one scheme"),
        ({"README": "lists\n", "train_val.uttlist": "a01-000u\n"}, "no split lists found"),
    ],
)
def test_split_folder_problems(
    tmp_path: Path, run_cli, files: dict[str, str], message: str
) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    lists = tmp_path / "lists"
    lists.mkdir()
    for name, text in files.items():
        (lists / name).write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, "--splits", lists)
    assert result.code == 2
    assert message in result.err and str(lists) in result.err
    assert not out.exists()


def test_without_lists_split_is_grouped_by_form_and_deterministic(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert _import(run_cli, sample.root, out, "--seed", "5").code == 0
    records = read_jsonl(first / "manifest.jsonl")
    assert records == read_jsonl(second / "manifest.jsonl")
    form_split: dict[str, str] = {}
    for record in records:
        assert form_split.setdefault(record["meta"]["form"], record["split"]) == record["split"]
        assert record["meta"]["split_rule"] == "grouped by form, seed 5"
    assert set(form_split.values()) == {"train", "val", "test"}


def test_bad_fraction_is_a_usage_error(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, "--val-frac", "0.6", "--test-frac", "0.5")
    assert result.code == 2 and "--val-frac" in result.err
    assert not out.exists()


def test_missing_ascii_folder_is_an_input_error(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    (sample.root / "ascii" / "lines.txt").rename(sample.root / "lines.txt")
    (sample.root / "ascii" / "forms.txt").unlink()
    (sample.root / "ascii").rmdir()
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2
    assert str(sample.root / "ascii") in result.err and "move it into ascii/" in result.err
    assert not out.exists()
    (sample.root / "lines.txt").unlink()
    result = _import(run_cli, sample.root, out)
    assert result.code == 2 and "ascii/ folder not found" in result.err
    assert not out.exists()


def test_missing_lines_folder_is_an_input_error(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    (sample.root / "lines").rename(sample.root / "lines-unpacked")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2
    assert str(sample.root / "lines") in result.err and "lines.tgz" in result.err
    assert not out.exists()


def _replace_row(sample_root: Path, line_id: str, new_row: bytes) -> int:
    """Replace the row of ``line_id`` in lines.txt; return its 1-based line number."""
    path = sample_root / "ascii" / "lines.txt"
    rows = path.read_bytes().split(b"\n")
    index = next(n for n, row in enumerate(rows) if row.startswith(line_id.encode()))
    rows[index] = new_row
    path.write_bytes(b"\n".join(rows))
    return index + 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (b"c04-160-06 ok 154 19 408 746 1661 89", "expected at least 9"),
        (b"c04-160-06 ok 154", "expected at least 9"),
        (b"c04-160-06 ok 154 19 408 746 wide 89 effect|.", "(field 'w')"),
        (b"c04-160-06 okay 154 19 408 746 1661 89 effect|.", "(field 'segmentation')"),
        (b"../../etc ok 154 19 408 746 1661 89 effect|.", "(field 'id')"),
        (b"a01-000u-00 ok 154 19 408 746 1661 89 effect|.", "listed twice"),
        (b"c04-160-06 ok 154 19 408 746 1661 89 caf\xe9|.", "invalid UTF-8"),
    ],
)
def test_malformed_lines_txt_names_file_and_line(
    tmp_path: Path, run_cli, row: bytes, message: str
) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    number = _replace_row(sample.root, "c04-160-06", row)
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2
    assert f"{sample.root / 'ascii' / 'lines.txt'}:{number}" in result.err
    assert message in result.err
    assert not out.exists()


def test_truncated_png_fails_unless_skipped(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    broken = line_image_path(sample.root, "e01-014-05")
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2
    assert "e01-014-05.png" in result.err and "--skip-bad-images" in result.err
    assert not out.exists()
    assert _import(run_cli, sample.root, out, "--skip-bad-images").code == 0
    assert "e01-014-05" not in _by_id(out)
    assert _skipped(out) == {"image missing": 1, "empty transcription": 1, "truncated image": 1}


def _two_writer_split(records: list[dict]) -> dict[str, set[str]]:
    """Writer -> the splits their lines landed in."""
    found: dict[str, set[str]] = {}
    for record in records:
        found.setdefault(record["meta"]["writer"], set()).add(record["split"])
    return found


def test_group_by_writer_keeps_each_writer_in_one_split(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    # writer 150 wrote two forms: some seeds split them by form, never by writer
    separated = 0
    for seed in range(8):
        by_form, by_writer = tmp_path / f"form{seed}", tmp_path / f"writer{seed}"
        assert _import(run_cli, sample.root, by_form, "--seed", str(seed)).code == 0
        result = _import(
            run_cli, sample.root, by_writer, "--seed", str(seed), "--group-by", "writer"
        )
        assert result.code == 0, result.err
        records = read_jsonl(by_writer / "manifest.jsonl")
        assert set(_by_id(by_writer)) == set(sample.usable)
        assert all(len(splits) == 1 for splits in _two_writer_split(records).values())
        assert {r["meta"]["split_rule"] for r in records} == {f"grouped by writer, seed {seed}"}
        separated += len(_two_writer_split(read_jsonl(by_form / "manifest.jsonl"))["150"]) > 1
    assert separated, "no seed put writer 150's two forms in different splits by form"


def test_group_by_writer_without_forms_txt_is_an_input_error(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    forms = sample.root / "ascii" / "forms.txt"
    forms.unlink()
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, "--group-by", "writer")
    assert result.code == 2
    assert str(forms) in result.err and "--group-by form" in result.err
    assert not out.exists()
    # without forms.txt a form-grouped import still works, with no writer in meta
    assert _import(run_cli, sample.root, out).code == 0
    assert not any("writer" in r["meta"] for r in read_jsonl(out / "manifest.jsonl"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--group-by", "page"), "--group-by must be one of form, writer"),
        (("--group-by", "writer", "--splits", "LISTS"), "only to a derived split"),
    ],
)
def test_bad_group_by_is_a_usage_error(
    tmp_path: Path, run_cli, args: tuple[str, ...], message: str
) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    lists = tmp_path / "lists"
    write_lwitlrt_lists(lists, sample)
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out, *(str(lists) if a == "LISTS" else a for a in args))
    assert result.code == 2 and message in result.err
    assert not out.exists()


_FORMAT = "e.g. a01-000u 000 2 prt 7 5 52 36"


@pytest.mark.parametrize(
    ("row", "message", "hint"),
    [
        ("c04-160 150 2 prt 4 3 35", "expected 8 space-separated fields, found 7", _FORMAT),
        ("c04-160 150 2 some 4 3 35 26", "a field has the wrong form", _FORMAT),
        ("c04-160 w150 2 prt 4 3 35 26", "a field has the wrong form", _FORMAT),
        ("a01-000u 151 2 prt 4 3 35 26", "form id 'a01-000u' listed twice", "one writer"),
    ],
)
def test_malformed_forms_txt_names_file_and_line(
    tmp_path: Path, run_cli, row: str, message: str, hint: str
) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    forms = sample.root / "ascii" / "forms.txt"
    rows = forms.read_text(encoding="utf-8").split("\n")
    index = next(n for n, line in enumerate(rows) if line.startswith("c04-160 "))
    rows[index] = row
    forms.write_text("\n".join(rows), encoding="utf-8")
    out = tmp_path / "out"
    result = _import(run_cli, sample.root, out)
    assert result.code == 2
    assert f"{forms}:{index + 1}" in result.err and message in result.err
    assert hint in result.err
    assert not out.exists()


def test_lines_of_a_form_missing_from_forms_txt_are_counted(tmp_path: Path, run_cli) -> None:
    sample = write_iam_sample(tmp_path / "IAM")
    forms = sample.root / "ascii" / "forms.txt"
    rows = forms.read_text(encoding="utf-8").split("\n")
    forms.write_text("\n".join(r for r in rows if not r.startswith("r06-000 ")), encoding="utf-8")
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--group-by", "writer").code == 0
    records = _by_id(out)
    orphans = {i for i in records if _form(i) == "r06-000"}
    assert orphans and all("writer" not in records[i]["meta"] for i in orphans)
    assert all("writer" in r["meta"] for i, r in records.items() if i not in orphans)
    notes = read_json(out / "card.json")["notes"]
    assert notes["lines whose form is not in forms.txt (no writer)"] == len(orphans)


def test_same_text_by_another_writer_across_splits_is_a_check_warning(
    tmp_path: Path, run_cli
) -> None:
    # IAM had many writers copy the same LOB text: add form a01-000x (writer 001) holding the
    # first line of a01-000u (writer 000), put a01-000u in train and a01-000x in test
    sample = write_iam_sample(tmp_path / "IAM", with_gotchas=False)
    tokenized = "A|MOVE|to|stop|Mr.|Gaitskell|from"
    with (sample.root / "ascii" / "lines.txt").open("a", encoding="utf-8") as handle:
        handle.write(f"a01-000x-00 ok 182 20 375 708 1656 92 {tokenized}\n")
    with (sample.root / "ascii" / "forms.txt").open("a", encoding="utf-8") as handle:
        handle.write("a01-000x 001 1 all 1 1 7 7\n")
    copy = line_image_path(sample.root, "a01-000x-00")
    copy.parent.mkdir(parents=True)
    render_line("A MOVE to stop Mr. Gaitskell from", height=36).save(copy)
    lists = tmp_path / "lists"
    lists.mkdir()
    train = [i for i in sample.rows if not i.startswith(("c06", "f07"))]
    (lists / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (lists / "val.txt").write_text("c06-083\n", encoding="utf-8")
    (lists / "test.txt").write_text("f07-036\na01-000x\n", encoding="utf-8")
    out = tmp_path / "out"
    assert _import(run_cli, sample.root, out, "--splits", lists).code == 0
    records = _by_id(out)
    assert (records["a01-000u-00"]["split"], records["a01-000x-00"]["split"]) == ("train", "test")
    assert records["a01-000x-00"]["meta"]["writer"] == "001"
    report = tmp_path / "check.json"
    result = run_cli("data", "check", out, "--json-out", report)
    assert result.code == 0, result.out
    findings = read_json(report)["findings"]
    assert [(f["kind"], f["severity"], sorted(f["ids"])) for f in findings] == [
        ("leak-text-other-writer", "warning", ["a01-000u-00", "a01-000x-00"])
    ]
    # the same two lines credited to one writer are a leak: an error, exit 1
    forms = sample.root / "ascii" / "forms.txt"
    forms.write_text(
        forms.read_text(encoding="utf-8").replace("a01-000x 001", "a01-000x 000"),
        encoding="utf-8",
    )
    assert _import(run_cli, sample.root, out, "--splits", lists, "--overwrite").code == 0
    result = run_cli("data", "check", out, "--json-out", report)
    assert result.code == 1
    assert [f["kind"] for f in read_json(report)["findings"]] == ["leak-text"]
