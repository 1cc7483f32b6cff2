"""Caption log-likelihood given an image: the score behind generative image-text retrieval.

Why: a generative VLM has no image/text embedding to compare, so ``flickr30k-retrieval`` and
``coco-retrieval`` score each (image, caption) pair by how likely the model finds the caption as
its answer to a fixed prompt about the image (VisualGPTScore, benchmarks.md 3.3, protocol 1,
without the P(t) debiasing). :func:`score_matrix` returns the (images x captions) matrix that
:func:`vlm_retain.evaluate.metrics.retrieval.score_retrieval` turns into Recall@K.

What is scored: the caption is the assistant's answer, laid out exactly as
:func:`vlm_retain.models.encoding.encode` lays out a supervised answer, and the score is the
**mean natural-log probability per token over the caption tokens plus the end-of-turn token**
(``<|im_end|>``, ``<end_of_utterance>``, PaliGemma's ``<eos>``; Idefics3's space after
``Assistant:`` is part of the first caption token, as in training). Why the end token is
included: it is the exact span training supervises (the ``labels`` of ``encode``), so a
fine-tune is measured on what it learnt; and it makes "this caption is complete" part of the
score, so a caption that is merely a likely *beginning* of the right description is not
rewarded. Why the mean and not the sum: captions differ in length, and a sum ranks short
captions first whatever the image.

Why a prefix cache ("encode each image once"): a 100-image x 500-caption gallery is 50,000
pairs; a full forward per pair re-runs the vision tower and the ~hundreds of image tokens every
time. Instead the shared prefix (system + image + prompt + assistant header) runs once per image
with ``use_cache=True``, and the captions are scored in right-padded batches against a
batch-expanded copy of that KV cache: the work per caption is then only its own tokens.
Exactness (tested against a full forward per pair on tiny models of every family, to 1e-4):

- positions: Qwen2-VL/2.5-VL/3-VL use 3-D mrope; after the image the text positions are
  shifted by ``rope_deltas`` (max position + 1 - prefix length, from the model's own
  ``get_rope_index``). The continuation gets ``prefix_length + rope_delta + j`` on all three
  axes, which is what the full forward computes for text after the prefix. We pass these
  positions explicitly rather than rely on the model's cached ``rope_deltas`` attribute (state
  that another call may have changed). Idefics3 (Llama), InternVL (Qwen2/Qwen3 language model,
  1-D rope) and PaliGemma (Gemma, 1-indexed) derive positions from the cache length by
  themselves, which is already right.
- attention: the mask covers prefix + caption; padding is on the right, after every real token,
  so it changes nothing that is scored. PaliGemma's prefix is bidirectional: its prefill runs
  with the prefix block mask and the continuation is causal, as in a full forward where the
  prefix cannot see the suffix.
- the first caption token is predicted by the last prefix position, so its log-probability
  comes from the prefill's last logits, shared by every caption.

A caption whose tokens would merge with the prompt's last token (a tokenizer artefact that the
shared prefix cannot express) is scored with a full forward instead, so results never depend on
which path ran. :func:`supports_prefix_cache` names the families that use the cache; any other
family is scored with batched full forwards (the image repeated per row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vlm_retain.errors import InputError
from vlm_retain.models.encoding import IGNORE_INDEX, encode, render_full
from vlm_retain.models.loading import batch_to, halve_after_oom, is_oom
from vlm_retain.models.registry import QWEN_LAYOUT_FAMILIES
from vlm_retain.models.unwrap import unwrap

if TYPE_CHECKING:
    from PIL.Image import Image

    from vlm_retain.models.loading import LoadedModel
    from vlm_retain.models.registry import Family

#: Families whose prefix KV cache reproduces a full forward (checked per family in
#: tests/test_likelihood.py against one full forward per (image, caption) pair).
PREFIX_CACHE_FAMILIES = frozenset(
    {"qwen2_5_vl", "qwen2_vl", "qwen3_vl", "idefics3", "paligemma", "internvl"}
)
#: Families with 3-D multimodal rope whose continuation positions need ``rope_deltas``.
_MROPE_FAMILIES = frozenset(QWEN_LAYOUT_FAMILIES)
METHODS = ("auto", "cached", "full")

#: ``progress(done, total)``, called after each image of :func:`score_matrix`.
ProgressFn = Callable[[int, int], None]


def supports_prefix_cache(family: str | Family) -> bool:
    """True when ``family`` scores captions against a cached image prefix (else full forwards).

    Every family in the registry does today: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (explicit mrope
    positions), Idefics3, PaliGemma and InternVL. A family added later stays on the
    always-correct full forward path until its cached scores are checked against full forwards
    in the tests.
    """
    name = family if isinstance(family, str) else family.name
    return name in PREFIX_CACHE_FAMILIES


def caption_loglik(
    loaded: LoadedModel,
    image: Image,
    captions: Sequence[str],
    *,
    prompt: str,
    batch_size: int = 32,
    system: str | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Mean per-token log-likelihood of each caption as the answer to ``prompt`` about ``image``.

    Returns a float64 array of ``len(captions)`` values (natural log, <= 0), averaged over the
    caption tokens plus the end-of-turn token (see the module docstring for why). ``method``:
    ``"auto"`` uses the prefix cache where :func:`supports_prefix_cache` says so, ``"cached"``
    insists on it, ``"full"`` runs one full forward per caption (batched, image repeated), the
    reference the cached path is tested against. ``system`` adds a system turn (not PaliGemma).
    """
    captions = list(captions)
    _check_args(loaded, captions, batch_size, method)
    if not captions:
        return np.zeros(0, dtype=np.float64)
    if not _use_cache(loaded, method):
        return _full_loglik(loaded, image, captions, prompt, batch_size, system)
    tokens = caption_tokens(loaded, captions, prompt=prompt, system=system)
    return _cached_loglik(loaded, image, captions, tokens, prompt, batch_size, system)


