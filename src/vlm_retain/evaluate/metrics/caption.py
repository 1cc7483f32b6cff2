"""COCO-style caption metrics computed by pycocoevalcap 1.2 itself, with bootstrap CIs.

Published caption numbers (COCO Karpathy, Flickr30k, lmms-eval) come from pycocoevalcap with its
Stanford PTB tokenizer, so we call that code rather than reimplementing it: BLEU, ROUGE-L and CIDEr
are its Python scorers, METEOR is its bundled ``meteor-1.5.jar`` and tokenization its bundled
CoreNLP 3.4.1 jar. What we add around it (see ``benchmarks.md`` section 2):

* one PTB tokenizer call for references and hypotheses together, and one METEOR JVM per run
  (lmms-eval restarts both for each metric, which costs ~10 s each time);
* a guard against characters the Java tokenizer treats as line breaks (``\\r``, U+2028, ...),
  which would otherwise shift every later caption onto another image without any error;
* CIs for the corpus numbers themselves: BLEU's and METEOR's per-image sufficient statistics
  are summed with each resample's weights; BLEU is recombined exactly as
  ``BleuScorer.compute_score`` does, METEOR by the run's own jar (one ``EVAL`` line per
  resample); ROUGE-L, CIDEr and SPICE, means over images, from their per-image scores. One set
  of resampled images serves every metric, so the intervals are paired;
* SPICE only when its CoreNLP jars are already installed, because pycocoevalcap would otherwise
  start a 385 MB download from ``Spice()``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlm_retain.errors import VlmRetainError
from vlm_retain.evaluate.metrics.bootstrap import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    percentile_ci,
    resample_sums,
)
from vlm_retain.evaluate.metrics.common import MISSING, breakdown, group_labels, item_ids
from vlm_retain.evaluate.metrics.report import MetricReport

BLEU_ORDERS = 4
BLEU_NAMES = [f"bleu_{k}" for k in range(1, BLEU_ORDERS + 1)]
METRIC_NAMES = [*BLEU_NAMES, "meteor", "rouge_l", "cider", "spice"]

#: BleuScorer.compute_score's constants (pycocoevalcap/bleu/bleu_scorer.py), used in the CI.
_BLEU_TINY = 1e-15
_BLEU_SMALL = 1e-9

#: Characters the CoreNLP 3.4.1 PTBTokenizer (``-preserveLines``) ends a line on. pycocoevalcap
#: only replaces ``\n``, so any of these would split one caption into two output lines and
#: misalign all following captions (probed on the bundled jar). We replace them with a space.
_LINE_BREAKS = re.compile("[\r\n\u2028\u2029\x0b\x0c]")

#: A last caption whose tokenized form must come back unchanged: proof that lines stayed aligned.
_SENTINEL = "vlmretainalignmentsentinel"

JAVA_HINT = "install a Java runtime, e.g. apt-get install openjdk-17-jre-headless"

PYCOCOEVALCAP = "pycocoevalcap 1.2 (PyPI; = salaniz/pycocoevalcap@ad63453c, tag v1.2)"
SOURCE_FILES = [
    "pycocoevalcap/tokenizer/ptbtokenizer.py (stanford-corenlp-3.4.1.jar)",
    "pycocoevalcap/bleu/bleu_scorer.py",
    "pycocoevalcap/meteor/meteor.py (meteor-1.5.jar, data/paraphrase-en.gz)",
    "pycocoevalcap/rouge/rouge.py",
    "pycocoevalcap/cider/cider_scorer.py",
    "pycocoevalcap/spice/spice.py (spice-1.0.jar, lib/stanford-corenlp-3.6.0*.jar)",
]


class CaptionToolError(VlmRetainError):
    """pycocoevalcap's Java tools could not run here; the message says what to install or fix."""


