"""Caption log-likelihood: the prefix-cache path equals a full forward per pair, per family."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from tests.test_models_tiny import TINY, line_image
from vlm_retain.errors import InputError

PROMPT = "Describe the image in one sentence."
# Different lengths (padding inside a batch), scripts, punctuation, a one-token caption.
CAPTIONS = [
    "a cat",
    "two dogs run in the park",
    "Вѣра і Ѳома",
    "مرحبا بالعالم",
    "x",
    "A much longer caption, with punctuation; and more words at the end.",
    "  leading spaces",
]
TOL = 1e-4


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("lik")
    return {name: load_model(build_tiny(name, root / name, size="xs")) for name in TINY}


def _per_pair(lm, image, captions, **kwargs):
    """The naive reference: one full forward per (image, caption), no batching at all."""
    from vlm_retain.evaluate.likelihood import caption_loglik

    return np.array(
        [
            caption_loglik(lm, image, [c], prompt=PROMPT, method="full", **kwargs)[0]
            for c in captions
        ]
    )


@pytest.mark.parametrize("name", TINY)
def test_cached_equals_full_forward_per_pair(loaded, name):
    from vlm_retain.evaluate.likelihood import caption_loglik, supports_prefix_cache

    lm = loaded[name]
    assert supports_prefix_cache(name)
    image = line_image(336, 112)  # not square: Qwen's mrope height/width positions differ
    cached = caption_loglik(lm, image, CAPTIONS, prompt=PROMPT, batch_size=3, method="cached")
    reference = _per_pair(lm, image, CAPTIONS)
    assert cached.shape == (len(CAPTIONS),) and cached.dtype == np.float64
    assert np.all(cached < 0)
    np.testing.assert_allclose(cached, reference, atol=TOL, rtol=0)
    # the batched full path (the fallback) agrees too
    full = caption_loglik(lm, image, CAPTIONS, prompt=PROMPT, batch_size=4, method="full")
    np.testing.assert_allclose(full, reference, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_scored_tokens_are_the_encode_labels(loaded, name):
    """Caption + end-of-turn, tokenized without the image, are exactly what training supervises."""
    from vlm_retain.evaluate.likelihood import caption_tokens
    from vlm_retain.models.encoding import encode

    lm = loaded[name]
    n = len(CAPTIONS)
    batch = encode(lm, [line_image()] * n, [PROMPT] * n, CAPTIONS, padding_side="right")
    labels = [row[row != -100].tolist() for row in batch["labels"]]
    assert caption_tokens(lm, CAPTIONS, prompt=PROMPT) == labels
    eot = lm.family.chat.end_of_turn
    assert all(lm.tokenizer.decode(ids[-1:]) == eot for ids in labels)


def test_system_prompt_and_peft_wrapper(loaded):
    """A system turn shifts the prefix; a PEFT-wrapped Qwen still finds get_rope_index."""
    import copy

    from peft import LoraConfig, get_peft_model

    from vlm_retain.evaluate.likelihood import caption_loglik

    lm = loaded["qwen2_5_vl"]
    config = LoraConfig(r=4, target_modules=lm.family.lora_regex("llm"), init_lora_weights=False)
    wrapped = dataclasses.replace(lm, model=get_peft_model(copy.deepcopy(lm.model), config).eval())
    image, caps = line_image(), CAPTIONS[:3]
    kw = {"prompt": PROMPT, "system": "You read old letters."}
    cached = caption_loglik(wrapped, image, caps, method="cached", **kw)
    full = caption_loglik(wrapped, image, caps, method="full", **kw)
    np.testing.assert_allclose(cached, full, atol=TOL, rtol=0)
    plain = caption_loglik(lm, image, caps, method="cached", **kw)
    assert np.abs(plain - cached).max() > 1e-3  # the adapter really changed the scores


def test_merged_boundary_falls_back_to_full_forward(loaded, monkeypatch):
    """A caption the prefix cannot express (None tokens) is scored with a full forward."""
    import vlm_retain.evaluate.likelihood as lik

    lm = loaded["qwen2_vl"]
    image = line_image()
    real = lik.caption_tokens

    def some_merged(*args, **kwargs):
        tokens = real(*args, **kwargs)
        return [None if i % 2 else t for i, t in enumerate(tokens)]

    monkeypatch.setattr(lik, "caption_tokens", some_merged)
    mixed = lik.caption_loglik(lm, image, CAPTIONS, prompt=PROMPT, batch_size=2)
    np.testing.assert_allclose(mixed, _per_pair(lm, image, CAPTIONS), atol=TOL, rtol=0)


def test_score_matrix_shape_determinism_and_rows(loaded):
    from vlm_retain.evaluate.likelihood import caption_loglik, score_matrix

    lm = loaded["qwen2_5_vl"]
    # different sizes: a stale rope_deltas from the previous image must not leak into the next
    images = [line_image(), line_image(112, 28), line_image(336, 56)]
    seen: list[tuple[int, int]] = []
    first = score_matrix(
        lm,
        images,
        CAPTIONS[:5],
        prompt=PROMPT,
        batch_size=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert first.shape == (3, 5) and first.dtype == np.float64
    assert seen == [(1, 3), (2, 3), (3, 3)]
    again = score_matrix(lm, images[::-1], CAPTIONS[:5], prompt=PROMPT, batch_size=5)
    np.testing.assert_allclose(again[::-1], first, atol=TOL, rtol=0)
    row = caption_loglik(lm, images[1], CAPTIONS[:5], prompt=PROMPT)
    np.testing.assert_allclose(first[1], row, atol=TOL, rtol=0)
    assert score_matrix(lm, images, [], prompt=PROMPT).shape == (3, 0)


def test_bad_arguments(loaded):
    from vlm_retain.evaluate.likelihood import caption_loglik, supports_prefix_cache

    lm = loaded["idefics3"]
    with pytest.raises(InputError, match="method"):
        caption_loglik(lm, line_image(), ["a"], prompt=PROMPT, method="fast")
    with pytest.raises(InputError, match="batch size"):
        caption_loglik(lm, line_image(), ["a"], prompt=PROMPT, batch_size=0)
    with pytest.raises(InputError, match="caption 1 is empty"):
        caption_loglik(lm, line_image(), ["a", " "], prompt=PROMPT)
    assert not supports_prefix_cache("llava")
    other = dataclasses.replace(lm, family=dataclasses.replace(lm.family, name="newfam"))
    with pytest.raises(InputError, match="prefix-cache"):
        caption_loglik(other, line_image(), ["a"], prompt=PROMPT, method="cached")
    # an unchecked family is still scored, through full forwards
    auto = caption_loglik(other, line_image(), ["a cat"], prompt=PROMPT)
    np.testing.assert_allclose(auto, _per_pair(lm, line_image(), ["a cat"]), atol=TOL, rtol=0)


def test_briefly_fitted_model_retrieves_its_captions(tmp_path):
    """After a dozen steps on two (image, caption) pairs the diagonal wins: R@1 = 1 both ways."""
    import torch

    from vlm_retain.evaluate.likelihood import score_matrix
    from vlm_retain.evaluate.metrics.retrieval import score_retrieval
    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import batch_to, load_model
    from vlm_retain.models.tiny import build_tiny

    lm = load_model(build_tiny("idefics3", tmp_path / "m", size="xs"))
    images = [Image.new("RGB", (56, 56), "black"), Image.new("RGB", (56, 56), "white")]
    captions = ["a black page", "a white page"]
    before = score_matrix(lm, images, captions, prompt=PROMPT)
    batch = batch_to(encode(lm, images, [PROMPT] * 2, captions, padding_side="right"), lm)
    optimizer = torch.optim.Adam(lm.model.parameters(), lr=1e-2)
    lm.model.train()
    for _ in range(12):
        loss = lm.model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lm.model.eval()
    after = score_matrix(lm, images, captions, prompt=PROMPT)
    assert np.diag(after).mean() > np.diag(before).mean() + 1.0
    report = score_retrieval(after, [0, 1], ks=(1,), resamples=10)
    assert report.metrics == {"t2i_r1": 1.0, "i2t_r1": 1.0}


def test_score_matrix_halves_the_caption_batch_after_out_of_memory(loaded, monkeypatch):
    """The accelerator's out-of-memory error is simulated (a CPU cannot run out that way):
    caption batches over two fail, the scores are those of a run that fit."""
    import torch

    from vlm_retain.evaluate import likelihood

    lm = loaded["qwen2_5_vl"]
    images = [line_image(), line_image(112, 28)]
    expected = likelihood.score_matrix(lm, images, CAPTIONS, prompt=PROMPT, batch_size=2)
    real = likelihood._continue
    rows: list[int] = []

    def limited(loaded_, cache, ids, *args, **kwargs):
        rows.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(loaded_, cache, ids, *args, **kwargs)

    monkeypatch.setattr(likelihood, "_continue", limited)
    with pytest.warns(UserWarning, match="out of memory at 8 captions"):
        got = likelihood.score_matrix(lm, images, CAPTIONS, prompt=PROMPT, batch_size=8)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    assert max(rows) > 2 and rows[-1] <= 2
