"""The demo's data path: every data command on every source, on built-in sample data.

It writes small datasets in the exact on-disk layouts of Digital Peter, IAM, LAM and VML-HD,
imports each, checks and describes them, exports them for LLaMA-Factory and as Hugging Face
parquet, and imports those exports back. Nothing is downloaded. Seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vlm_retain.data.check import check_manifest
from vlm_retain.data.export.llamafactory import DEFAULT_PROMPT, export_llamafactory
from vlm_retain.data.export.parquet import export_parquet
from vlm_retain.data.importers import hf, iam, lam, peter, sharegpt, vmlhd
from vlm_retain.data.importers.base import CommonOptions, run_import
from vlm_retain.data.samples.iam import write_iam_sample
from vlm_retain.data.samples.lam import write_lam_sample
from vlm_retain.data.samples.peter import write_peter_sample
from vlm_retain.data.samples.vmlhd import write_vmlhd_sample
from vlm_retain.data.stats import manifest_stats
from vlm_retain.errors import ProblemsFound


def run_data_path(out: Path, console: Console) -> dict[str, Any]:
    raw, data, exports = out / "raw", out / "data", out / "export"
    started = time.perf_counter()

    samples: dict[str, Callable[[Path], object]] = {
        "peter": write_peter_sample,
        "iam": write_iam_sample,
        "lam": write_lam_sample,
        "vmlhd": write_vmlhd_sample,
    }
    with console.status("writing sample datasets in the real layouts"):
        for name, write in samples.items():
            write(raw / name)

    importers = [
        ("peter", raw / "peter", peter.PeterOptions(), peter.build),
        ("iam", raw / "iam", iam.IamOptions(), iam.build),
        ("lam", raw / "lam", lam.LamOptions(), lam.build),
        ("vmlhd", raw / "vmlhd", vmlhd.VmlhdOptions(level="line"), vmlhd.build),
    ]
    rows: list[dict[str, Any]] = []
    for name, src, options, build in importers:
        rows.append(_import_and_check(name, src, data / name, options, build, console))

    lf_dir = exports / "llamafactory"
    info = export_llamafactory(
        [data / name for name, *_ in importers], lf_dir, prompt=DEFAULT_PROMPT, overwrite=False
    )
    console.print(f"exported {len(info)} LLaMA-Factory datasets to {lf_dir}")
    export_parquet(data / "iam", exports / "iam-parquet", overwrite=False)
    console.print(f"exported IAM as parquet to {exports / 'iam-parquet'}")

    rows.append(
        _import_and_check(
            "iam <- parquet",
            exports / "iam-parquet",
            data / "iam-from-parquet",
            hf.HfOptions(lang="en", source="iam"),
            hf.build,
            console,
        )
    )
    rows.append(
        _import_and_check(
            "peter <- LLaMA-Factory",
            lf_dir / "peter_train.json",
            data / "peter-from-llamafactory",
            sharegpt.SharegptOptions(lang="ru", source="peter"),
            sharegpt.build,
            console,
        )
    )

    table = Table(title=f"vlm-retain demo: data path ({time.perf_counter() - started:.1f} s)")
    for column in (
        "dataset",
        "train",
        "val",
        "test",
        "skipped",
        "charset",
        "unseen in train",
        "check",
    ):
        table.add_column(column, justify="right" if column not in ("dataset", "check") else "left")
    for row in rows:
        table.add_row(
            row["name"],
            *(
                str(row[k])
                for k in ("train", "val", "test", "skipped", "charset", "unseen", "check")
            ),
        )
    console.print(table)
    return {"rows": rows}


def _import_and_check(
    name: str, src: Path, dest: Path, options: object, build: Callable, console: Console
) -> dict[str, Any]:
    card = run_import(name.split()[0], src, options, build, CommonOptions(out=dest, progress=False))
    report = check_manifest(dest)
    stats = manifest_stats(dest)
    if report.errors:
        report.print(console)
        raise ProblemsFound(f"demo: {dest} failed 'data check' ({report.errors} errors)")
    per_split = {
        split: sum(card["counts"].get(split, {}).values()) for split in ("train", "val", "test")
    }
    unseen = sum(len(chars) for chars in stats.get("unseen_in_train", {}).values())
    return {
        "name": name,
        **per_split,
        "skipped": card["skipped_total"],
        "charset": len(card["charset"]),
        "unseen": unseen,
        "check": "ok" if not report.errors else f"{report.errors} errors",
    }
