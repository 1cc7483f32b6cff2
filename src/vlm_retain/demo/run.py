"""``vlm-retain demo``: the data path, then forgetting and its cure from the shipped base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.fsutil import fresh_output_dir, write_marker


def run_demo(
    out: Path,
    *,
    overwrite: bool = False,
    data_only: bool = False,
    quick: bool = False,
    base: Path | None = None,
    workers: int = 2,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the data path, then (unless ``data_only``) the model path, under ``out``.

    ``base`` replaces the shipped base (a model folder made by ``demo build-base``). The folder
    is built in place (its results record their own paths) and removed again if anything
    fails, so a failed demo never leaves half an output.
    """
    from vlm_retain.demo.data_path import run_data_path

    console = console or Console()
    model = None if data_only else _base_folder(base)  # a bad --base fails before any work
    with fresh_output_dir(Path(out), overwrite=overwrite) as folder:
        write_marker(folder, "demo")
        summary = run_data_path(folder / "data-path", console)
        if model is not None:
            from vlm_retain.demo.forgetting import run_forgetting

            summary["model_path"] = run_forgetting(
                folder / "model-path",
                model,
                scale="quick" if quick else "full",
                workers=workers,
                console=console,
            )
    console.print(f"everything is under {out}; remove it with: vlm-retain data purge {out} --yes")
    return summary


def _base_folder(base: Path | None) -> Path:
    """The model folder to start from: ``base`` (checked to exist) or the shipped base."""
    from vlm_retain.demo.base import shipped_base
    from vlm_retain.models.loading import resolve_model_path

    return resolve_model_path(base) if base is not None else shipped_base()