class JavaNotFoundError(CaptionToolError):
    """No ``java`` on PATH: PTB tokenization and METEOR cannot run (BLEU/CIDEr need the tokens)."""

    def __init__(self) -> None:
        super().__init__(
            "Java not found on PATH: caption metrics need it for pycocoevalcap's PTB tokenizer "
            f"and METEOR; {JAVA_HINT}"
        )


# --------------------------------------------------------------------------- input checks


def _check_inputs(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    ids: Sequence[str] | None,
    groups: Mapping[str, Sequence[str]] | None,
) -> tuple[list[str], dict[str, list[str]]]:
    """Validate lengths and types up front, so nothing Java-side starts on bad input.

    Returns the item ids (default "1".."n") and the group labels (None -> "(missing)").
    """
    n = len(predictions)
    if len(references) != n:
        raise ValueError(
            f"{n} predictions but {len(references)} reference lists: they must pair one to one"
        )
    if n == 0:
        raise ValueError("no captions to score")
    ids = item_ids(ids, n, what="predictions")
    labels = group_labels(groups, n, what="predictions")
    seen: set[str] = set()
    for k, item_id in enumerate(ids):
        if item_id in seen:
            raise ValueError(f"duplicate id {item_id!r} (item {k + 1})")
        seen.add(item_id)
        if not isinstance(predictions[k], str):
            raise ValueError(f"id {item_id!r}: prediction is {type(predictions[k]).__name__}")
        refs = references[k]
        if isinstance(refs, str):
            raise ValueError(f"id {item_id!r}: references must be a list of strings, got a str")
        if len(refs) == 0:
            raise ValueError(f"id {item_id!r}: no reference captions (need at least one)")
        if not all(isinstance(r, str) for r in refs):
            raise ValueError(f"id {item_id!r}: every reference must be a string")
    return ids, labels


def _require_tools() -> Path:
    """Fail early, with a fix, when Java is missing or pycocoevalcap cannot write its temp files."""
    if shutil.which("java") is None:
        raise JavaNotFoundError()
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    folder = Path(ptb.__file__).resolve().parent
    # PTBTokenizer.tokenize writes its input file into its own package folder (not /tmp).
    if not os.access(folder, os.W_OK):
        raise CaptionToolError(
            f"{folder}: not writable, and pycocoevalcap's PTB tokenizer writes its temporary "
            "file there; install the package into a writable virtual environment"
        )
    return folder.parent


