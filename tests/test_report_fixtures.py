"""Hand-made eval folders for the report tests (helpers only, no tests here), in the exact
on-disk formats of the runner.

Each writer scores its predictions with the real metric function, builds results.json with
``evaluate.results.build_results`` and writes predictions.jsonl in the contract of
docs/metrics.md, so the report reads what ``vlm-retain eval`` would have written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm_retain.evaluate.results import build_results, write_results

RESAMPLES = 200


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def _results(folder: Path, report, inputs: list[Path]) -> None:
    results = build_results(report, split="test", inputs=inputs, seed=0, resamples=RESAMPLES)
    write_results(folder / "results.json", results)


def write_vqa(
    eval_dir: Path, rows: Sequence[tuple[str, str, list[str]]], task: str = "vqav2"
) -> Path:
    """rows: (id, prediction, answers)."""
    from vlm_retain.evaluate.metrics.vqa import score_vqa

    folder = eval_dir / task
    predictions = folder / "predictions.jsonl"
    _jsonl(predictions, [{"id": i, "prediction": p, "answers": a, "meta": {}} for i, p, a in rows])
    report = score_vqa(
        [p for _, p, _ in rows], [a for _, _, a in rows], ids=[i for i, _, _ in rows],
        resamples=RESAMPLES,
    )  # fmt: skip
    _results(folder, report, [predictions])
    return folder


def write_ocr(
    eval_dir: Path, rows: Sequence[tuple[str, str, str, str, str]], by: Sequence[str] = ()
) -> Path:
    """rows: (id, reference, prediction, lang, source); ``by`` stores breakdowns in results."""
    from vlm_retain.evaluate.metrics.ocr import score_ocr

    folder = eval_dir / "ocr"
    predictions = folder / "predictions.jsonl"
    _jsonl(
        predictions,
        [
            {"id": i, "prediction": p, "reference": r, "meta": {"lang": lang, "source": src}}
            for i, r, p, lang, src in rows
        ],
    )
    groups = {
        "lang": [row[3] for row in rows],
        "source": [row[4] for row in rows],
    }
    report = score_ocr(
        [r for _, r, _, _, _ in rows],
        [p for _, _, p, _, _ in rows],
        ids=[i for i, *_ in rows],
        groups={name: groups[name] for name in by},
        resamples=RESAMPLES,
    )
    _results(folder, report, [predictions])
    return folder


def write_retrieval(eval_dir: Path, matrix: np.ndarray, task: str = "coco-retrieval") -> Path:
    """A square gallery: image k's one caption is text k; ``matrix`` is (images, texts)."""
    from vlm_retain.evaluate.metrics.retrieval import save_score_matrix, score_retrieval

    folder = eval_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    n = matrix.shape[0]
    image_ids = [f"img{k}" for k in range(n)]
    texts = [{"id": f"t{k}", "image_id": f"img{k}"} for k in range(n)]
    save_score_matrix(folder / "scores.npy", matrix, image_ids, texts)
    report = score_retrieval(
        matrix, list(range(n)), image_ids=image_ids, text_ids=[t["id"] for t in texts],
        resamples=RESAMPLES,
    )  # fmt: skip
    _results(folder, report, [folder / "scores.npy"])
    return folder


def write_caption(
    eval_dir: Path, rows: Sequence[tuple[str, str, list[str]]], task: str = "coco"
) -> Path:
    """rows: (id, caption, references); needs Java (pycocoevalcap's PTB tokenizer).

    Corpus CIDEr is computed the way ``score_captions`` does (PTB tokens, pycocoevalcap Cider)
    but without starting METEOR's JVM, which would add ~10 s per call to the tests.
    """
    from pycocoevalcap.cider.cider import Cider

    from vlm_retain.evaluate.metrics.caption import tokenize_captions
    from vlm_retain.evaluate.metrics.report import MetricReport

    folder = eval_dir / task
    predictions = folder / "predictions.jsonl"
    _jsonl(
        predictions, [{"id": i, "prediction": p, "references": r, "meta": {}} for i, p, r in rows]
    )
    gts, res = tokenize_captions([p for _, p, _ in rows], [r for _, _, r in rows])
    cider, _ = Cider().compute_score(gts, res)
    report = MetricReport(task="caption", n=len(rows), metrics={"cider": float(cider)})
    _results(folder, report, [predictions])
    return folder


YES = ["yes"] * 10
NO = ["no"] * 10


# --------------------------------------------------------------------------- the docs example

_LINES = [
    ("p1", "Указъ его царскаго величества", "ru", "peter"),
    ("p2", "о сборѣ денегъ съ городовъ", "ru", "peter"),
    ("p3", "и тѣ деньги присылать", "ru", "peter"),
    ("p4", "въ Санктъ Питербурхъ", "ru", "peter"),
    ("i1", "the meeting was adjourned", "en", "iam"),
    ("i2", "until the following week", "en", "iam"),
    ("i3", "when members returned", "en", "iam"),
    ("i4", "to vote on the motion", "en", "iam"),
    ("s1", "lettera scritta in fretta", "it", "synth-htr"),
    ("s2", "dal notaio della città", "it", "synth-htr"),
]
_QUESTIONS = 40
_CAPTIONS = [
    ("c1", ["a red bus parked beside a tall tree", "a red bus next to a tree"]),
    ("c2", ["two yellow circles on a blue background", "yellow circles on blue"]),
    ("c3", ["a small house with a green roof", "a house with a green roof"]),
    ("c4", ["a sign that reads open", "a shop sign saying open"]),
    ("c5", ["three black squares in a row", "a row of black squares"]),
    ("c6", ["a white boat on calm water", "a boat floating on the water"]),
]


