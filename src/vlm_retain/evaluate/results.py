"""``results.json``: one scoring run written for machines, with everything needed to trust it.

Fields (see docs/formats.md): ``schema``, ``task``, ``split``, ``n``, ``metrics`` (rates as
fractions), ``ci95``, ``conventions``, ``breakdown``, ``analysis``, ``warnings``, ``model`` and
``provenance`` (package versions, hashes of the scored file and config, seed, time, command).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.report import MetricReport
from vlm_retain.fsutil import atomic_write_json, sha256_file

RESULTS_SCHEMA = "vlm-retain/results/1"
_PACKAGES = (
    "vlm-retain",
    "numpy",
    "rapidfuzz",
    "jiwer",
    "pycocoevalcap",
    "torch",
    "transformers",
    "peft",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages that can change a score (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_results(
    report: MetricReport,
    *,
    split: str,
    inputs: list[Path],
    seed: int,
    resamples: int,
    model: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results document for ``report``; ``inputs`` are hashed into the provenance."""
    config_hash = None
    if config is not None:
        blob = json.dumps(config, sort_keys=True, ensure_ascii=False, default=str).encode()
        config_hash = "sha256:" + hashlib.sha256(blob).hexdigest()
    return {
        "schema": RESULTS_SCHEMA,
        "task": report.task,
        "split": split,
        "n": report.n,
        "metrics": report.metrics,
        "ci95": report.ci95,
        "conventions": report.conventions,
        "breakdown": report.breakdown,
        "analysis": report.analysis,
        "warnings": report.warnings,
        "model": model or {"path": None, "adapter": None, "family": None, "dtype": None},
        "provenance": {
            "versions": package_versions(),
            "inputs": {str(p): "sha256:" + sha256_file(p) for p in inputs},
            "config_hash": config_hash,
            "seed": seed,
            "bootstrap_resamples": resamples,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        },
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write atomically. NaN is not JSON: an undefined value (a CI over an empty group) is null."""
    atomic_write_json(Path(path), _nan_to_none(results))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def read_results(path: Path) -> dict[str, Any]:
    """Load a results file written by :func:`write_results` (checks the schema)."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("results file not found", path=path) from None
    except ValueError as exc:
        raise InputError(f"malformed JSON ({exc})", path=path) from None
    if not isinstance(results, dict) or results.get("schema") != RESULTS_SCHEMA:
        raise InputError(f"not a {RESULTS_SCHEMA} file", path=path)
    return results