# --------------------------------------------------------------------------- quiet calls


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """pycocoevalcap prints dicts and ratios to stdout; keep ours clean (exceptions still rise)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def _filtered_child_stderr() -> Iterator[None]:
    """Drop the JVM's "PTBTokenizer tokenized N tokens" line, pass any other stderr through.

    The Java child inherits file descriptor 2, so Python-level redirection cannot catch it.
    Everything else it writes (a Java exception, say) is re-emitted afterwards, not lost.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            kept = [
                line
                for line in text.splitlines()
                if line.strip() and not line.startswith("PTBTokenizer tokenized ")
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


# --------------------------------------------------------------------------- tokenization


def tokenize_captions(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """PTB-tokenize all references and hypotheses in ONE Java call; return (gts, res).

    Keys are item indices, as pycocoevalcap's scorers expect ``{image: [captions]}``; ``res``
    holds one hypothesis per key. Tokenizing both sides together gives the same tokens as
    COCOEvalCap's two calls (the tokenizer works line by line) at half the JVM starts.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    def clean(text: str) -> dict[str, str]:
        return {"caption": _LINE_BREAKS.sub(" ", text)}

    batch: dict[tuple[str, int], list[dict[str, str]]] = {}
    for i, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
        batch[("ref", i)] = [clean(r) for r in refs]
        batch[("hyp", i)] = [clean(prediction)]
    batch[("sentinel", 0)] = [{"caption": _SENTINEL}]
    try:
        with _quiet_stdout(), _filtered_child_stderr():
            tokens = PTBTokenizer().tokenize(batch)
    except FileNotFoundError as exc:
        raise JavaNotFoundError() from exc
    aligned = tokens.get(("sentinel", 0)) == [_SENTINEL] and all(
        len(tokens.get(key, [])) == len(captions) for key, captions in batch.items()
    )
    if not aligned:
        raise CaptionToolError(
            "pycocoevalcap's PTB tokenizer returned misaligned lines (Java error above?); "
            f"check that `java -version` works ({JAVA_HINT})"
        )
    gts = {i: tokens[("ref", i)] for i in range(len(predictions))}
    res = {i: tokens[("hyp", i)] for i in range(len(predictions))}
    return gts, res


# --------------------------------------------------------------------------- BLEU


def bleu_statistics(
    gts: Mapping[int, list[str]], res: Mapping[int, list[str]]
) -> tuple[list[float], list[list[float]], dict[str, np.ndarray]]:
    """Score BLEU-1..4 with pycocoevalcap's BleuScorer; also return its per-image statistics.

    This is ``Bleu(4).compute_score`` (option 'closest') without its prints. The statistics
    columns (``testlen``, ``reflen`` = the reference length closest to the hypothesis, ties to
    the shorter, ``guess_k`` and ``correct_k`` for k = 1..4) are read back from the scorer, so
    the bootstrap sums exactly what pycocoevalcap summed.
    Returns (corpus BLEU-1..4, per-image BLEU-1..4 lists, statistics columns).
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=BLEU_ORDERS)
    for key in gts:
        scorer += (res[key][0], gts[key])
    with _quiet_stdout():
        corpus, per_image = scorer.compute_score(option="closest", verbose=0)
    columns: dict[str, list[float]] = {"testlen": [], "reflen": []}
    for k in range(1, BLEU_ORDERS + 1):
        columns[f"guess_{k}"] = []
        columns[f"correct_{k}"] = []
    for comps in scorer.ctest:
        testlen = comps["testlen"]
        columns["testlen"].append(testlen)
        columns["reflen"].append(scorer._single_reflen(comps["reflen"], "closest", testlen))
        for k in range(BLEU_ORDERS):
            columns[f"guess_{k + 1}"].append(comps["guess"][k])
            columns[f"correct_{k + 1}"].append(comps["correct"][k])
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    return list(corpus), per_image, arrays


def corpus_bleu_from_sums(sums: Mapping[str, np.ndarray]) -> np.ndarray:
    """Corpus BLEU-1..4 for each row of summed statistics, exactly as BleuScorer combines them.

    ``sums`` maps each statistics column to one sum per resample (or a single full-set sum).
    The arithmetic copies ``BleuScorer.compute_score`` step for step, in Python floats and
    ``math.exp``, so a row of plain sums reproduces pycocoevalcap's corpus BLEU bit for bit.
    Returns an array of shape (rows, 4).
    """
    rows = len(np.asarray(sums["testlen"]))
    out = np.empty((rows, BLEU_ORDERS), dtype=np.float64)
    for r in range(rows):
        bleu = 1.0
        bleus = []
        for k in range(1, BLEU_ORDERS + 1):
            correct = float(sums[f"correct_{k}"][r])
            guess = float(sums[f"guess_{k}"][r])
            bleu *= (correct + _BLEU_TINY) / (guess + _BLEU_SMALL)
            bleus.append(bleu ** (1.0 / k))
        ratio = (float(sums["testlen"][r]) + _BLEU_TINY) / (float(sums["reflen"][r]) + _BLEU_SMALL)
        if ratio < 1:
            bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
        out[r] = bleus
    return out


def _subset_bleu(stats: Mapping[str, np.ndarray], index: np.ndarray) -> list[float]:
    """Corpus BLEU of a subset of images: the same combination over the subset's sums."""
    sums = {name: np.array([column[index].sum()]) for name, column in stats.items()}
    return [float(v) for v in corpus_bleu_from_sums(sums)[0]]


# --------------------------------------------------------------------------- METEOR


@contextlib.contextmanager
def meteor_process() -> Iterator[Any]:
    """One pycocoevalcap ``Meteor()`` (one JVM, ~6-10 s to load) for the whole run, always closed.

    pycocoevalcap only stops the JVM in ``__del__``; we stop it ourselves on exit, error or not,
    so no Java process outlives the call.
    """
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        meteor = Meteor()
    except FileNotFoundError as exc:
        raise JavaNotFoundError() from exc
    try:
        yield meteor
    finally:
        _close_meteor(meteor)


def _close_meteor(meteor: Any) -> None:
    """Stop the METEOR JVM now; pycocoevalcap's ``__del__`` later finds it already stopped."""
    process = meteor.meteor_p
    with meteor.lock:
        for stream in (process.stdin, process.stdout, process.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        if process.poll() is None:
            process.kill()
        process.wait()


def _meteor_failure(meteor: Any) -> CaptionToolError:
    """Turn a dead or silent METEOR JVM into an error that carries the jar's own message."""
    process = meteor.meteor_p
    if process.poll() is None:
        process.kill()
    process.wait()
    detail = ""
    with contextlib.suppress(OSError, ValueError):
        detail = process.stderr.read().decode("utf-8", errors="replace").strip()
    last = detail.splitlines()[-1] if detail else f"exit status {process.returncode}"
    return CaptionToolError(
        f"METEOR (meteor-1.5.jar, java -Xmx2G) failed: {last}; check that `java -version` "
        "works and that 2 GB of memory are free"
    )


def meteor_segment_stats(
    meteor: Any, gts: Mapping[int, list[str]], res: Mapping[int, list[str]]
) -> list[str]:
    """The jar's sufficient statistics per image (pycocoevalcap's own ``SCORE |||`` request)."""
    stats = []
    for key in gts:
        try:
            line = meteor._stat(res[key][0], gts[key])
        except OSError:  # BrokenPipeError: the JVM has exited
            raise _meteor_failure(meteor) from None
        if not line:
            raise _meteor_failure(meteor)
        stats.append(line)
    return stats


def meteor_eval(meteor: Any, stats: Sequence[str]) -> tuple[float, list[float]]:
    """Send one ``EVAL |||`` line, as ``Meteor.compute_score`` does; return (corpus, segments).

    The corpus score is the jar's aggregate over the summed statistics, not a mean of segment
    scores, so a subset's METEOR is another EVAL over that subset's statistics.
    """
    process = meteor.meteor_p
    try:
        with meteor.lock:
            process.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            process.stdin.flush()
            lines = [process.stdout.readline() for _ in range(len(stats) + 1)]
        values = [float(line.strip()) for line in lines]
    except (OSError, ValueError):  # a dead JVM: broken pipe or empty lines
        raise _meteor_failure(meteor) from None
    return values[-1], values[:-1]


#: EVAL lines written before their replies are read: a block's replies (two short lines per
#: EVAL) stay far below a pipe buffer, so the JVM never blocks on output while we still write.
_EVAL_BLOCK = 256


def meteor_statistics(stats: Sequence[str]) -> np.ndarray:
    """The jar's per-image ``SCORE`` replies as numbers: shape (images, statistics fields).

    Each reply is METEOR's sufficient statistics for one image (lengths, function words, matches
    per module, chunks, ...); the corpus score is the jar's function of their sums.
    """
    rows = [[float(value) for value in line.split()] for line in stats]
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise CaptionToolError(
            f"METEOR returned statistics of different lengths {sorted(widths)}; "
            "is this pycocoevalcap's meteor-1.5.jar?"
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)


def _format_stats(row: np.ndarray) -> str:
    """Summed statistics as the jar reads them back (integral values without a decimal point)."""
    return " ".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in row)


def meteor_corpus_from_sums(meteor: Any, sums: np.ndarray) -> np.ndarray:
    """The jar's corpus METEOR for each row of summed per-image statistics.

    Each row goes to the running jar as one ``EVAL ||| row`` line; the jar answers with that
    entry's score and then the aggregate over the line, which for a single entry is the corpus
    score of those sums. Summing every image's statistics once reproduces pycocoevalcap's
    corpus METEOR exactly; summing them with bootstrap weights gives a resample's corpus METEOR.
    """
    rows = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    out = np.empty(len(rows), dtype=np.float64)
    process = meteor.meteor_p
    try:
        with meteor.lock:
            for start in range(0, len(rows), _EVAL_BLOCK):
                block = rows[start : start + _EVAL_BLOCK]
                lines = "".join(f"EVAL ||| {_format_stats(row)}\n" for row in block)
                process.stdin.write(lines.encode())
                process.stdin.flush()
                for k in range(len(block)):
                    process.stdout.readline()  # the single entry's segment score
                    out[start + k] = float(process.stdout.readline().strip())
    except (OSError, ValueError):  # a dead JVM: broken pipe or empty lines
        raise _meteor_failure(meteor) from None
    return out


# --------------------------------------------------------------------------- SPICE


def spice_jars_present(package_dir: Path | None = None) -> bool:
    """True when SPICE's CoreNLP 3.6.0 jars are installed (so ``Spice()`` will not download)."""
    if package_dir is None:
        import pycocoevalcap.spice.spice as spice_module

        package_dir = Path(spice_module.__file__).resolve().parent.parent
    lib = Path(package_dir) / "spice" / "lib"
    return all(
        (lib / name).is_file()
        for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
    )


def _spice(
    gts: Mapping[int, list[str]], res: Mapping[int, list[str]], package_dir: Path
) -> tuple[float | None, list[float] | None, str]:
    """SPICE when possible: (corpus, per-image "All" F, the sentence for ``conventions``)."""
    if not spice_jars_present(package_dir):
        return (
            None,
            None,
            "not computed: pycocoevalcap/spice/lib/stanford-corenlp-3.6.0.jar and "
            "-models.jar are absent and Spice() would download them (~385 MB); place both "
            "jars there to enable SPICE (reportedly needs Java 8/11)",
        )
    from pycocoevalcap.spice.spice import Spice

    try:
        with _quiet_stdout():
            corpus, per_image = Spice().compute_score(dict(gts), dict(res))
    except Exception as exc:  # the jar's failure must not cost the other metrics
        return None, None, f"not computed: SPICE failed ({type(exc).__name__}: {exc})"
    scores = [float(item["All"]["f"]) for item in per_image]
    return (
        float(corpus),
        scores,
        "pycocoevalcap Spice (spice-1.0.jar + CoreNLP 3.6.0): mean over images of the "
        "'All' tuple F-score",
    )


# --------------------------------------------------------------------------- report


def _conventions(spice_note: str, package_dir: Path, resamples: int, seed: int) -> dict[str, Any]:
    """Every choice behind the numbers, in words, for ``results.json``."""
    return {
        "reference": PYCOCOEVALCAP + ", called directly; same scorers as COCOEvalCap/lmms-eval",
        "tokenization": (
            "Stanford PTBTokenizer (CoreNLP 3.4.1, -preserveLines -lowerCase) on references and "
            "predictions together, one call per run; lowercases; tokens '' ' `` ` -LRB- -RRB- "
            "-LCB- -RCB- . ? ! , : - -- ... ; are then dropped; line-break characters (\\r \\n "
            "U+2028 U+2029 \\v \\f) inside a caption become spaces first"
        ),
        "bleu": (
            "BLEU-1..4 corpus level (BleuScorer, option 'closest': per image the reference "
            "length closest to the hypothesis, ties to the shorter); clipped counts against the "
            "max over that image's references; brevity penalty at corpus level; only the "
            "1e-15/1e-9 guards, no smoothing"
        ),
        "meteor": (
            "METEOR 1.5 jar (-l en -norm, one JVM per run): corpus score aggregated by the jar "
            "from the images' summed sufficient statistics (not a mean of per-image scores); "
            "per-group values are the jar's score of the group's summed statistics"
        ),
        "rouge_l": "ROUGE-L F with beta 1.2, precision and recall each maxed over references; "
        "mean over images",
        "cider": (
            "CIDEr-D as pycocoevalcap computes it (n=1..4, sigma 6, x10), on pycocoevalcap's "
            "scale (1.20 = '120' in papers; not multiplied by 100); IDF from the evaluated set "
            "itself, so CIDEr on a subset is not comparable with CIDEr on the full split; "
            "per-group CIDEr is the mean of per-image scores with the full set's IDF"
        ),
        "spice": spice_note,
        "ci95": (
            f"95% percentile bootstrap over images, {resamples} resamples, seed {seed}; the same "
            "resampled images for every metric; BLEU: per-image statistics summed per resample "
            "and recombined exactly as BleuScorer.compute_score; METEOR: per-image sufficient "
            "statistics (the numbers the jar returns for each SCORE line) summed per resample "
            "and sent as one EVAL line to the run's METEOR JVM, whose answer is that resample's "
            "corpus METEOR (with every weight 1 this reproduces the point estimate exactly); "
            "ROUGE-L, CIDEr and SPICE: mean of per-image scores (CIDEr's IDF held fixed to the "
            "full set)"
        ),
        "breakdown": (
            "per group value (sorted): n and every metric over that group's images, as "
            f"described per metric; an image without the field is grouped as {MISSING!r}"
        ),
        "per_item": "per-image cider, rouge_l, meteor (segment score) and bleu_4 (BleuScorer's "
        "per-image value with the 1e-15 guard)",
        "temp_files": f"pycocoevalcap writes temporary files inside {package_dir} (tokenizer, "
        "SPICE tmp/cache), so that folder must be writable",
        "source_files": SOURCE_FILES,
    }


def _point_metrics(
    index: np.ndarray,
    bleu_stats: Mapping[str, np.ndarray],
    meteor_value: float,
    per_image: Mapping[str, np.ndarray | None],
) -> dict[str, float | None]:
    """Metrics of one subset: corpus BLEU and METEOR as given, means of per-image scores."""
    metrics: dict[str, float | None] = dict(
        zip(BLEU_NAMES, _subset_bleu(bleu_stats, index), strict=True)
    )
    metrics["meteor"] = meteor_value
    for name in ("rouge_l", "cider", "spice"):
        values = per_image[name]
        metrics[name] = None if values is None else float(np.mean(values[index]))
    return metrics


def _confidence_intervals(
    meteor: Any,
    bleu_stats: Mapping[str, np.ndarray],
    meteor_stats: np.ndarray,
    per_image: Mapping[str, np.ndarray | None],
    resamples: int,
    seed: int,
) -> dict[str, list[float]]:
    """Paired percentile CIs: one set of resampled images for every metric.

    BLEU and METEOR are corpus scores of the resample's summed statistics (METEOR from the
    running jar), the others means of per-image scores.
    """
    n = len(meteor_stats)
    means = {name: values for name, values in per_image.items() if values is not None}
    columns: dict[str, np.ndarray] = {f"bleu:{name}": col for name, col in bleu_stats.items()}
    columns.update({f"meteor:{k}": meteor_stats[:, k] for k in range(meteor_stats.shape[1])})
    columns.update({f"mean:{name}": values for name, values in means.items()})
    if resamples <= 0:
        names = [*BLEU_NAMES, "meteor", *means]
        return {name: [float("nan"), float("nan")] for name in names}
    sums = resample_sums(columns, resamples=resamples, seed=seed)
    bleu = corpus_bleu_from_sums({name: sums[f"bleu:{name}"] for name in bleu_stats})
    ci95 = {name: percentile_ci(bleu[:, k]) for k, name in enumerate(BLEU_NAMES)}
    meteor_sums = np.column_stack([sums[f"meteor:{k}"] for k in range(meteor_stats.shape[1])])
    ci95["meteor"] = percentile_ci(meteor_corpus_from_sums(meteor, meteor_sums))
    for name in means:
        ci95[name] = percentile_ci(sums[f"mean:{name}"] / n)
    return ci95


def score_captions(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    ids: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> MetricReport:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when installed), pycocoevalcap-exact.

    ``predictions[i]`` is the caption for image i, ``references[i]`` its reference captions.
    Raises ValueError on mismatched lengths or an image without references (naming its id),
    :class:`JavaNotFoundError` when Java is missing.
    """
    ids, labels = _check_inputs(predictions, references, ids, groups)
    package_dir = _require_tools()
    gts, res = tokenize_captions(predictions, references)
    bleu_corpus, bleu_per_image, bleu_stats = bleu_statistics(gts, res)

    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    with _quiet_stdout():
        rouge, rouge_per_image = Rouge().compute_score(gts, res)
        cider, cider_per_image = Cider().compute_score(gts, res)
    spice_corpus, spice_per_image, spice_note = _spice(gts, res, package_dir)
    per_image: dict[str, np.ndarray | None] = {
        "rouge_l": np.asarray(rouge_per_image, dtype=np.float64),
        "cider": np.asarray(cider_per_image, dtype=np.float64),
        "spice": None if spice_per_image is None else np.asarray(spice_per_image),
    }

    # Everything that needs METEOR happens while its one JVM runs: the corpus score, the
    # groups' scores and one EVAL per bootstrap resample.
    with meteor_process() as meteor:
        stats = meteor_segment_stats(meteor, gts, res)
        meteor_corpus, meteor_per_image = meteor_eval(meteor, stats)
        meteor_stats = meteor_statistics(stats)

        def group_metrics(index: np.ndarray) -> dict[str, float | None]:
            summed = meteor_stats[index].sum(axis=0)
            group_meteor = float(meteor_corpus_from_sums(meteor, summed)[0])
            return _point_metrics(index, bleu_stats, group_meteor, per_image)

        by_group = breakdown(labels, group_metrics)
        ci95 = _confidence_intervals(meteor, bleu_stats, meteor_stats, per_image, resamples, seed)

    metrics: dict[str, float | None] = dict(zip(BLEU_NAMES, bleu_corpus, strict=True))
    metrics.update(
        meteor=float(meteor_corpus),
        rouge_l=float(rouge),
        cider=float(cider),
        spice=None if spice_corpus is None else float(spice_corpus),
    )
    ci95 = {name: ci95[name] for name in metrics if name in ci95}  # display order

    rows = []
    for i, item_id in enumerate(ids):
        row: dict[str, Any] = {
            "id": item_id,
            "prediction": predictions[i],
            "cider": float(cider_per_image[i]),
            "rouge_l": float(rouge_per_image[i]),
            "meteor": float(meteor_per_image[i]),
            "bleu_4": float(bleu_per_image[BLEU_ORDERS - 1][i]),
        }
        if spice_per_image is not None:
            row["spice"] = float(spice_per_image[i])
        rows.append(row)

    warnings = []
    empty = [ids[i] for i in range(len(ids)) if not res[i][0].strip()]
    if empty:
        warnings.append(
            f"{len(empty)} prediction(s) empty after PTB tokenization (scored as empty), "
            f"e.g. id {empty[0]!r}"
        )
    return MetricReport(
        task="caption",
        n=len(ids),
        metrics=metrics,
        ci95=ci95,
        conventions=_conventions(spice_note, package_dir, resamples, seed),
        breakdown=by_group,
        warnings=warnings,
        per_item=rows,
    )
