"""Generation with vLLM's offline engine: the same interface, for large runs on a GPU.

Why an optional backend: vLLM schedules requests continuously and pages the KV cache, which
beats padded HF batches by a wide margin on long evaluation runs, but it is a large, GPU-only
install. It is imported lazily, only when this backend is built; without it the error says
which extra to install.

How a request becomes a vLLM prompt (the documented offline multimodal API,
``LLM.generate({"prompt": text, "multi_modal_data": {"image": pil_image}}, SamplingParams)``):
the text is the model's own chat template rendered by its processor with one image placeholder,
which vLLM expands to the image's tokens; PaliGemma has no chat template, so its prompt is the
plain instruction (vLLM adds the image tokens and BOS). Decoding is greedy
(``temperature=0``), stops at the family's stop tokens, and a PEFT adapter is applied through
vLLM's LoRA support (``enable_lora`` + a ``LoRARequest``).

This module is not run by the test suite (no GPU, no vLLM there): a fake ``vllm`` module checks
the wiring. Per-request failures: images are decoded before submission (a bad image becomes an
error result); if vLLM rejects a chunk, its requests are retried one at a time so only the
offending ones fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vlm_retain.data.images import BadImage
from vlm_retain.errors import InputError
from vlm_retain.evaluate.generate.base import (
    Backend,
    GenerationConfig,
    Request,
    Result,
    batched,
    error_result,
    load_image,
)

MISSING_VLLM = "the vllm backend needs the vllm extra: pip install 'vlm-retain[vllm]'"


def import_vllm() -> Any:
    """The ``vllm`` module, or the :class:`InputError` that says how to install it."""
    try:
        import vllm
    except ImportError:
        raise InputError(MISSING_VLLM) from None
    return vllm


class VLLMBackend(Backend):
    """Generate with ``vllm.LLM`` from a local model folder (or cached hub id) and an adapter.

    ``chunk_size`` requests are handed to vLLM at a time (it batches inside a chunk as it likes);
    results are yielded after each chunk, so callers can write them out incrementally. Extra
    keyword arguments go to ``vllm.LLM`` (``gpu_memory_utilization``, ``tensor_parallel_size``,
    ``max_model_len``...).
    """

    name = "vllm"

    def __init__(
        self,
        model: str | Path,
        config: GenerationConfig | None = None,
        *,
        adapter: str | Path | None = None,
        system: str | None = None,
        chunk_size: int = 512,
        dtype: str = "auto",
        **engine_options: Any,
    ) -> None:
        vllm = import_vllm()
        from vlm_retain.models.loading import check_weights, resolve_model_path
        from vlm_retain.models.processor import load_processor
        from vlm_retain.models.registry import detect_family

        self.config = config or GenerationConfig()
        self.system = system
        self.chunk_size = max(chunk_size, self.config.batch_size)
        self.folder = resolve_model_path(model)
        self.source = str(model)
        self.family = detect_family(self.folder)
        check_weights(self.folder)  # safetensors only, as for the HF backend
        self.processor = load_processor(self.folder, self.family)
        self.adapter = Path(adapter) if adapter else None
        self.stop_ids = self._stop_ids()
        options: dict[str, Any] = {
            "model": str(self.folder),
            "tokenizer": str(self.folder),
            "dtype": dtype,
            "trust_remote_code": False,
            "limit_mm_per_prompt": {"image": 1},
            "max_num_seqs": max(self.config.batch_size, 1),
            "seed": 0,
        }
        self._lora_request = None
        if self.adapter is not None:
            rank = _adapter_rank(self.adapter)
            options.update(enable_lora=True, max_lora_rank=_supported_rank(rank), max_loras=1)
            from vllm.lora.request import LoRARequest

            self._lora_request = LoRARequest("adapter", 1, str(self.adapter))
        options.update(engine_options)
        self.llm = vllm.LLM(**options)
        self.sampling = vllm.SamplingParams(**self._sampling_options())

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "path": self.source,
            "adapter": str(self.adapter) if self.adapter else None,
            "family": self.family.name,
        }

    def _stop_ids(self) -> list[int]:
        tokenizer = self.processor.tokenizer
        ids = [tokenizer.convert_tokens_to_ids(t) for t in self.family.stop_tokens]
        unk = getattr(tokenizer, "unk_token_id", None)
        return [i for i in dict.fromkeys(ids) if isinstance(i, int) and i != unk]

    def _sampling_options(self) -> dict[str, Any]:
        c = self.config
        options: dict[str, Any] = {
            "max_tokens": c.max_new_tokens,
            "min_tokens": c.min_new_tokens,
            "stop_token_ids": self.stop_ids,
            "skip_special_tokens": True,
            "temperature": 0.0,
        }
        if c.do_sample:
            options["temperature"] = c.temperature if c.temperature is not None else 1.0
            if c.top_p is not None:
                options["top_p"] = c.top_p
            if c.top_k is not None:
                options["top_k"] = c.top_k
        return options

    def prompt_text(self, prompt: str, *, image: bool) -> str:
        """The text vLLM sees: the chat template with one image placeholder, or, for
        PaliGemma, the bare instruction."""
        if not self.family.chat.uses_chat_template:
            return prompt
        from vlm_retain.models.encoding import render_prompt

        view = SimpleNamespace(processor=self.processor, family=self.family)
        return render_prompt(view, prompt, image=image, system=self.system)

    def generate(self, requests: Sequence[Request]) -> Iterator[Result]:
        for chunk in batched(list(requests), self.chunk_size):
            prepared: list[tuple[Request, dict[str, Any]]] = []
            for request in chunk:
                try:
                    image = load_image(request.image)
                except BadImage as exc:
                    yield error_result(request, exc)
                    continue
                item: dict[str, Any] = {
                    "prompt": self.prompt_text(request.prompt, image=image is not None)
                }
                if image is not None:
                    item["multi_modal_data"] = {"image": image}
                prepared.append((request, item))
            yield from self._run(prepared)

    def _run(self, prepared: list[tuple[Request, dict[str, Any]]]) -> Iterator[Result]:
        if not prepared:
            return
        try:
            outputs = self._call([item for _, item in prepared])
        except Exception as exc:  # isolate the request vLLM refuses
            if len(prepared) == 1:
                yield error_result(prepared[0][0], exc)
                return
            for one in prepared:
                yield from self._run([one])
            return
        for (request, _), output in zip(prepared, outputs, strict=True):
            completion = output.outputs[0]
            yield Result(
                id=request.id,
                text=completion.text.strip(),
                n_tokens=len(completion.token_ids),
            )

    def _call(self, items: list[dict[str, Any]]) -> list[Any]:
        kwargs: dict[str, Any] = {"use_tqdm": False}
        if self._lora_request is not None:
            kwargs["lora_request"] = self._lora_request
        return list(self.llm.generate(items, self.sampling, **kwargs))


def _adapter_rank(adapter: Path) -> int:
    """The LoRA rank in ``adapter_config.json`` (vLLM must be told the largest rank up front)."""
    config_file = adapter / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            "not a PEFT adapter folder (no adapter_config.json)", path=adapter
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable adapter config ({exc})", path=config_file) from None
    return int(config.get("r", 16))


def _supported_rank(rank: int) -> int:
    """vLLM accepts only some ``max_lora_rank`` values (powers of two from 8): round up."""
    value = 8
    while value < rank:
        value *= 2
    return value
