"""Image-text retrieval Recall@K in both directions, the Flickr30k/COCO protocol.

From an (images x texts) score matrix where each text is a reference caption of one image
(``benchmarks.md`` 3.2, LAION-AI/CLIP_benchmark ``zeroshot_retrieval.py``):

* text->image: each caption ranks all images; a hit at K when its own image is in the top K;
  averaged over captions;
* image->text: each image ranks all captions; a hit at K when at least one of its captions is
  in the top K; averaged over images.

Ranks are computed by counting, not sorting, so ties are explicit: every other candidate with a
score >= the positive's is counted ahead of it (pessimistic rank). A constant score matrix thus
scores R@1 = 0, never an optimistic 1. Matrices travel as ``SCORES.npy`` plus two id files.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, mean_ci
from vlm_retain.evaluate.metrics.common import item_ids
from vlm_retain.evaluate.metrics.report import MetricReport
from vlm_retain.fsutil import atomic_write_bytes, atomic_write_text, read_utf8

#: Bound on the boolean comparison block, so a COCO 5k x 25k matrix does not need 125 MB at once.
_MAX_CELLS = 8_000_000


# --------------------------------------------------------------------------- validation


def _check_shape(scores: Any) -> np.ndarray:
    """A non-empty 2-D numeric matrix as float64, or a ValueError saying what is wrong."""
    matrix = np.asarray(scores)
    if matrix.ndim != 2:
        raise ValueError(f"scores must be a 2-D (images x texts) matrix, got shape {matrix.shape}")
    if matrix.dtype.kind not in "biuf":
        raise ValueError(f"scores must be numeric, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.float64, copy=False)
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"scores matrix is empty (shape {matrix.shape})")
    return matrix


def _check_finite(
    matrix: np.ndarray,
    image_ids: Sequence[str] | None = None,
    text_ids: Sequence[str] | None = None,
) -> None:
    """A ValueError naming the first NaN/inf (its row and column, and their ids when given)."""
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        image = "" if image_ids is None else f" (image {image_ids[row]!r})"
        text = "" if text_ids is None else f" (text {text_ids[col]!r})"
        raise ValueError(
            f"scores contain {int(bad.sum())} non-finite value(s) (NaN or inf); first at "
            f"image row {row}{image}, text column {col}{text}: {matrix[row, col]}"
        )


def _check_matrix(scores: Any) -> np.ndarray:
    """A finite, non-empty 2-D float matrix, or a ValueError that says where the problem is."""
    matrix = _check_shape(scores)
    _check_finite(matrix)
    return matrix


def _check_text_image(
    text_image: Sequence[int],
    n_images: int,
    n_texts: int,
    image_ids: Sequence[str] | None = None,
) -> np.ndarray:
    """Caption -> image indices: one per column, in range, every image with a caption."""
    owners = np.asarray(text_image)
    if owners.ndim != 1 or len(owners) != n_texts:
        raise ValueError(
            f"text_image has {owners.size} entries but scores has {n_texts} text columns"
        )
    if owners.dtype.kind not in "iu":
        raise ValueError(f"text_image must hold integer image indices, got dtype {owners.dtype}")
    outside = (owners < 0) | (owners >= n_images)
    if outside.any():
        j = int(np.argmax(outside))
        raise ValueError(
            f"text_image[{j}] = {int(owners[j])} is out of range for {n_images} images"
        )
    counts = np.bincount(owners, minlength=n_images)
    if (counts == 0).any():
        i = int(np.argmax(counts == 0))
        image = "" if image_ids is None else f" (image {image_ids[i]!r})"
        raise ValueError(
            f"image row {i}{image} has no caption ({int((counts == 0).sum())} image(s) without "
            "one): image->text recall needs at least one positive per image"
        )
    return owners.astype(np.int64)


def _check_ks(ks: Sequence[int]) -> list[int]:
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"every K must be a positive integer, got {k!r}")
        out.append(int(k))
    if not out:
        raise ValueError("ks is empty")
    return sorted(set(out))


# --------------------------------------------------------------------------- ranks


def text_to_image_ranks(scores: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """1-based rank of each caption's own image among all images, ties counted against it.

    rank_j = #{images i : s[i, j] >= s[own(j), j]}, which includes the own image itself.
    """
    n_images, n_texts = scores.shape
    positive = scores[text_image, np.arange(n_texts)]
    ranks = np.empty(n_texts, dtype=np.int64)
    step = max(1, _MAX_CELLS // n_images)
    for start in range(0, n_texts, step):
        stop = min(n_texts, start + step)
        ranks[start:stop] = (scores[:, start:stop] >= positive[None, start:stop]).sum(axis=0)
    return ranks


def image_to_text_ranks(scores: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """1-based rank of each image's best-placed own caption, ties counted against it.

    The first own caption in the ranking sits after every other image's caption that scores
    at least as high as the best own caption: rank_i = 1 + #{negatives t : s[i, t] >= best_i}.
    Ties between two own captions do not matter (either one is a hit).
    """
    n_images, n_texts = scores.shape
    ranks = np.empty(n_images, dtype=np.int64)
    step = max(1, _MAX_CELLS // n_texts)
    for start in range(0, n_images, step):
        stop = min(n_images, start + step)
        block = scores[start:stop]
        own = text_image[None, :] == np.arange(start, stop)[:, None]
        best = np.where(own, block, -np.inf).max(axis=1)
        ranks[start:stop] = 1 + ((block >= best[:, None]) & ~own).sum(axis=1)
    return ranks


# --------------------------------------------------------------------------- scoring


def _conventions(ks: list[int]) -> dict[str, Any]:
    return {
        "reference": (
            "Flickr30k/COCO retrieval protocol as in LAION-AI/CLIP_benchmark@48de38c "
            "clip_benchmark/metrics/zeroshot_retrieval.py (benchmarks.md 3.2)"
        ),
        "t2i": "text->image R@K: for each caption, hit if its image is among the top K images; "
        "mean over captions",
        "i2t": "image->text R@K: for each image, hit if at least one of its captions is among "
        "the top K captions; mean over images",
        "ks": ks,
        "scores": "higher score = better match; matrix rows are images, columns are texts",
        "ties": "pessimistic: every other candidate scoring >= the positive is ranked ahead of "
        "it (a constant matrix gives R@1 = 0)",
        "scale": "recalls are fractions in [0, 1]; analysis.rsum is the sum of all R@K in "
        "percent points, as papers report it",
        "ranks": "analysis mean/median rank are 1-based (i2t: rank of the best-placed caption)",
        "ci95": "95% percentile bootstrap, seeded: t2i over captions, i2t over images",
    }


def _recall_block(
    direction: str, ranks: np.ndarray, ks: list[int], resamples: int, seed: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    metrics: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    for k in ks:
        hits = (ranks <= k).astype(np.float64)
        name = f"{direction}_r{k}"
        metrics[name] = float(hits.mean())
        ci95[name] = mean_ci(hits, resamples=resamples, seed=seed)
    return metrics, ci95


def score_retrieval(
    scores: np.ndarray,
    text_image: Sequence[int],
    *,
    ks: Sequence[int] = (1, 5, 10),
    image_ids: Sequence[str] | None = None,
    text_ids: Sequence[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> MetricReport:
    """Recall@K both ways from an (n_images, n_texts) score matrix; ``text_image[j]`` = image of j.

    Metrics ``t2i_r{K}`` and ``i2t_r{K}`` (fractions); ``analysis`` holds ``rsum`` (percent
    points) and mean/median ranks. Raises ValueError on NaN/inf, shape mismatch, an image
    without caption or an index out of range.
    """
    matrix = _check_shape(scores)
    n_images, n_texts = matrix.shape
    given_images = item_ids(image_ids, n_images, what="images", name="image ids")
    given_texts = item_ids(text_ids, n_texts, what="texts", name="text ids")
    # Errors name the caller's ids, not the 1-based defaults.
    _check_finite(
        matrix,
        None if image_ids is None else given_images,
        None if text_ids is None else given_texts,
    )
    owners = _check_text_image(
        text_image, n_images, n_texts, None if image_ids is None else given_images
    )
    ks = _check_ks(ks)
    image_ids, text_ids = given_images, given_texts

    t2i = text_to_image_ranks(matrix, owners)
    i2t = image_to_text_ranks(matrix, owners)
    metrics, ci95 = _recall_block("t2i", t2i, ks, resamples, seed)
    i2t_metrics, i2t_ci = _recall_block("i2t", i2t, ks, resamples, seed)
    metrics.update(i2t_metrics)
    ci95.update(i2t_ci)

    analysis = {
        "rsum": float(sum(metrics.values()) * 100.0),
        "t2i_mean_rank": float(t2i.mean()),
        "t2i_median_rank": float(np.median(t2i)),
        "i2t_mean_rank": float(i2t.mean()),
        "i2t_median_rank": float(np.median(i2t)),
        "n_images": n_images,
        "n_texts": n_texts,
    }
    warnings = [
        f"K={k} >= {n_images} images: t2i_r{k} is 1 by construction" for k in ks if k >= n_images
    ]
    per_item: list[dict[str, Any]] = [
        {"direction": "t2i", "id": text_ids[j], "image_id": image_ids[owners[j]], "rank": int(r)}
        for j, r in enumerate(t2i)
    ]
    per_item += [
        {"direction": "i2t", "id": image_ids[i], "image_id": image_ids[i], "rank": int(r)}
        for i, r in enumerate(i2t)
    ]
    return MetricReport(
        task="retrieval",
        n=n_texts,
        metrics=dict(metrics),
        ci95=ci95,
        conventions=_conventions(ks),
        analysis=analysis,
        warnings=warnings,
        per_item=per_item,
    )


# --------------------------------------------------------------------------- files


def sidecar_paths(path: Path) -> tuple[Path, Path]:
    """``X.npy`` -> (``X.images.txt``, ``X.texts.jsonl``) in the same folder."""
    path = Path(path)
    stem = path.name[: -len(".npy")] if path.name.endswith(".npy") else path.name
    return path.with_name(f"{stem}.images.txt"), path.with_name(f"{stem}.texts.jsonl")


@contextlib.contextmanager
def _naming(path: Path, hint: str | None = None) -> Iterator[None]:
    """Turn the shared checks' ValueError into an InputError that names ``path``."""
    try:
        yield
    except ValueError as exc:
        raise InputError(str(exc), path=path, hint=hint) from None


