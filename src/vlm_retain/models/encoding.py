"""The one place that turns (images, prompts[, answers]) into model inputs for any family.

Why one place: generation, likelihood scoring and training must see exactly the same token
layout, or a model is evaluated on a format it was not trained on. The generation backend calls
:func:`encode` without answers (left padding, ready for ``generate``); scoring and training call
it with answers and get ``labels`` that supervise only the answer and the end-of-turn token.

How the labels are found (env.md §3, option B, works with any chat template): the prompt is
rendered with ``add_generation_prompt=True``, the full text is the prompt plus the assistant's
answer, and the supervised span is the tail that the answer adds, cut after the end-of-turn
token. The tail is tokenized on its own and checked against the end of each row; if a tokenizer
merges across the boundary, the prompts are encoded (with their images) to get exact lengths.
PaliGemma has no chat template: its processor builds the sequence and its ``suffix=`` path
returns the labels already masked.
"""

from __future__ import annotations

from typing import Any

from vlm_retain.errors import InputError

IGNORE_INDEX = -100


def conversation(
    prompt: str, *, image: bool, system: str | None = None, answer: str | None = None
) -> list[dict[str, Any]]:
    """The chat messages for one example (image first, then the prompt text)."""
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    content: list[dict[str, Any]] = [{"type": "image"}] if image else []
    content.append({"type": "text", "text": prompt})
    messages.append({"role": "user", "content": content})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def render_prompt(loaded: Any, prompt: str, *, image: bool, system: str | None = None) -> str:
    """The prompt text the model sees before it answers (chat template, generation prompt)."""
    processor = loaded.processor
    return processor.apply_chat_template(
        conversation(prompt, image=image, system=system),
        tokenize=False,
        add_generation_prompt=True,
    )


def render_full(
    loaded: Any, prompt: str, answer: str, *, image: bool, system: str | None = None
) -> tuple[str, str]:
    """``(prompt_text, full_text)``; ``full_text`` starts with ``prompt_text``.

    The full text comes from the template (so template details such as Idefics3's space after
    ``Assistant:`` are kept); when a template renders the answered chat with a different prefix
    (e.g. one that drops earlier reasoning), the answer is appended to the prompt text instead.
    """
    chat = loaded.family.chat
    prompt_text = render_prompt(loaded, prompt, image=image, system=system)
    full = loaded.processor.apply_chat_template(
        conversation(prompt, image=image, system=system, answer=answer), tokenize=False
    )
    if not full.startswith(prompt_text) or chat.end_of_turn not in full[len(prompt_text) :]:
        full = prompt_text + chat.answer_prefix + answer + chat.end_of_turn
    return prompt_text, full


def encode(
    loaded: Any,
    images: list[Any],
    prompts: list[str],
    answers: list[str] | None = None,
    *,
    padding_side: str = "left",
    system: str | None = None,
) -> dict[str, Any]:
    """Model inputs for a batch: the processor's tensors, plus ``labels`` when answers are given.

    ``images[i]`` (a PIL image, or None for a text-only example where the family allows it) goes
    with ``prompts[i]`` and ``answers[i]``. Keys are what the processor returns (``input_ids``,
    ``attention_mask``, ``pixel_values``, ``image_grid_thw`` / ``pixel_attention_mask`` /
    ``token_type_ids``, ``mm_token_type_ids``...), so ``model(**batch)`` and
    ``model.generate(**batch)`` work. ``labels`` is -100 everywhere except the answer tokens
    and the end-of-turn token. Tensors are on the CPU; see ``loading.batch_to``.
    """
    if len(images) != len(prompts) or (answers is not None and len(answers) != len(prompts)):
        raise InputError(
            f"encode: {len(images)} images, {len(prompts)} prompts"
            + (f", {len(answers)} answers" if answers is not None else "")
            + "; give one of each per example"
        )
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be left or right, not {padding_side!r}")
    if not prompts:
        raise InputError("encode: empty batch")
    if loaded.family.chat.style == "paligemma":
        return _encode_paligemma(loaded, images, prompts, answers, padding_side, system)
    return _encode_chat(loaded, images, prompts, answers, padding_side, system)


