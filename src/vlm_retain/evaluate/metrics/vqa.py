"""VQAv2 accuracy, as the official evaluation computes it (also used for TextVQA).

Reference: GT-Vision-Lab/VQA@a013f004, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, and
the rules on http://www.visualqa.org/evaluation.html. The normalization below reproduces that
script's *actual* behaviour, quirks included (a period regex that was meant as a lookbehind, a
substitution capped at 32 periods, contraction keys that can never match), because VQAv2 numbers
are only comparable when answers are normalized the same way.

One deliberate difference from the official script, shared with lmms-eval (since 2025-08) and
VLMEvalKit: the prediction *and* every reference answer always go through the full normalization.
The official script normalizes references only when the ten answers disagree and then only their
punctuation; it assumes submitted answers are already clean, so a raw "Yes." would score 0
against ten "yes". Model outputs are not clean, hence always normalizing (benchmarks.md 1.2, 1.4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from vlm_retain.evaluate.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, mean_ci
from vlm_retain.evaluate.metrics.common import MISSING, group_labels, item_ids, mean_breakdown
from vlm_retain.evaluate.metrics.report import MetricReport

#: VQAv2 collects exactly this many human answers per question.
EXPECTED_ANSWERS = 10
#: Matching answers needed among the other annotators for full credit: min(1, matches / 3).
FULL_CREDIT_MATCHES = 3
#: How many ids a warning names before eliding the rest.
WARN_IDS = 5

#: Symbols handled by processPunctuation. Apostrophe, colon and period are not among them (the
#: period has its own rule), so "don't" and "10:30" survive.
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

#: A comma between two digits anywhere in the answer switches *every* symbol to deletion.
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
#: The official pattern is "(?!<=\d)(\.)(?!\d)": the first group was meant as a lookbehind but is
#: a negative lookahead for the two characters "<=" followed by a digit, which can never match at
#: a period, so it is a no-op. What remains: a period not followed by a digit.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
#: The official call passes re.UNICODE (= 32) positionally as ``count``, so at most 32 such periods
#: are removed per answer. Reproduced so that the rare long answer normalizes identically.
_PERIOD_SUB_COUNT = int(re.UNICODE)

#: Number words to digits; only none/zero..ten, as in the official manualMap.
NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

#: The official contractions table (a013f004, ASCII apostrophes), entry for entry. Quirks kept on
#: purpose: tokens are lowercased before lookup, so the capitalized keys ("Id've", "I'dve", "Im",
#: "Ive") never match; "somebody'd" maps *to* the apostrophe-less "somebodyd"; a few keys map to
#: themselves ("let's", "she's").
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

REFERENCE = (
    "GT-Vision-Lab/VQA@a013f004 PythonEvaluationTools/vqaEvaluation/vqaEval.py "
    "(http://www.visualqa.org/evaluation.html)"
)


def process_punctuation(text: str) -> str:
    """The official processPunctuation, step for step.

    Each symbol is deleted when the input has it next to a space (or has a digit-comma-digit
    anywhere), otherwise replaced by a space: "e-mail" -> "e mail" but "100,978" -> "100978".
    All tests look at the *input*, not at the partly processed text, as the official loop does.
    """
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for symbol in PUNCTUATION:
        spaced = f"{symbol} " in text or f" {symbol}" in text
        out = out.replace(symbol, "" if delete_all or spaced else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_SUB_COUNT)


def process_digit_article(text: str) -> str:
    """The official processDigitArticle: lowercase, number words, articles, contractions.

    Number words are mapped before the article test and contractions after it, in that order.
    """
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    kept = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in kept)


@lru_cache(maxsize=65536)
def normalize_answer(text: str) -> str:
    """Normalize one answer (prediction or reference) exactly as vqaEval.py does a prediction.

    Newlines and tabs become spaces, the ends are stripped, then punctuation and then
    digits/articles/contractions are processed. Cached: reference answers repeat a lot.
    """
    cleaned = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(cleaned))


def _leave_one_out(normalized_prediction: str, normalized_answers: Sequence[str]) -> float:
    """Mean over answers i of min(1, matches among the *other* answers / 3).

    Leaving out by index keeps duplicates: with "yes" three times among ten, each "yes" left out
    still sees the other two.
    """
    hits = [answer == normalized_prediction for answer in normalized_answers]
    total = sum(hits)
    per_answer = [min(1.0, (total - hit) / FULL_CREDIT_MATCHES) for hit in hits]
    return sum(per_answer) / len(per_answer)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against its human answers, in [0, 1].

    With ten answers of which k equal the prediction this is
    (k * min(1, (k-1)/3) + (10-k) * min(1, k/3)) / 10: 0, 0.3, 0.6, 0.9, 1.0 for k = 0..4.
    """
    if len(answers) == 0:
        raise ValueError("no reference answers to score against; give at least one answer")
    return _leave_one_out(normalize_answer(prediction), [normalize_answer(a) for a in answers])


