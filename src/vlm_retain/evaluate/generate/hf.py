"""Batched generation with transformers: the default backend.

Why batched greedy: the current workflow generates one image at a time with sampling, which
leaves an accelerator nearly idle (0.6 lines/s on an H200 with the 7B shape against 49 lines/s at
batch 128; research/gpu-anchors.md) and makes scores change from run to run. Here requests are
sorted by estimated input length (image tokens + prompt tokens) so each batch pads little, left
padded (decoder-only models continue from the last column), generated greedily under
``torch.inference_mode`` and stopped at the family's stop tokens. With ``kv_cache="static"``
the key/value cache is preallocated, and transformers then compiles the decoding step on CUDA
(CUDA graphs): per-token Python and kernel-launch overhead dominates batched decoding of short
lines, and this removes most of it once a batch shape has been compiled.

Only our settings reach ``generate``: sampling switches and ``repetition_penalty`` are set
explicitly, so a model folder whose ``generation_config.json`` asks for sampling (Qwen2.5-VL's
does) is still decoded greedily, and two models are compared under the same decoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from vlm_retain.data.images import BadImage
from vlm_retain.evaluate.generate.base import (
    Backend,
    GenerationConfig,
    Request,
    Result,
    error_result,
    image_size,
    load_image,
)
from vlm_retain.evaluate.generate.lengths import image_tokens
from vlm_retain.models.loading import LoadedModel


def stop_token_ids(loaded: LoadedModel) -> list[int]:
    """Ids that end an answer: the family's stop tokens that the vocabulary has, then EOS."""
    tokenizer = loaded.tokenizer
    unk = getattr(tokenizer, "unk_token_id", None)
    ids: list[int] = []
    for token in loaded.family.stop_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != unk and token_id not in ids:
            ids.append(token_id)
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int) and eos not in ids:
        ids.append(eos)
    return ids


class HFBackend(Backend):
    """Generate with a :class:`~vlm_retain.models.loading.LoadedModel` (base or with adapter).

    ``system`` adds a system turn to every prompt (not PaliGemma); ``stop_ids`` replaces the
    family's stop tokens (for checkpoints with unusual ones, and for tests). Results come out in
    batch order (sorted by estimated length when ``config.sort_by_length``); each carries its id.
    """

    name = "hf"

    def __init__(
        self,
        loaded: LoadedModel,
        config: GenerationConfig | None = None,
        *,
        system: str | None = None,
        stop_ids: Sequence[int] | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = config or GenerationConfig()
        self.system = system
        self.stop_ids = list(stop_ids) if stop_ids is not None else stop_token_ids(loaded)
        self._prompt_tokens: dict[str, int] = {}
        self._generation_config = self._hf_generation_config()

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, **self.loaded.describe()}

    # ordering -----------------------------------------------------------------------------
    def estimate_length(self, request: Request) -> int:
        """Estimated input tokens of ``request``: image tokens + prompt tokens (header only)."""
        if request.prompt not in self._prompt_tokens:
            ids = self.loaded.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
            self._prompt_tokens[request.prompt] = len(ids)
        size = image_size(request.image)
        family, processor = self.loaded.family, self.loaded.processor
        return self._prompt_tokens[request.prompt] + image_tokens(family, processor, size)

    def order(self, requests: Sequence[Request]) -> list[Request]:
        """Requests in the order they will be batched: by estimated length (stable) or as given."""
        if not self.config.sort_by_length:
            return list(requests)
        keyed = sorted(
            enumerate(requests), key=lambda pair: (self.estimate_length(pair[1]), pair[0])
        )
        return [request for _, request in keyed]

    # generation ---------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request]) -> Iterator[Result]:
        """Results batch by batch; a batch that runs out of accelerator memory is retried at
        half the size (down to one line), and that size is kept for the rest."""
        from vlm_retain.models.loading import halve_after_oom, is_oom

        pending, size, start = self.order(requests), self.config.batch_size, 0
        while start < len(pending):
            chunk = pending[start : start + size]
            try:
                results = list(self._run_batch(chunk))
            except Exception as exc:
                if not is_oom(exc) or size == 1:
                    raise
                size = halve_after_oom(size, "lines", tried=len(chunk))
                continue
            yield from results
            start += len(chunk)

    def _run_batch(self, chunk: list[Request]) -> Iterator[Result]:
        ready: list[tuple[Request, Any]] = []
        for request in chunk:
            try:
                ready.append((request, load_image(request.image)))
            except BadImage as exc:
                yield error_result(request, exc)
        if not ready:
            return
        batch, ready, failed = self._encode_isolating(ready)
        yield from failed
        if batch is None:
            return
        texts, counts = self._generate_batch(batch)
        for (request, _), text, count in zip(ready, texts, counts, strict=True):
            yield Result(id=request.id, text=text, n_tokens=count)

    def _encode(self, ready: list[tuple[Request, Any]]) -> dict[str, Any]:
        from vlm_retain.models.encoding import encode

        images = [image for _, image in ready]
        prompts = [request.prompt for request, _ in ready]
        return encode(self.loaded, images, prompts, padding_side="left", system=self.system)

    def _encode_isolating(
        self, ready: list[tuple[Request, Any]]
    ) -> tuple[dict[str, Any] | None, list[tuple[Request, Any]], list[Result]]:
        """Encode the batch; if the processor refuses it, find the requests it refuses one by
        one (an image with an impossible aspect ratio, say), report those and encode the rest.

        Any exception from the processor counts as that image's fault: it is a per-image
        problem we must survive, and what it was is kept in the result's ``error``.
        """
        try:
            return self._encode(ready), ready, []
        except Exception as exc:  # reported per request, see docstring
            if len(ready) == 1:
                return None, [], [error_result(ready[0][0], exc)]
        good: list[tuple[Request, Any]] = []
        failed: list[Result] = []
        for item in ready:
            try:
                self._encode([item])
                good.append(item)
            except Exception as exc:
                failed.append(error_result(item[0], exc))
        if not good:
            return None, [], failed
        return self._encode(good), good, failed

    def _hf_generation_config(self) -> Any:
        from transformers import GenerationConfig as HFGenerationConfig

        c = self.config
        tokenizer = self.loaded.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        sampling: dict[str, Any] = {}
        if c.do_sample:
            sampling = {
                key: value
                for key, value in (
                    ("temperature", c.temperature),
                    ("top_p", c.top_p),
                    ("top_k", c.top_k),
                )
                if value is not None
            }
        return HFGenerationConfig(
            max_new_tokens=c.max_new_tokens,
            min_new_tokens=c.min_new_tokens or None,
            do_sample=c.do_sample,
            num_beams=1,
            repetition_penalty=1.0,
            eos_token_id=list(self.stop_ids),
            pad_token_id=pad,
            cache_implementation="static" if c.kv_cache == "static" else None,
            **sampling,
        )

    def _generate_batch(self, batch: dict[str, Any]) -> tuple[list[str], list[int]]:
        """Run ``generate`` on one encoded batch; decode only the new tokens."""
        import torch

        from vlm_retain.models.loading import batch_to

        inputs = batch_to(batch, self.loaded)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.loaded.model.generate(**inputs, generation_config=self._generation_config)
        new = output[:, prompt_len:].tolist()
        stops = set(self.stop_ids)
        kept: list[list[int]] = []
        counts: list[int] = []
        for row in new:
            end = next((i for i, token in enumerate(row) if token in stops), None)
            counts.append(len(row) if end is None else end + 1)
            kept.append(row if end is None else row[:end])
        texts = self.loaded.tokenizer.batch_decode(kept, skip_special_tokens=True)
        return [text.strip() for text in texts], counts
