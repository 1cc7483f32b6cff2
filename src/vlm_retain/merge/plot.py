"""The sweep's Pareto plot: OCR score against mean retention, one labelled dot per alpha.

Why this picture: the sweep is a trade-off between reading better (left, for CER) and keeping
the base's general skills (up). The floor line shows which points are allowed, the ring shows
the one chosen; a reader sees at once how much OCR the floor costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pareto_plot(doc: dict[str, Any], out: Path) -> Path:
    """Draw ``doc`` (a sweep.json document) to ``out`` (PNG, matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlm_retain.fsutil import atomic_write_bytes

    points = [
        p for p in doc["points"] if p["ocr_score"] is not None and p["mean_retention"] is not None
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        xs = [p["ocr_score"] for p in points]
        ys = [p["mean_retention"] for p in points]
        colors = ["tab:blue" if p["passes"] else "tab:red" for p in points]
        ax.plot(xs, ys, color="0.75", linewidth=1, zorder=1)  # the path from base to fine-tuned
        ax.scatter(xs, ys, c=colors, zorder=2)
        for p in points:
            ax.annotate(
                f"α={p['alpha']:g}",
                (p["ocr_score"], p["mean_retention"]),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
        ax.axhline(doc["floor"], color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(
            f"floor {doc['floor']:g}",
            (0, doc["floor"]),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
            color="tab:red",
        )
        chosen = doc["chosen"]["alpha"]
        for p in points:
            if chosen is not None and p["alpha"] == chosen:
                ax.scatter(
                    [p["ocr_score"]],
                    [p["mean_retention"]],
                    s=220,
                    facecolors="none",
                    edgecolors="tab:green",
                    linewidths=2,
                    zorder=3,
                    label=f"chosen α={chosen:g}",
                )
        if chosen is not None:
            ax.legend(loc="best", fontsize=8)
        metric = doc["ocr_metric"]
        better = "lower is better" if doc["ocr_lower_is_better"] else "higher is better"
        ax.set_xlabel(f"OCR {metric} ({better})")
        ax.set_ylabel("mean retention of general metrics (point / base)")
        ax.set_title("WiSE-FT sweep")
        if not points:
            ax.text(0.5, 0.5, "no point has both scores", ha="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        from io import BytesIO

        buffer = BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return Path(out)