def _count_warning(ids: Sequence[str], counts: Sequence[int]) -> str | None:
    """One line naming how many items lack exactly ten answers, and the first few of them."""
    odd = [(item, c) for item, c in zip(ids, counts, strict=True) if c != EXPECTED_ANSWERS]
    if not odd:
        return None
    named = ", ".join(f"{item} ({c})" for item, c in odd[:WARN_IDS])
    more = f", and {len(odd) - WARN_IDS} more" if len(odd) > WARN_IDS else ""
    return (
        f"{len(odd)} of {len(ids)} items do not have exactly {EXPECTED_ANSWERS} answers "
        f"(id (answers): {named}{more}); each was scored over the answers it has, so an item "
        f"with fewer than 4 answers cannot reach 1 even when every answer matches"
    )


def _conventions(n_odd: int, answer_types_given: bool) -> dict[str, object]:
    """What was done, in words, for results.json and docs/metrics.md."""
    return {
        "metric": "VQAv2 accuracy (also TextVQA): per item, mean over its answers i of "
        "min(1, m_i/3), m_i = answers other than i (left out by index, duplicates kept) equal "
        "to the normalized prediction; overall = mean over items, as a fraction (not x100, "
        "not rounded)",
        "reference": REFERENCE,
        "normalization": "prediction and every reference answer, always: \\n and \\t -> space, "
        'strip; processPunctuation (symbols ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! are '
        "deleted if next to a space or if the answer has digit,digit anywhere, else replaced "
        "by a space; then periods not followed by a digit are removed, at most 32 per answer "
        "as in the official call); processDigitArticle (lowercase, split on whitespace, "
        "none/zero..ten -> 0..10, drop a/an/the, official contractions table with its "
        "never-matching capitalized keys, join with single spaces)",
        "difference_from_official": "the official script normalizes only the prediction fully "
        "and the references only by punctuation and only when the ten answers disagree; we "
        "always normalize both fully, as lmms-eval (since commit 28ea9a11, 2025-08-11) and "
        "VLMEvalKit vqa_score do, so 'Yes.' scores 1 against ten 'yes'. lmms-eval's TextVQA "
        "additionally lowercases, drops ',' and '?' and splits \"'s\" before this; we do not",
        "answer_count": f"VQAv2 has {EXPECTED_ANSWERS} answers per item; an item with another "
        "count is scored by the same leave-one-out mean over its n answers (n=1 always 0, "
        f"n=2 at most 1/3, n=3 at most 2/3) and named in the warnings; items with another "
        f"count here: {n_odd}; an item with no answer is an error",
        "answer_type": "breakdown per answer type (yes/no, number, other in VQAv2) as given "
        "with the items; items without an answer type are left out of that breakdown"
        if answer_types_given
        else "no answer types given",
        "breakdown": "per group value (sorted): n and the mean accuracy of its items; an item "
        f"without the field is grouped as {MISSING!r}",
        "ci95": "95% percentile bootstrap over items of the mean accuracy (seeded)",
    }


def score_vqa(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    *,
    ids: Sequence[str] | None = None,
    answer_types: Sequence[str | None] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> MetricReport:
    """VQA accuracy over items, with a bootstrap CI and per-answer-type / per-group breakdowns.

    ``answers[i]`` holds the human answers of item i (ten in VQAv2). Items with another number
    of answers are scored over what they have and reported in ``warnings``; an item with none
    raises ValueError naming its id.
    """
    n = len(predictions)
    if n == 0:
        raise ValueError("no predictions to score")
    if len(answers) != n:
        raise ValueError(f"{n} predictions but {len(answers)} answer lists; give one per item")
    ids = item_ids(ids, n)
    labels = group_labels(groups, n)
    if answer_types is not None:
        if isinstance(answer_types, str) or len(answer_types) != n:
            size = "a string" if isinstance(answer_types, str) else len(answer_types)
            raise ValueError(f"answer_types has {size} entries for {n} items")
        if "answer_type" in labels:
            raise ValueError("answer_type given both as answer_types and in groups; give one")
    for item, refs in zip(ids, answers, strict=True):
        if len(refs) == 0:
            raise ValueError(f"item {item!r} has no reference answers; give its answers")

    normalized = [normalize_answer(p) for p in predictions]
    scores = np.array(
        [
            _leave_one_out(pred, [normalize_answer(a) for a in refs])
            for pred, refs in zip(normalized, answers, strict=True)
        ],
        dtype=np.float64,
    )
    counts = [len(refs) for refs in answers]
    warning = _count_warning(ids, counts)
    breakdown = mean_breakdown(scores, labels, "accuracy")
    if answer_types is not None:
        # Items without an answer type are left out of this one breakdown: in VQAv2 every
        # question has a type, so "no type" is not a type of its own to report.
        by_type = mean_breakdown(scores, group_labels({"answer_type": answer_types}, n), "accuracy")
        by_type["answer_type"].pop(MISSING, None)
        breakdown.update(by_type)
    return MetricReport(
        task="vqa",
        n=n,
        metrics={"accuracy": float(scores.mean())},
        ci95={"accuracy": mean_ci(scores, resamples=resamples, seed=seed)},
        conventions=_conventions(
            sum(c != EXPECTED_ANSWERS for c in counts), answer_types is not None
        ),
        breakdown=breakdown,
        warnings=[warning] if warning else [],
        per_item=[
            {"id": item, "prediction": pred, "normalized_prediction": norm, "accuracy": float(s)}
            for item, pred, norm, s in zip(ids, predictions, normalized, scores, strict=True)
        ],
    )