def _corrupt(text: str, rate: float, salt: int) -> str:
    """Replace about ``rate`` of the characters, deterministically (a fake transcription)."""
    out = []
    for pos, char in enumerate(text):
        bad = ((pos * 37 + salt * 11) % 100) < rate * 100 and char != " "
        out.append("o" if bad and char != "o" else ("a" if bad else char))
    return "".join(out)


def _example_eval(
    folder: Path, *, ocr_rate: float, vqa_wrong: set[int], misses: int, drifted: set[str]
) -> None:
    write_ocr(
        folder,
        [(i, ref, _corrupt(ref, ocr_rate, k), lang, src)
         for k, (i, ref, lang, src) in enumerate(_LINES)],
    )  # fmt: skip
    write_vqa(
        folder,
        [(f"q{k:02d}", "no" if k in vqa_wrong else "yes", YES) for k in range(_QUESTIONS)],
    )
    captions = []
    for item, refs in _CAPTIONS:
        text = "the text in the image says" if item in drifted else refs[0].replace("a ", "the ", 1)
        captions.append((item, text, refs))
    write_caption(folder, captions)
    matrix = np.eye(10)
    for k in range(misses):
        matrix[(k + 3) % 10, k] = 2.0
    write_retrieval(folder, matrix)


#: The loss and probe columns of :func:`example_train_log`, in the order they first appear.
EXAMPLE_LOSSES = ["ce", "ce/peter", "ce/iam", "ce/world", "kl", "total", "eval/ce"]
EXAMPLE_PROBES = ["probe/score", "probe/coco", "probe/vqav2", "probe/retention",
                  "probe/kl_to_base"]  # fmt: skip


def example_train_log() -> list[dict[str, Any]]:
    """A train_log.jsonl in the trainer's real format (``train.trainer`` via
    ``train.callbacks.TrainLog``): per step ``step``, ``epoch``, ``lr`` and ``lr/<component>``,
    each objective term (``ce``, ``kl``), its extras (``ce/<source>``, ``kl/positions``),
    ``total``, ``grad_norm``, the cumulative ``tokens``, ``seconds``; at probe steps also
    ``dist/<component>``, ``eval/ce`` and the ``probe/...`` metrics."""
    rows = []
    tokens = 0
    for step in range(10, 310, 10):
        t = step / 300
        tokens += 41_000 + 37 * step
        ce = 1.9 - 1.3 * t
        kl = 0.02 + 0.05 * t
        row: dict[str, Any] = {
            "step": step, "epoch": round(t * 2, 4), "lr": 2e-4 * (1 - t),
            "lr/llm": 2e-4 * (1 - t), "lr/projector": 1e-4 * (1 - t),
            "ce": ce, "ce/peter": 2.3 - 1.8 * t, "ce/iam": 1.6 - 1.1 * t,
            "ce/world": 0.55 + 0.25 * t, "kl": kl, "kl/positions": 1800.0 + 3 * step,
            "total": ce + 0.1 * kl, "grad_norm": 0.9 - 0.4 * t, "tokens": tokens,
            "seconds": 1.7,
        }  # fmt: skip
        if step % 50 == 0:
            retention = round(1.0 - 0.14 * t**1.5, 4)
            row.update(
                {"dist/llm": 3.1 * t ** 0.5, "dist/projector": 0.4 * t ** 0.5,
                 "eval/ce": 1.95 - 1.2 * t, "probe/score": 0.62 * retention,
                 "probe/coco": 0.55 * retention, "probe/vqav2": 0.69 * retention,
                 "probe/retention": retention, "probe/kl_to_base": 0.05 * t}
            )  # fmt: skip
        rows.append(row)
    return rows


def write_example(root: Path) -> dict[str, Path]:
    """The docs/report.md example: a base, a LoRA run with a train log, a WiSE-FT sweep.

    Numbers are chosen to look like a real forgetting experiment; every file is scored by the
    real metric functions. Returns the folders to pass to ``vlm-retain report``.
    """
    base_wrong = {3, 17, 29, 38}  # the base model gets 36/40 right
    _example_eval(root / "base" / "eval", ocr_rate=0.22, vqa_wrong=base_wrong, misses=1,
                  drifted=set())  # fmt: skip
    run = root / "lora-r16"
    _example_eval(run / "eval", ocr_rate=0.04, vqa_wrong=base_wrong | {5, 11, 21, 33, 36},
                  misses=2, drifted={"c2", "c4"})  # fmt: skip
    (run / "config.yaml").write_text("method: lora\nrank: 16\n", encoding="utf-8")
    (run / "train_log.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in example_train_log()), encoding="utf-8"
    )
    sweep = root / "wise-ft"
    settings = {0.25: (0.15, set(), 1, set()), 0.5: (0.12, {5}, 1, set()),
                0.75: (0.07, {5, 11, 21}, 2, {"c4"})}  # fmt: skip
    points = []
    for alpha, (rate, extra, misses, drifted) in settings.items():
        _example_eval(sweep / "points" / f"alpha_{alpha:g}" / "eval", ocr_rate=rate,
                      vqa_wrong=base_wrong | extra, misses=misses, drifted=drifted)  # fmt: skip
        points.append({"alpha": alpha, "eval": f"points/alpha_{alpha:g}/eval"})
    (sweep / "sweep.json").write_text(json.dumps({"method": "wise-ft", "points": points}))
    return {"base": root / "base" / "eval", "run": run, "sweep": sweep}
