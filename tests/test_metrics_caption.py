"""Caption metrics: equal to pycocoevalcap called directly, BLEU/METEOR bootstrap exact, bad inputs.

METEOR starts a JVM (~6-10 s), so this file starts two in all, in one module fixture that every
METEOR test shares: ours (inside score_captions) and pycocoevalcap's, which stays open for the
tests that send the jar their own EVAL lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlm_retain.errors import VlmRetainError
from vlm_retain.evaluate.metrics.bootstrap import percentile_ci, resample_sums
from vlm_retain.evaluate.metrics.caption import (
    BLEU_NAMES,
    JAVA_HINT,
    JavaNotFoundError,
    bleu_statistics,
    corpus_bleu_from_sums,
    meteor_corpus_from_sums,
    meteor_process,
    meteor_segment_stats,
    meteor_statistics,
    score_captions,
    tokenize_captions,
)

# Six images, 3-5 references each; mixed case and punctuation so that the PTB tokenizer's
# lowercasing and dropped tokens matter; "img4" is short (brevity penalty), "img6" is empty.
IDS = ["img1", "img2", "img3", "img4", "img5", "img6"]
PREDICTIONS = [
    "A man is riding a horse on the beach.",
    "Two dogs play with a red ball in the park!",
    "A plate of food, with broccoli and rice.",
    "A cat.",
    "People walking down a busy city street at night",
    "",
]
REFERENCES = [
    [
        "A man rides a brown horse along the beach.",
        "A person riding a horse near the ocean.",
        "Man on horseback on a sandy beach.",
    ],
    [
        "Two dogs playing with a ball in the grass.",
        "A pair of dogs chase a red ball.",
        "Dogs play fetch in a park.",
        "Two puppies playing in a park with a ball.",
    ],
    [
        "A plate with rice, broccoli and chicken.",
        "Food on a white plate: rice and vegetables.",
        "A dinner plate holds broccoli and rice.",
        "A meal of chicken, rice, and broccoli.",
        "Some broccoli and rice on a plate.",
    ],
    [
        "A black cat is sleeping on a couch.",
        "A cat lies on the sofa.",
        "A small cat curled up on a cushion.",
    ],
    [
        "A crowd of people walking on a city street at night.",
        "Pedestrians crossing a busy street in the evening.",
        "People walk along a lit-up street at night.",
        "A busy downtown street full of people.",
    ],
    [
        "A red bus driving down the road.",
        "A double decker bus on a street.",
        "A bus in traffic.",
    ],
]
GROUP = ["beach", "city", "food", "home", "city", "city"]


def _direct_pycocoevalcap(meteor) -> dict:
    """What COCOEvalCap does: tokenize gts and res separately, then each scorer on its own.

    ``meteor`` is a pycocoevalcap ``Meteor`` (its JVM), scored through its own compute_score.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = PTBTokenizer().tokenize(
        {k: [{"caption": c} for c in refs] for k, refs in zip(IDS, REFERENCES, strict=True)}
    )
    res = PTBTokenizer().tokenize(
        {k: [{"caption": p}] for k, p in zip(IDS, PREDICTIONS, strict=True)}
    )
    out: dict = {"gts": gts, "res": res}
    out["bleu"], _ = Bleu(4).compute_score(gts, res, verbose=0)
    out["meteor"], out["meteor_per_image"] = meteor.compute_score(gts, res)
    city = [k for k, g in zip(IDS, GROUP, strict=True) if g == "city"]
    sub_gts, sub_res = {k: gts[k] for k in city}, {k: res[k] for k in city}
    out["city_meteor"], _ = meteor.compute_score(sub_gts, sub_res)
    out["rouge"], out["rouge_per_image"] = Rouge().compute_score(gts, res)
    out["cider"], out["cider_per_image"] = Cider().compute_score(gts, res)
    out["city_bleu"], _ = Bleu(4).compute_score(sub_gts, sub_res, verbose=0)
    out["city_rouge"], _ = Rouge().compute_score(sub_gts, sub_res)
    out["city_cider_alone"], _ = Cider().compute_score(sub_gts, sub_res)
    return out


RESAMPLES = 200


@pytest.fixture(scope="module")
def scored():
    """One run of ours (default ids) and one of pycocoevalcap directly, whose METEOR JVM stays
    open for the tests: two METEOR JVMs for the whole file."""
    report = score_captions(
        PREDICTIONS, REFERENCES, groups={"scene": GROUP}, resamples=RESAMPLES, seed=0
    )
    with meteor_process() as meteor:
        yield report, _direct_pycocoevalcap(meteor), meteor