def score_matrix(
    loaded: LoadedModel,
    images: Sequence[Image],
    captions: Sequence[str],
    *,
    prompt: str,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    system: str | None = None,
    method: str = "auto",
) -> np.ndarray:
    """The (n_images, n_captions) matrix of mean caption log-likelihoods, one image at a time.

    Row ``i`` is :func:`caption_loglik` of ``images[i]`` against every caption; this is the
    ``scores`` argument of :func:`~vlm_retain.evaluate.metrics.retrieval.score_retrieval`.
    The captions are tokenized once for all images (their tokens do not depend on the image).
    ``progress(done, total)`` is called after each image, e.g. to advance a progress bar. An
    image whose caption batches run out of accelerator memory is scored again at half the
    batch size (down to one), which is then kept.
    """
    captions = list(captions)
    _check_args(loaded, captions, batch_size, method)
    out = np.zeros((len(images), len(captions)), dtype=np.float64)
    if not captions:
        return out
    cached = _use_cache(loaded, method)
    tokens = caption_tokens(loaded, captions, prompt=prompt, system=system) if cached else None
    for i, image in enumerate(images):
        while True:
            try:
                if tokens is not None:
                    row = _cached_loglik(
                        loaded, image, captions, tokens, prompt, batch_size, system
                    )
                else:
                    row = _full_loglik(loaded, image, captions, prompt, batch_size, system)
                break
            except Exception as exc:
                if not is_oom(exc) or batch_size == 1:
                    raise
                batch_size = halve_after_oom(batch_size, "captions")
        out[i] = row
        if progress is not None:
            progress(i + 1, len(images))
    return out


# --------------------------------------------------------------------------- tokens