def _images_arg(loaded: Any, images: list[Any]) -> Any:
    """Images in the layout each processor wants: flat for Qwen, one list per row for Idefics3."""
    if all(img is None for img in images):
        return None
    if loaded.family.chat.style == "idefics3":
        return [[img] if img is not None else [] for img in images]
    return [img for img in images if img is not None]


def _call_processor(loaded: Any, texts: list[str], images: list[Any], padding_side: str) -> Any:
    tokenizer = loaded.processor.tokenizer
    before = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        return loaded.processor(
            text=texts,
            images=_images_arg(loaded, images),
            padding=True,
            return_tensors="pt",
            padding_side=padding_side,
        )
    finally:
        tokenizer.padding_side = before


def _encode_chat(
    loaded: Any,
    images: list[Any],
    prompts: list[str],
    answers: list[str] | None,
    padding_side: str,
    system: str | None,
) -> dict[str, Any]:
    if answers is None:
        texts = [
            render_prompt(loaded, p, image=img is not None, system=system)
            for img, p in zip(images, prompts, strict=True)
        ]
        return dict(_call_processor(loaded, texts, images, padding_side))
    pairs = [
        render_full(loaded, p, a, image=img is not None, system=system)
        for img, p, a in zip(images, prompts, answers, strict=True)
    ]
    batch = dict(_call_processor(loaded, [full for _, full in pairs], images, padding_side))
    batch["labels"] = _labels(loaded, batch, pairs, images, padding_side)
    return batch


def _labels(
    loaded: Any,
    batch: dict[str, Any],
    pairs: list[tuple[str, str]],
    images: list[Any],
    padding_side: str,
) -> Any:
    import torch

    tokenizer = loaded.processor.tokenizer
    eot = tokenizer.convert_tokens_to_ids(loaded.family.chat.end_of_turn)
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    prompt_lengths: list[int] | None = None
    for i, (prompt_text, full) in enumerate(pairs):
        valid = mask[i].nonzero().flatten()
        first, end = int(valid[0]), int(valid[-1]) + 1
        tail = tokenizer(full[len(prompt_text) :], add_special_tokens=False)["input_ids"]
        row = input_ids[i, first:end].tolist()
        if tail and row[-len(tail) :] == tail:
            start = end - len(tail)
        else:  # the tokenizer merged across the prompt/answer boundary: measure the prompt
            if prompt_lengths is None:
                enc = _call_processor(loaded, [p for p, _ in pairs], images, "right")
                prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
            start = first + int(prompt_lengths[i])
        stop = end
        ends = (input_ids[i, start:end] == eot).nonzero().flatten()
        if len(ends):
            stop = start + int(ends[-1]) + 1
        labels[i, start:stop] = input_ids[i, start:stop]
    return labels


def _encode_paligemma(
    loaded: Any,
    images: list[Any],
    prompts: list[str],
    answers: list[str] | None,
    padding_side: str,
    system: str | None,
) -> dict[str, Any]:
    if system is not None:
        raise InputError("PaliGemma has no system prompt; put the instruction in the prompt")
    if any(img is None for img in images):
        raise InputError("PaliGemma needs an image for every prompt (text-only is unsupported)")
    image_token = loaded.processor.image_token
    texts = [image_token + p for p in prompts]
    tokenizer = loaded.processor.tokenizer
    before = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        enc = loaded.processor(
            images=list(images),
            text=texts,
            suffix=list(answers) if answers is not None else None,
            padding=True,
            return_tensors="pt",
        )
    finally:
        tokenizer.padding_side = before
    batch = dict(enc)
    if answers is None:
        batch.pop("labels", None)
    return batch