@pytest.mark.slow
def test_metrics_equal_pycocoevalcap_called_directly(scored) -> None:
    report, direct, _ = scored
    assert report.task == "caption"
    assert report.n == 6
    for k, name in enumerate(BLEU_NAMES):
        assert report.metrics[name] == direct["bleu"][k]
    assert report.metrics["meteor"] == direct["meteor"]
    assert report.metrics["rouge_l"] == direct["rouge"]
    assert report.metrics["cider"] == direct["cider"]
    # Sanity on scale: CIDEr stays on pycocoevalcap's scale (~1, not ~100); BLEU-1 < 1.
    assert 0.1 < report.metrics["cider"] < 5
    assert 0 < report.metrics["bleu_4"] < report.metrics["bleu_1"] < 1


@pytest.mark.slow
def test_per_item_rows_equal_pycocoevalcap_per_image(scored) -> None:
    report, direct, _ = scored
    # No ids were given: they default to the 1-based positions, as in every metric family.
    assert [row["id"] for row in report.per_item] == ["1", "2", "3", "4", "5", "6"]
    assert [row["prediction"] for row in report.per_item] == PREDICTIONS
    assert [row["cider"] for row in report.per_item] == list(direct["cider_per_image"])
    assert [row["rouge_l"] for row in report.per_item] == list(direct["rouge_per_image"])
    assert [row["meteor"] for row in report.per_item] == direct["meteor_per_image"]
    # The empty prediction scores 0 on everything and is reported as a warning.
    assert report.per_item[5]["cider"] == 0.0
    assert report.per_item[5]["bleu_4"] == 0.0
    assert any("e.g. id '6'" in w for w in report.warnings)


@pytest.mark.slow
def test_breakdown_by_group(scored) -> None:
    report, direct, _ = scored
    city = report.breakdown["scene"]["city"]
    assert city["n"] == 3  # img2, img5, img6
    assert report.breakdown["scene"]["beach"]["n"] == 1
    metrics = city["metrics"]
    # Corpus BLEU and METEOR of a group equal pycocoevalcap run on that subset alone.
    for k, name in enumerate(BLEU_NAMES):
        assert metrics[name] == pytest.approx(direct["city_bleu"][k], rel=1e-12, abs=1e-300)
    assert metrics["meteor"] == direct["city_meteor"]
    assert metrics["rouge_l"] == pytest.approx(direct["city_rouge"], rel=1e-12)
    # CIDEr of a group: mean of per-image scores with the FULL set's IDF (indices 1, 4, 5),
    # which differs from re-running CIDEr on the subset (its own IDF).
    per_image = direct["cider_per_image"]
    expected = (per_image[1] + per_image[4] + per_image[5]) / 3
    assert metrics["cider"] == pytest.approx(expected, rel=1e-12)
    assert metrics["cider"] != pytest.approx(direct["city_cider_alone"], rel=1e-3)
    assert metrics["spice"] is None


@pytest.mark.slow
def test_spice_absent_ci_and_conventions(scored) -> None:
    report, _, _ = scored
    assert report.metrics["spice"] is None
    assert "stanford-corenlp-3.6.0.jar" in report.conventions["spice"]
    assert "not computed" in report.conventions["spice"]
    assert "spice" not in report.ci95
    for name in [*BLEU_NAMES, "meteor", "rouge_l", "cider"]:
        low, high = report.ci95[name]
        assert 0 <= low <= high
    # Mean-based CIs bracket the mean of the per-image scores they resample.
    for name in ("rouge_l", "cider"):
        mean = float(np.mean([row[name] for row in report.per_item]))
        assert report.ci95[name][0] <= mean <= report.ci95[name][1]
    assert list(report.ci95) == [*BLEU_NAMES, "meteor", "rouge_l", "cider"]
    for key in ("tokenization", "cider", "meteor", "bleu", "ci95", "temp_files", "source_files"):
        assert key in report.conventions
    assert "IDF" in report.conventions["cider"]
    assert "EVAL line" in report.conventions["ci95"]
    assert "(missing)" in report.conventions["breakdown"]


def _meteor_stats(direct: dict, meteor) -> np.ndarray:
    """Per-image METEOR sufficient statistics of the test set, from the open JVM."""
    return meteor_statistics(meteor_segment_stats(meteor, direct["gts"], direct["res"]))


