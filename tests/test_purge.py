"""``data purge``: removes tool-derived folders and their staging leftovers, nothing else."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from vlm_retain.data.purge import LEFTOVERS_KIND, plan_purge, purge_folder, staging_leftovers
from vlm_retain.data.samples.peter import write_peter_sample
from vlm_retain.errors import InputError
from vlm_retain.fsutil import MARKER_NAME, write_marker


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def imported(tmp_path: Path, run_cli) -> tuple[Path, Path]:
    """A Peter import (source images referenced with ../, one rotated copy written inside)."""
    sample = write_peter_sample(tmp_path / "peter")
    out = tmp_path / "out"
    result = run_cli(
        "data", "import", "peter", sample.root, "--out", out, "--rotate-portrait", "cw", "-q"
    )
    assert result.code == 0, result.err
    manifest = (out / "manifest.jsonl").read_text(encoding="utf-8")
    assert '"image":"../peter/images/' in manifest and '"image":"images/' in manifest
    return sample.root, out


def test_yes_removes_the_folder_and_leaves_source_images(imported, run_cli) -> None:
    source, out = imported
    before = snapshot(source)
    result = run_cli("data", "purge", out, "--yes")
    assert result.code == 0, result.err
    assert "(manifest)" in result.out and "removed" in result.out
    assert not out.exists()
    assert snapshot(source) == before


def test_declined_confirmation_is_exit_2_and_deletes_nothing(
    imported, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = imported
    before = snapshot(out)
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    result = run_cli("data", "purge", out)
    assert result.code == 2
    assert "nothing deleted" in result.err
    assert snapshot(out) == before


def test_confirmed_at_the_prompt_removes(
    imported, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = imported
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert run_cli("data", "purge", out).code == 0
    assert not out.exists()


def test_folder_without_marker_is_refused(tmp_path: Path, run_cli) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "manifest.jsonl").write_text("{}\n", encoding="utf-8")
    (folder / "notes.txt").write_text("my own work", encoding="utf-8")
    # a marker written by someone else is not ours either
    (folder / MARKER_NAME).write_text(json.dumps({"tool": "other"}), encoding="utf-8")
    before = snapshot(folder)
    result = run_cli("data", "purge", folder, "--yes")
    assert result.code == 2
    assert str(folder) in result.err and "not a vlm-retain folder" in result.err
    assert "nothing was deleted" in result.err
    assert snapshot(folder) == before
    assert run_cli("data", "purge", tmp_path / "absent", "--yes").code == 2


def test_symlinks_are_removed_as_links_never_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "page.jpg").write_bytes(b"source image bytes")
    out = tmp_path / "out"
    out.mkdir()
    write_marker(out, "manifest")
    (out / "manifest.jsonl").write_text("", encoding="utf-8")
    os.symlink(precious, out / "linked-dir")
    os.symlink(precious / "page.jpg", out / "linked-file.jpg")
    plan = plan_purge(out)
    assert plan.files == 4  # marker, manifest, two links (not what they point to)
    purge_folder(out, plan)
    assert not out.exists()
    assert (precious / "page.jpg").read_bytes() == b"source image bytes"


def test_a_symlink_to_a_tool_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_marker(out, "manifest")
    os.symlink(out, tmp_path / "alias")
    with pytest.raises(InputError, match="symbolic link"):
        plan_purge(tmp_path / "alias")
    assert (out / MARKER_NAME).is_file()


def test_source_inside_the_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "raw").mkdir(parents=True)
    write_marker(out, "manifest")
    card = {"importer": {"name": "peter", "source": str(out / "raw")}}
    (out / "card.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(InputError, match="lies inside this folder"):
        plan_purge(out)


def test_staging_leftovers_are_removed_too(imported, run_cli) -> None:
    _, out = imported
    partial = out.parent / ".out.ab12_x9z.partial"
    old = out.parent / ".out.k3j4l5m6.old"
    other = out.parent / ".outer.ab12cd34.partial"  # another folder's leftover: kept
    for folder in (partial, old / "old", other):
        folder.mkdir(parents=True)
        (folder / "manifest.jsonl").write_text("", encoding="utf-8")
    assert staging_leftovers(out) == (partial, old)
    plan = plan_purge(out)
    assert plan.leftovers == (partial, old)
    assert run_cli("data", "purge", out, "--yes").code == 0
    assert not out.exists() and not partial.exists() and not old.exists()
    assert other.is_dir()


def test_leftovers_of_an_interrupted_import_alone_can_be_purged(tmp_path: Path) -> None:
    # named exactly as staged_output_dir names its staging folder (a killed run leaves it)
    partial = Path(tempfile.mkdtemp(prefix=".out.", suffix=".partial", dir=tmp_path))
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "a.png").write_bytes(b"12345")
    plan = plan_purge(tmp_path / "out")
    assert plan.kind == LEFTOVERS_KIND and plan.files == 1 and plan.bytes == 5
    purge_folder(tmp_path / "out", plan)
    assert not partial.exists()


def test_purge_checks_the_marker_again_before_deleting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_marker(out, "manifest")
    plan = plan_purge(out)
    (out / MARKER_NAME).unlink()
    (out / "later.txt").write_text("added after planning", encoding="utf-8")
    with pytest.raises(InputError, match="changed since"):
        purge_folder(out, plan)
    assert (out / "later.txt").is_file()