def caption_tokens(
    loaded: LoadedModel, captions: Sequence[str], *, prompt: str, system: str | None = None
) -> list[list[int] | None]:
    """The scored token ids of each caption (answer + end-of-turn), as ``encode`` labels them.

    Text only, no image: the answer's tokens do not depend on the image, so a gallery's captions
    are tokenized once. ``None`` marks a caption whose first token would merge with the end of
    the prompt; the shared prefix cannot express that, so it is scored with a full forward.
    """
    tokenizer = loaded.tokenizer
    if loaded.family.chat.style == "paligemma":
        # The processor tokenizes the answer as the second text of a pair (suffix + <eos>), on
        # its own; mirror that call so the ids are the ones its labels hold.
        enc = tokenizer(
            [prompt] * len(captions),
            text_pair=[c + tokenizer.eos_token for c in captions],
            add_special_tokens=True,
            return_token_type_ids=True,
        )
        return [
            [t for t, kind in zip(ids, kinds, strict=True) if kind == 1]
            for ids, kinds in zip(enc["input_ids"], enc["token_type_ids"], strict=True)
        ]
    eot = tokenizer.convert_tokens_to_ids(loaded.family.chat.end_of_turn)
    prompt_text = ""
    tails: list[str] = []
    for caption in captions:
        prompt_text, full = render_full(loaded, prompt, caption, image=True, system=system)
        tails.append(full[len(prompt_text) :])
    tail_ids = tokenizer(tails, add_special_tokens=False)["input_ids"]
    joined = tokenizer([prompt_text + t for t in tails], add_special_tokens=False)["input_ids"]
    out: list[list[int] | None] = []
    for ids, whole in zip(tail_ids, joined, strict=True):
        if not ids or whole[-len(ids) :] != ids:
            out.append(None)
            continue
        ends = [k for k, t in enumerate(ids) if t == eot]
        out.append(list(ids[: ends[-1] + 1]) if ends else list(ids))
    return out


# --------------------------------------------------------------------------- scoring paths


