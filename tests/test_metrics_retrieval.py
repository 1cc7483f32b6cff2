"""Retrieval Recall@K: a hand-worked matrix, ties, varying captions per image, bad input, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlm_retain.errors import InputError
from vlm_retain.evaluate.metrics.retrieval import (
    load_score_matrix,
    save_score_matrix,
    score_retrieval,
    sidecar_paths,
)

# 3 images x 6 captions, k varies: image A owns c0 c1 c2, image B owns c3, image C owns c4 c5.
#
#          c0    c1    c2    c3    c4    c5
#   A     0.9   0.2   0.5   0.6   0.1   0.3
#   B     0.1   0.8   0.4   0.35  0.2   0.3
#   C     0.3   0.1   0.5   0.2   0.9   0.1
#
# text->image rank = number of images scoring >= the own image in that column:
#   c0: 0.9 vs 0.1, 0.3 -> 1      c1: 0.2 vs 0.8 (B), 0.1 -> 2
#   c2: 0.5 vs 0.4, 0.5 (C ties, counted ahead) -> 2
#   c3: 0.35 vs 0.6 (A), 0.2 -> 2 c4: 0.9 vs 0.1, 0.2 -> 1
#   c5: 0.1 vs 0.3, 0.3 -> 3
#   ranks [1, 2, 2, 2, 1, 3]: R@1 = 2/6, R@2 = 5/6, R@5 = 6/6; mean 11/6, median 2.
# image->text rank = 1 + other images' captions scoring >= the best own caption in that row:
#   A: best own 0.9 (c0); negatives 0.6 0.1 0.3 -> rank 1
#   B: own 0.35 (c3); negatives c1 0.8 and c2 0.4 are higher -> rank 3
#   C: best own 0.9 (c4); negatives 0.3 0.1 0.5 0.2 -> rank 1
#   ranks [1, 3, 1]: R@1 = 2/3, R@2 = 2/3, R@5 = 1; mean 5/3, median 1.
# RSUM over K = 1, 2, 5: (2/6 + 5/6 + 1 + 2/3 + 2/3 + 1) * 100 = 4.5 * 100 = 450.
SCORES = np.array(
    [
        [0.9, 0.2, 0.5, 0.6, 0.1, 0.3],
        [0.1, 0.8, 0.4, 0.35, 0.2, 0.3],
        [0.3, 0.1, 0.5, 0.2, 0.9, 0.1],
    ]
)
TEXT_IMAGE = [0, 0, 0, 1, 2, 2]


def test_hand_worked_matrix() -> None:
    report = score_retrieval(SCORES, TEXT_IMAGE, ks=(1, 2, 5), resamples=100)
    assert report.task == "retrieval"
    assert report.n == 6
    m = report.metrics
    assert m["t2i_r1"] == pytest.approx(2 / 6)
    assert m["t2i_r2"] == pytest.approx(5 / 6)
    assert m["t2i_r5"] == 1.0
    assert m["i2t_r1"] == pytest.approx(2 / 3)
    assert m["i2t_r2"] == pytest.approx(2 / 3)
    assert m["i2t_r5"] == 1.0
    a = report.analysis
    assert a["rsum"] == pytest.approx(450.0)
    assert a["t2i_mean_rank"] == pytest.approx(11 / 6)
    assert a["t2i_median_rank"] == 2.0
    assert a["i2t_mean_rank"] == pytest.approx(5 / 3)
    assert a["i2t_median_rank"] == 1.0
    t2i_ranks = [row["rank"] for row in report.per_item if row["direction"] == "t2i"]
    i2t_ranks = [row["rank"] for row in report.per_item if row["direction"] == "i2t"]
    assert t2i_ranks == [1, 2, 2, 2, 1, 3]
    assert i2t_ranks == [1, 3, 1]
    assert any("K=5 >= 3 images" in w for w in report.warnings)
    assert "pessimistic" in report.conventions["ties"]


def test_default_ks_names_and_cis() -> None:
    report = score_retrieval(SCORES, TEXT_IMAGE, image_ids=["A", "B", "C"], resamples=200)
    assert list(report.metrics) == ["t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10"]
    for name, (low, high) in report.ci95.items():
        assert 0.0 <= low <= report.metrics[name] <= high <= 1.0
    assert report.ci95["t2i_r5"] == [1.0, 1.0]  # every caption hits at 5 in every resample
    again = score_retrieval(SCORES, TEXT_IMAGE, image_ids=["A", "B", "C"], resamples=200)
    assert again.ci95 == report.ci95  # seeded
    # Text ids default to the 1-based column positions: column 3 is text "4".
    assert report.per_item[3] == {"direction": "t2i", "id": "4", "image_id": "B", "rank": 2}


def test_default_ids_count_from_one() -> None:
    report = score_retrieval(SCORES, TEXT_IMAGE, ks=(1,), resamples=10)
    t2i = [row for row in report.per_item if row["direction"] == "t2i"]
    i2t = [row for row in report.per_item if row["direction"] == "i2t"]
    assert [row["id"] for row in t2i] == ["1", "2", "3", "4", "5", "6"]
    assert [row["image_id"] for row in t2i] == ["1", "1", "1", "2", "3", "3"]
    assert [row["id"] for row in i2t] == ["1", "2", "3"]


def test_ties_count_against_the_positive() -> None:
    # A constant matrix: every candidate ties with the positive, so it is ranked last.
    # 2 images x 2 captions: t2i ranks 2, 2; i2t: 1 + one tied negative = 2.
    report = score_retrieval(np.ones((2, 2)), [0, 1], ks=(1, 2), resamples=10)
    assert report.metrics == {"t2i_r1": 0.0, "t2i_r2": 1.0, "i2t_r1": 0.0, "i2t_r2": 1.0}
    # Two own captions tied at the top do not push each other down: image 0 rank 1.
    tied_own = np.array([[0.5, 0.5, 0.1], [0.2, 0.1, 0.9]])
    report = score_retrieval(tied_own, [0, 0, 1], ks=(1,), resamples=10)
    assert report.metrics["i2t_r1"] == 1.0


def _recall_by_sorting(scores: np.ndarray, owners: np.ndarray, k: int) -> tuple[float, float]:
    """CLIP_benchmark's way: top-K by sorting (valid without ties), as an independent check."""
    t2i = [owners[j] in np.argsort(-scores[:, j])[:k] for j in range(scores.shape[1])]
    i2t = [bool(np.any(owners[np.argsort(-scores[i])[:k]] == i)) for i in range(scores.shape[0])]
    return float(np.mean(t2i)), float(np.mean(i2t))


