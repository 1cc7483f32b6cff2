"""The CLI entry points and exit-code conventions."""

from __future__ import annotations

import subprocess
import sys

from vlm_retain import __version__


def test_version_and_help(run_cli) -> None:
    result = run_cli("--version")
    assert result.code == 0 and __version__ in result.out
    result = run_cli("data", "import", "--help")
    assert result.code == 0
    for source in ("peter", "iam", "lam", "vmlhd", "hf", "sharegpt"):
        assert source in result.out


def test_unknown_option_is_a_usage_error(run_cli, tmp_path) -> None:
    result = run_cli("data", "import", "peter", tmp_path, "--out", tmp_path / "o", "--bogus")
    assert result.code == 2
    assert "--bogus" in result.err


def test_missing_source_is_exit_2(run_cli, tmp_path) -> None:
    result = run_cli("data", "import", "iam", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert result.code == 2
    assert result.err.startswith("error: ") and "nowhere" in result.err


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vlm_retain", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and __version__ in done.stdout