def _check_args(loaded: Any, captions: list[str], batch_size: int, method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown scoring method {method!r}", hint=f"use {', '.join(METHODS)}")
    if method == "cached" and not supports_prefix_cache(loaded.family):
        raise InputError(
            f"family {loaded.family.name} has no checked prefix-cache scoring",
            hint="use method='full' (or 'auto')",
        )
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    empty = [i for i, c in enumerate(captions) if not c.strip()]
    if empty:
        raise InputError(f"caption {empty[0]} is empty; every caption needs text to score")


def _use_cache(loaded: Any, method: str) -> bool:
    return method == "cached" or (method == "auto" and supports_prefix_cache(loaded.family))


def _token_logprobs(logits: Any, targets: Any) -> Any:
    """log p(target) per position, in fp32, without a full (B, L, V) log-softmax copy."""
    import torch

    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _full_loglik(
    loaded: Any,
    image: Any,
    captions: list[str],
    prompt: str,
    batch_size: int,
    system: str | None,
) -> np.ndarray:
    """Reference path: one full forward per (image, caption), batched with the image repeated."""
    import torch

    out = np.zeros(len(captions), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(captions), batch_size):
            chunk = captions[start : start + batch_size]
            batch = encode(
                loaded,
                [image] * len(chunk),
                [prompt] * len(chunk),
                chunk,
                padding_side="right",
                system=system,
            )
            labels = batch.pop("labels")
            logits = loaded.model(**batch_to(batch, loaded), use_cache=False).logits
            targets = labels[:, 1:].to(logits.device)
            valid = targets != IGNORE_INDEX
            logp = _token_logprobs(logits[:, :-1], targets.clamp(min=0))
            mean = (logp * valid).sum(dim=1) / valid.sum(dim=1)
            out[start : start + len(chunk)] = mean.double().cpu().numpy()
    return out


def _cached_loglik(
    loaded: Any,
    image: Any,
    captions: list[str],
    tokens: list[list[int] | None],
    prompt: str,
    batch_size: int,
    system: str | None,
) -> np.ndarray:
    """Prefill the image prefix once, then score caption batches against its KV cache."""
    import torch

    out = np.zeros(len(captions), dtype=np.float64)
    fallback = [i for i, t in enumerate(tokens) if t is None]
    if fallback:
        sub = [captions[i] for i in fallback]
        out[fallback] = _full_loglik(loaded, image, sub, prompt, batch_size, system)
    todo = [i for i, t in enumerate(tokens) if t is not None]
    if not todo:
        return out
    # Longest first and similar lengths together: less padding per batch, and the first batch
    # shows the peak memory at once rather than at the end.
    todo.sort(key=lambda i: -len(tokens[i]))  # type: ignore[arg-type]
    device = loaded.device
    pad_id = loaded.tokenizer.pad_token_id or 0
    with torch.inference_mode():
        prefix = batch_to(encode(loaded, [image], [prompt], system=system), loaded)
        prefix_len = int(prefix["input_ids"].shape[1])
        delta = _rope_delta(loaded, prefix)
        pre = loaded.model(**prefix, use_cache=True, logits_to_keep=1)
        cache = pre.cache
        first = pre.logits[0, -1].float().log_softmax(-1)
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            seqs = [tokens[i] for i in rows]
            n, width = len(seqs), max(len(s) for s in seqs)  # type: ignore[arg-type]
            ids = torch.full((n, width), pad_id, dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            for r, seq in enumerate(seqs):
                ids[r, : len(seq)] = torch.tensor(seq)  # type: ignore[arg-type]
                mask[r, : len(seq)] = 1
            ids, mask = ids.to(device), mask.to(device)
            total = first[ids[:, 0]]
            if width > 1:
                logits = _continue(loaded, cache, ids[:, :-1], mask[:, :-1], prefix_len, delta)
                logp = _token_logprobs(logits, ids[:, 1:])
                total = total + (logp * mask[:, 1:]).sum(dim=1)
            mean = total / mask.sum(dim=1)
            out[rows] = mean.double().cpu().numpy()
    return out


def _rope_delta(loaded: Any, prefix: dict[str, Any]) -> Any:
    """Qwen mrope: how far the text positions after the image are shifted (None elsewhere)."""
    if loaded.family.name not in _MROPE_FAMILIES:
        return None
    core = unwrap(loaded.model).model
    _positions, delta = core.get_rope_index(
        prefix["input_ids"],
        mm_token_type_ids=prefix["mm_token_type_ids"],
        image_grid_thw=prefix.get("image_grid_thw"),
        attention_mask=prefix["attention_mask"],
    )
    return delta


def _continue(loaded: Any, cache: Any, ids: Any, mask: Any, prefix_len: int, delta: Any) -> Any:
    """Logits of the caption tokens ``ids`` (B, L) continuing the cached one-row prefix."""
    import copy

    import torch

    n, width = ids.shape
    # A private, batch-expanded copy: the forward appends to the cache it is given, and the
    # prefix is reused for every batch. The memo shares the prefix tensors (no deep copy);
    # batch_repeat_interleave then builds new (B, heads, P, dim) tensors.
    memo = {id(t): t for t in _cache_tensors(cache)}
    batch_cache = copy.deepcopy(cache, memo)
    batch_cache.batch_repeat_interleave(n)
    attention = torch.cat([mask.new_ones((n, prefix_len)), mask], dim=1)
    kwargs: dict[str, Any] = {}
    if delta is not None:
        steps = torch.arange(width, device=ids.device) + prefix_len
        pos = steps + delta.to(ids.device).reshape(-1)[0]
        kwargs["position_ids"] = pos.view(1, 1, -1).expand(3, n, -1)
    out = loaded.model(
        input_ids=ids, attention_mask=attention, cache=batch_cache, use_cache=True, **kwargs
    )
    return out.logits


def _cache_tensors(cache: Any) -> list[Any]:
    import torch

    found: list[Any] = []
    for layer in getattr(cache, "layers", []):
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                found.append(value)
    return found