def test_matches_top_k_by_sorting_on_a_random_matrix() -> None:
    rng = np.random.default_rng(3)
    owners = np.sort(rng.integers(0, 20, size=70))
    owners[:20] = np.arange(20)  # every image has at least one caption, k varies (1..)
    scores = rng.normal(size=(20, 70))
    report = score_retrieval(scores, owners.tolist(), ks=(1, 5, 10), resamples=10)
    for k in (1, 5, 10):
        t2i, i2t = _recall_by_sorting(scores, owners, k)
        assert report.metrics[f"t2i_r{k}"] == pytest.approx(t2i)
        assert report.metrics[f"i2t_r{k}"] == pytest.approx(i2t)


@pytest.mark.parametrize(
    ("scores", "text_image", "message"),
    [
        (np.array([[0.1, np.nan], [0.2, 0.3]]), [0, 1], "NaN or inf.*row 0, text column 1"),
        (np.array([[0.1, 0.2], [np.inf, 0.3]]), [0, 1], "row 1, text column 0"),
        (np.ones((2, 3)), [0, 1], "2 entries but scores has 3 text columns"),
        (np.ones(3), [0, 1, 2], "2-D"),
        (np.ones((2, 2)), [0, 2], r"text_image\[1\] = 2 is out of range for 2 images"),
        (np.ones((2, 2)), [0, -1], r"text_image\[1\] = -1 is out of range"),
        (np.ones((3, 2)), [0, 2], "image row 1 has no caption"),
        (np.ones((2, 2)), [0.0, 1.0], "integer image indices"),
        (np.array([["a", "b"]]), [0, 0], "numeric"),
    ],
)
def test_bad_inputs(scores: np.ndarray, text_image: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_retrieval(scores, text_image)


def test_bad_ks_and_ids() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        score_retrieval(SCORES, TEXT_IMAGE, ks=(0,))
    with pytest.raises(ValueError, match="2 image ids for 3 images"):
        score_retrieval(SCORES, TEXT_IMAGE, image_ids=["A", "B"])


# ---------------------------------------------------------------------------- files

IMAGE_IDS = ["A", "B", "C"]
TEXTS = [{"id": f"t{j}", "image_id": IMAGE_IDS[i]} for j, i in enumerate(TEXT_IMAGE)]


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "scores.npy"
    save_score_matrix(path, SCORES.astype(np.float32), IMAGE_IDS, TEXTS)
    images_path, texts_path = sidecar_paths(path)
    assert images_path.name == "scores.images.txt"
    assert texts_path.name == "scores.texts.jsonl"
    assert images_path.read_text() == "A\nB\nC\n"
    assert json.loads(texts_path.read_text().splitlines()[3]) == {"id": "t3", "image_id": "B"}
    assert np.load(path).dtype == np.float32  # the caller's dtype is kept on disk
    scores, image_ids, text_ids, text_image = load_score_matrix(path)
    assert np.array_equal(scores, SCORES.astype(np.float32).astype(np.float64))
    assert image_ids == IMAGE_IDS
    assert text_ids == [f"t{j}" for j in range(6)]
    assert text_image == TEXT_IMAGE
    assert score_retrieval(scores, text_image, ks=(1,)).metrics["t2i_r1"] == pytest.approx(2 / 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scores.images.txt",
        "scores.npy",
        "scores.texts.jsonl",
    ]  # no temporary files left behind


def test_save_refuses_bad_input_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "scores.npy"
    bad = SCORES.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_score_matrix(path, bad, IMAGE_IDS, TEXTS)
    with pytest.raises(ValueError, match="unknown image_id 'Z'"):
        save_score_matrix(path, SCORES, IMAGE_IDS, [*TEXTS[:5], {"id": "t5", "image_id": "Z"}])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "s.npy"
    save_score_matrix(path, SCORES, IMAGE_IDS, TEXTS)
    return path


def test_load_missing_files(saved: Path) -> None:
    images_path, texts_path = sidecar_paths(saved)
    with pytest.raises(InputError, match=r"nope\.npy: score matrix file not found"):
        load_score_matrix(saved.with_name("nope.npy"))
    texts_path.unlink()
    with pytest.raises(InputError, match=r"s\.texts\.jsonl: text list not found"):
        load_score_matrix(saved)
    images_path.unlink()
    with pytest.raises(InputError, match=r"s\.images\.txt: image id list not found"):
        load_score_matrix(saved)


def test_load_bad_lines_name_file_and_line(saved: Path) -> None:
    images_path, texts_path = sidecar_paths(saved)
    good = texts_path.read_text()
    lines = good.splitlines()

    texts_path.write_text("\n".join([*lines[:2], "{not json", *lines[3:]]) + "\n")
    with pytest.raises(InputError, match=r"s\.texts\.jsonl:3: not valid JSON"):
        load_score_matrix(saved)

    lines_unknown = [*lines[:4], json.dumps({"id": "t4", "image_id": "Z"}), lines[5]]
    texts_path.write_text("\n".join(lines_unknown) + "\n")
    with pytest.raises(InputError, match=r"s\.texts\.jsonl:5 \(field 'image_id'\): unknown"):
        load_score_matrix(saved)

    texts_path.write_text("\n".join([*lines[:5], json.dumps({"image_id": "C"})]) + "\n")
    with pytest.raises(InputError, match=r"s\.texts\.jsonl:6 \(field 'id'\): missing"):
        load_score_matrix(saved)

    texts_path.write_text("\n".join(lines[:5]) + "\n")
    with pytest.raises(InputError, match="5 texts but the matrix has 6 columns"):
        load_score_matrix(saved)

    # Image C's two captions moved to A: C is left without a caption.
    texts_path.write_text(good.replace('"image_id": "C"', '"image_id": "A"'))
    with pytest.raises(InputError, match=r"s\.texts\.jsonl: image row 2 \(image 'C'\) has no"):
        load_score_matrix(saved)

    texts_path.write_text(good)
    images_path.write_text("A\nB\n")
    with pytest.raises(InputError, match="2 image ids but the matrix has 3 rows"):
        load_score_matrix(saved)
    images_path.write_text("A\nA\nC\n")
    with pytest.raises(InputError, match=r"s\.images\.txt:2: duplicate image id 'A'"):
        load_score_matrix(saved)


def test_load_nan_and_non_npy(saved: Path) -> None:
    bad = SCORES.copy()
    bad[1, 4] = np.nan
    np.save(saved, bad)
    with pytest.raises(
        InputError, match=r"s\.npy: scores contain 1 non-finite.*row 1 \(image 'B'\), text column 4"
    ):
        load_score_matrix(saved)
    saved.write_bytes(b"not an array")
    with pytest.raises(InputError, match=r"s\.npy: not a readable \.npy array"):
        load_score_matrix(saved)


TEXT_IDS = [f"t{j}" for j in range(6)]


def test_load_and_score_share_one_check_per_problem(saved: Path) -> None:
    """A bad matrix read from disk fails with score_retrieval's own message, naming the file."""
    _, texts_path = sidecar_paths(saved)
    bad = SCORES.copy()
    bad[1, 4] = np.inf
    np.save(saved, bad)
    with pytest.raises(ValueError, match="non-finite") as direct:
        score_retrieval(bad, TEXT_IMAGE, image_ids=IMAGE_IDS, text_ids=TEXT_IDS)
    with pytest.raises(InputError) as loaded:
        load_score_matrix(saved)
    assert (
        str(loaded.value)
        == f"{saved}: {direct.value}; recompute the scores; NaN/inf cannot be ranked"
    )

    np.save(saved, SCORES)
    owners = [0, 0, 0, 1, 0, 0]  # image C loses both captions
    texts_path.write_text(
        "".join(
            json.dumps({"id": f"t{j}", "image_id": IMAGE_IDS[i]}) + "\n"
            for j, i in enumerate(owners)
        )
    )
    with pytest.raises(ValueError, match="has no caption") as direct:
        score_retrieval(SCORES, owners, image_ids=IMAGE_IDS, text_ids=TEXT_IDS)
    with pytest.raises(InputError) as loaded:
        load_score_matrix(saved)
    assert str(loaded.value) == f"{texts_path}: {direct.value}"


def test_load_applies_the_shape_checks_of_score_retrieval(saved: Path) -> None:
    # An empty (0 x 6) matrix: rejected as such, naming the .npy, before the id files are read.
    np.save(saved, np.ones((0, 6)))
    with pytest.raises(InputError, match=r"s\.npy: scores matrix is empty \(shape \(0, 6\)\)"):
        load_score_matrix(saved)
    np.save(saved, np.ones(6))
    with pytest.raises(InputError, match=r"s\.npy: scores must be a 2-D"):
        load_score_matrix(saved)