def _load_npy(path: Path) -> np.ndarray:
    """The array in ``path``, checked by the same shape rules as :func:`score_retrieval`."""
    if not path.is_file():
        raise InputError("score matrix file not found", path=path)
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(
            f"not a readable .npy array ({exc})", path=path, hint="save it with numpy.save"
        ) from None
    if not isinstance(matrix, np.ndarray):
        raise InputError("expected one array, not an .npz archive", path=path)
    with _naming(path):
        return _check_shape(matrix)


def _load_image_ids(path: Path, n_rows: int) -> list[str]:
    if not path.is_file():
        raise InputError(
            "image id list not found", path=path, hint="one image id per line, in row order"
        )
    lines = read_utf8(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        image_id = line.rstrip("\r").strip()
        if not image_id:
            raise InputError("empty image id", path=path, line=number)
        if image_id in seen:
            raise InputError(
                f"duplicate image id {image_id!r} (first on line {seen[image_id]})",
                path=path,
                line=number,
            )
        seen[image_id] = number
        ids.append(image_id)
    if len(ids) != n_rows:
        raise InputError(
            f"{len(ids)} image ids but the matrix has {n_rows} rows", path=path, hint="one per row"
        )
    return ids


def _id_field(record: Mapping[str, Any], name: str, path: Path, number: int) -> str:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise InputError(
            "missing or invalid (need a non-empty string or integer)",
            path=path,
            line=number,
            field=name,
        )
    return str(value)


def _load_texts(
    path: Path, n_cols: int, image_row: Mapping[str, int]
) -> tuple[list[str], list[int]]:
    if not path.is_file():
        raise InputError(
            "text list not found",
            path=path,
            hint='one {"id": ..., "image_id": ...} JSON object per line, in column order',
        )
    text_ids: list[str] = []
    owners: list[int] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputError(f"not valid JSON ({exc.args[0]})", path=path, line=number) from None
        if not isinstance(record, dict):
            raise InputError("expected a JSON object", path=path, line=number)
        text_id = _id_field(record, "id", path, number)
        image_id = _id_field(record, "image_id", path, number)
        if text_id in seen:
            raise InputError(
                f"duplicate text id {text_id!r} (first on line {seen[text_id]})",
                path=path,
                line=number,
            )
        if image_id not in image_row:
            raise InputError(
                f"unknown image_id {image_id!r} (not in the image id list)",
                path=path,
                line=number,
                field="image_id",
            )
        seen[text_id] = number
        text_ids.append(text_id)
        owners.append(image_row[image_id])
    if len(text_ids) != n_cols:
        raise InputError(
            f"{len(text_ids)} texts but the matrix has {n_cols} columns",
            path=path,
            hint="one line per column",
        )
    return text_ids, owners


def load_score_matrix(path: Path) -> tuple[np.ndarray, list[str], list[str], list[int]]:
    """Read ``SCORES.npy`` and its id files; return (scores, image_ids, text_ids, text_image).

    Every problem is an :class:`InputError` naming the file (and line): a missing file, counts
    that disagree with the matrix shape, an unknown ``image_id``, a non-JSON line, a NaN.
    """
    path = Path(path)
    images_path, texts_path = sidecar_paths(path)
    matrix = _load_npy(path)
    image_ids = _load_image_ids(images_path, matrix.shape[0])
    image_row = {image_id: row for row, image_id in enumerate(image_ids)}
    text_ids, owners = _load_texts(texts_path, matrix.shape[1], image_row)
    with _naming(path, hint="recompute the scores; NaN/inf cannot be ranked"):
        _check_finite(matrix, image_ids, text_ids)
    with _naming(texts_path):
        _check_text_image(owners, len(image_ids), matrix.shape[1], image_ids)
    return matrix, image_ids, text_ids, owners


def save_score_matrix(
    path: Path,
    scores: np.ndarray,
    image_ids: Sequence[str],
    texts: Sequence[Mapping[str, str]],
) -> None:
    """Write ``path`` (.npy) plus its ``.images.txt`` and ``.texts.jsonl``, each atomically.

    ``texts`` holds one ``{"id": ..., "image_id": ...}`` per column. Inputs are validated
    before anything is written, with the same checks as :func:`score_retrieval`; the id files
    are written first, the matrix last, so a reader never finds a matrix without its ids.
    """
    path = Path(path)
    matrix = _check_matrix(scores)
    image_ids = [str(i) for i in image_ids]
    if len(image_ids) != matrix.shape[0]:
        raise ValueError(f"{len(image_ids)} image ids for {matrix.shape[0]} matrix rows")
    if len(set(image_ids)) != len(image_ids) or any(not i or "\n" in i for i in image_ids):
        raise ValueError("image ids must be unique, non-empty and on one line each")
    row = {image_id: k for k, image_id in enumerate(image_ids)}
    owners = []
    for j, text in enumerate(texts):
        if text.get("id") is None:
            raise ValueError(f"texts[{j}]: missing 'id'")
        if str(text.get("image_id")) not in row:
            raise ValueError(f"texts[{j}]: unknown image_id {text.get('image_id')!r}")
        owners.append(row[str(text["image_id"])])
    _check_text_image(owners, matrix.shape[0], matrix.shape[1])
    if len({str(t["id"]) for t in texts}) != len(texts):
        raise ValueError("text ids must be unique")

    images_path, texts_path = sidecar_paths(path)
    atomic_write_text(images_path, "".join(f"{i}\n" for i in image_ids))
    lines = [
        json.dumps({"id": str(t["id"]), "image_id": str(t["image_id"])}, ensure_ascii=False)
        for t in texts
    ]
    atomic_write_text(texts_path, "".join(f"{line}\n" for line in lines))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(scores), allow_pickle=False)  # keep the caller's dtype
    atomic_write_bytes(path, buffer.getvalue())