@pytest.mark.slow
def test_meteor_summed_statistics_reproduce_the_corpus_score(scored) -> None:
    """All weights 1: the summed per-image statistics in one EVAL give the jar's corpus score."""
    report, direct, meteor = scored
    stats = _meteor_stats(direct, meteor)
    assert stats.shape[0] == 6
    summed = np.ones(6) @ stats
    assert meteor_corpus_from_sums(meteor, summed).tolist() == [direct["meteor"]]
    assert report.metrics["meteor"] == direct["meteor"]
    # The corpus score is not the mean of the per-image scores (0.3069 vs 0.2893 here), which
    # is why the CI must resample the statistics, not the per-image scores.
    assert direct["meteor"] != pytest.approx(np.mean(direct["meteor_per_image"]), abs=1e-3)


@pytest.mark.slow
def test_meteor_ci_is_the_corpus_score_of_the_resamples_paired_with_bleu(scored) -> None:
    """Every caption CI uses the same resample weights; METEOR's is the jar's corpus score."""
    report, direct, meteor = scored
    n = len(IDS)
    # The bootstrap's weights (how often each image is drawn in each resample), read back
    # from resample_sums over one indicator column per image.
    indicators = {str(i): np.eye(n)[i] for i in range(n)}
    drawn = resample_sums(indicators, resamples=RESAMPLES, seed=0)
    weights = np.column_stack([drawn[str(i)] for i in range(n)])
    assert weights.shape == (RESAMPLES, n) and (weights.sum(axis=1) == n).all()

    stats = _meteor_stats(direct, meteor)
    expected_meteor = percentile_ci(meteor_corpus_from_sums(meteor, weights @ stats))
    assert report.ci95["meteor"] == expected_meteor

    _, _, bleu_stats = bleu_statistics(direct["gts"], direct["res"])
    bleu = corpus_bleu_from_sums({name: weights @ col for name, col in bleu_stats.items()})
    for k, name in enumerate(BLEU_NAMES):
        assert report.ci95[name] == percentile_ci(bleu[:, k])
    cider = weights @ np.asarray(direct["cider_per_image"]) / n
    assert report.ci95["cider"] == pytest.approx(percentile_ci(cider), rel=1e-12)
    low, high = report.ci95["meteor"]
    assert low <= report.metrics["meteor"] <= high


# ---------------------------------------------------------------------------- BLEU, no Java

# Hand-worked BLEU statistics on pre-tokenized text (pycocoevalcap's BLEU is pure Python):
# A: hyp "a b c d" (c=4); refs "a b c e f" (5), "a b" (2): closest |5-4|=1 < |2-4|=2 -> r=5.
#    1-grams a b c d: a,b,c match -> 3/4; 2-grams ab bc cd: ab,bc -> 2/3;
#    3-grams abc bcd: abc -> 1/2; 4-gram abcd: 0/1.
# B: hyp "x y" (c=2); refs "x y z" (3), "x" (1): |3-2| = |1-2| = 1, tie -> the shorter, r=1.
#    1-grams 2/2, 2-grams 1/1, no 3- or 4-grams (0/0).
# Totals: c=6, r=6 (no brevity penalty), correct 5,3,1,0 over guess 6,4,2,1.
# BLEU-1 = 5/6 = 0.8333; BLEU-2 = sqrt(5/6*3/4) = sqrt(0.625) = 0.7906;
# BLEU-3 = (0.625*1/2)^(1/3) = 0.3125^(1/3) = 0.6786; BLEU-4 = (0.3125*1e-15)^(1/4) ~ 1.3e-4.
HAND_GTS = {0: ["a b c e f", "a b"], 1: ["x y z", "x"]}
HAND_RES = {0: ["a b c d"], 1: ["x y"]}


def test_bleu_statistics_hand_worked() -> None:
    corpus, _, stats = bleu_statistics(HAND_GTS, HAND_RES)
    assert stats["testlen"].tolist() == [4, 2]
    assert stats["reflen"].tolist() == [5, 1]
    assert [stats[f"guess_{k}"].tolist() for k in range(1, 5)] == [[4, 2], [3, 1], [2, 0], [1, 0]]
    assert [stats[f"correct_{k}"].tolist() for k in range(1, 5)] == [
        [3, 2],
        [2, 1],
        [1, 0],
        [0, 0],
    ]
    assert corpus[0] == pytest.approx(5 / 6, rel=1e-9)
    assert corpus[1] == pytest.approx(0.625**0.5, rel=1e-9)
    assert corpus[2] == pytest.approx(0.3125 ** (1 / 3), rel=1e-9)
    assert corpus[3] == pytest.approx((0.3125 * 1e-15) ** 0.25, rel=1e-6)


