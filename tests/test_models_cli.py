"""``vlm-retain model tiny`` and ``model info`` through the real entry point."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli(run_cli):
    """The real entry point, with the ``model`` group as cli/main.py registers it."""
    return run_cli


def test_tiny_then_info(cli, tmp_path):
    out = tmp_path / "tiny"
    result = cli(
        "model", "tiny", "--family", "qwen2_vl", "--out", out, "--seed", "1", "--size", "xs"
    )
    assert result.code == 0, result.err
    assert "qwen2_vl" in result.out and (out / "model.safetensors").is_file()

    result = cli("model", "info", out)
    assert result.code == 0, result.err
    for word in ("vision", "projector", "llm", "lm_head", "float32", "pil", "Qwen2-VL"):
        assert word in result.out, word
    assert "ImageOnlyQwen2VLProcessor" in result.out

    again = cli("model", "tiny", "--family", "qwen2_vl", "--out", out, "--size", "xs")
    assert again.code == 2 and "already exists" in again.err


def test_errors_exit_2(cli, tmp_path):
    result = cli("model", "tiny", "--family", "llava", "--out", tmp_path / "x")
    assert result.code == 2
    assert "qwen2_5_vl" in result.err and "Traceback" not in result.err
    result = cli("model", "info", tmp_path / "nothing")
    assert result.code == 2 and "not found" in result.err