def _bleu_direct(gts: dict, res: dict) -> list[float]:
    from pycocoevalcap.bleu.bleu import Bleu

    score, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return score


# Pre-tokenized set with a short hypothesis (brevity penalty at corpus level) and ties.
TOK_GTS = {
    0: ["a man rides a horse on the beach", "a person on a horse"],
    1: ["two dogs play with a ball", "dogs chase a red ball in the park"],
    2: ["a cat sleeps on a sofa", "a cat on the couch", "a sleeping cat"],
    3: ["people walk down a busy street at night", "a crowded street"],
}
TOK_RES = {0: ["a man riding a horse"], 1: ["two dogs play ball"], 2: ["cat"], 3: ["people walk"]}


def test_bleu_bootstrap_with_unit_weights_is_corpus_bleu_exactly() -> None:
    corpus, _, stats = bleu_statistics(TOK_GTS, TOK_RES)
    ones = {name: np.array([np.ones(len(col)) @ col]) for name, col in stats.items()}
    recombined = corpus_bleu_from_sums(ones)[0].tolist()
    direct = _bleu_direct(TOK_GTS, TOK_RES)
    assert recombined == direct  # bit for bit
    assert corpus == direct
    assert stats["testlen"].sum() < stats["reflen"].sum()  # the brevity penalty is exercised


def test_bleu_resample_equals_pycocoevalcap_on_the_resampled_images() -> None:
    """A resample with repeated images is scored as if those images appeared that many times."""
    _, _, stats = bleu_statistics(TOK_GTS, TOK_RES)
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 4, size=(5, 4))
    weights = np.stack([np.bincount(row, minlength=4) for row in draws]).astype(np.float64)
    sums = {name: weights @ col for name, col in stats.items()}
    recombined = corpus_bleu_from_sums(sums)
    for r, row in enumerate(draws):
        gts = {j: TOK_GTS[int(i)] for j, i in enumerate(row)}
        res = {j: TOK_RES[int(i)] for j, i in enumerate(row)}
        assert recombined[r].tolist() == _bleu_direct(gts, res)


# ---------------------------------------------------------------------------- tokenizer, bad input


def test_tokenizer_line_breaks_inside_a_caption_do_not_shift_later_captions() -> None:
    # The CoreNLP jar ends a line on \r and U+2028; pycocoevalcap alone would shift "the end"
    # onto the wrong image. Here each caption keeps its own tokens.
    gts, res = tokenize_captions(
        ["A dog\ron grass.", "The END!"], [["a dog\u2028runs", "x"], ["the end"]]
    )
    assert res == {0: ["a dog on grass"], 1: ["the end"]}
    assert gts == {0: ["a dog runs", "x"], 1: ["the end"]}


def test_mismatched_lengths_and_missing_references_name_the_problem() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        score_captions(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"'img2'.*no reference captions"):
        score_captions(["a", "b"], [["a"], []], ids=["img1", "img2"])
    with pytest.raises(ValueError, match="3 ids for 2"):
        score_captions(["a", "b"], [["a"], ["b"]], ids=["x", "y", "z"])
    with pytest.raises(ValueError, match=r"groups\['lang'\] has 1 values for 2"):
        score_captions(["a", "b"], [["a"], ["b"]], groups={"lang": ["en"]})
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        score_captions(["a", "b"], [["a"], ["b"]], ids=["x", "x"])
    with pytest.raises(ValueError, match="no captions"):
        score_captions([], [])


def test_java_missing_gives_a_clear_error(tmp_path: Path) -> None:
    """With no java on PATH the error names the fix; no traceback reaches the user."""
    script = (
        "import json\n"
        "from vlm_retain.evaluate.metrics.caption import score_captions\n"
        "from vlm_retain.errors import VlmRetainError\n"
        "try:\n"
        "    score_captions(['a dog'], [['a dog runs']])\n"
        "except VlmRetainError as exc:\n"
        "    print(json.dumps({'type': type(exc).__name__, 'message': str(exc),\n"
        "                      'exit_code': exc.exit_code}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"JAVA_HOME"}}
    env["PATH"] = str(tmp_path)  # an empty folder: no java anywhere on PATH
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["type"] == "JavaNotFoundError"
    assert "Java not found on PATH" in result["message"]
    assert JAVA_HINT in result["message"]
    assert result["exit_code"] == 2
    assert "Traceback" not in done.stderr
    assert issubclass(JavaNotFoundError, VlmRetainError)
