"""make_backend, the vLLM backend's wiring (through a fake vllm) and its missing-extra message."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import ClassVar

import pytest
from PIL import Image

from vlm_retain.errors import InputError
from vlm_retain.evaluate.generate import GenerationConfig, Request, make_backend


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    from vlm_retain.models.tiny import build_tiny

    return build_tiny("qwen2_5_vl", tmp_path_factory.mktemp("be") / "qwen", size="xs")


def test_vllm_missing_says_which_extra(monkeypatch, qwen_folder):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(InputError) as info:
        make_backend("vllm", model=qwen_folder)
    assert str(info.value) == (
        "the vllm backend needs the vllm extra: pip install 'vlm-retain[vllm]'"
    )


@dataclass
class _Completion:
    text: str
    token_ids: list[int]


class _FakeLLM:
    instances: ClassVar[list[_FakeLLM]] = []

    def __init__(self, **options):
        self.options = options
        self.calls: list[tuple[list, object, dict]] = []
        _FakeLLM.instances.append(self)

    def generate(self, items, sampling, **kwargs):
        self.calls.append((items, sampling, kwargs))
        if any(item["prompt"].startswith("FAIL") for item in items):
            raise ValueError("refused")
        return [
            types.SimpleNamespace(outputs=[_Completion(f" {i['prompt'][-5:]} ", [1, 2])])
            for i in items
        ]


class _FakeParams:
    def __init__(self, **options):
        self.options = options


def test_vllm_wiring_with_a_fake_engine(monkeypatch, qwen_folder, tmp_path):
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = _FakeLLM, _FakeParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    config = GenerationConfig(batch_size=4, max_new_tokens=9)
    backend = make_backend("vllm", model=qwen_folder, config=config, gpu_memory_utilization=0.5)
    llm = _FakeLLM.instances[-1]
    assert llm.options["model"] == str(qwen_folder)
    assert llm.options["limit_mm_per_prompt"] == {"image": 1}
    assert (
        llm.options["gpu_memory_utilization"] == 0.5 and llm.options["trust_remote_code"] is False
    )
    params = backend.sampling.options
    assert params["temperature"] == 0.0 and params["max_tokens"] == 9
    assert params["stop_token_ids"] and params["skip_special_tokens"] is True

    image = Image.new("RGB", (112, 28), "white")
    reqs = [
        Request("a", image, "Read it."),
        Request("b", tmp_path / "missing.png", "Read it."),
        Request("c", image, "FAIL here"),
    ]
    backend.prompt_text = lambda p, image: p if p.startswith("FAIL") else "<chat>" + p  # type: ignore[method-assign]
    results = {r.id: r for r in backend.generate(reqs)}
    assert results["a"].text == "d it." and results["a"].n_tokens == 2
    assert results["b"].error == "image missing"
    assert results["c"].error and "refused" in results["c"].error
    items = llm.calls[0][0]
    assert items[0]["multi_modal_data"]["image"].size == (112, 28)


def test_vllm_prompt_is_the_chat_template(monkeypatch, qwen_folder):
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = _FakeLLM, _FakeParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    backend = make_backend("vllm", model=qwen_folder)
    text = backend.prompt_text("Read it.", image=True)
    assert text.count("<|image_pad|>") == 1 and text.endswith("<|im_start|>assistant\n")


def test_make_backend_errors():
    with pytest.raises(InputError, match="unknown backend"):
        make_backend("onnx", model="x")
    with pytest.raises(InputError, match="needs a model"):
        make_backend("hf")
    with pytest.raises(InputError, match="needs a language"):
        make_backend("tesseract")


def test_make_backend_hf(qwen_folder):
    backend = make_backend("hf", model=qwen_folder, config=GenerationConfig(max_new_tokens=3))
    assert backend.name == "hf" and backend.describe()["family"] == "qwen2_5_vl"
    (result,) = backend.generate([Request("x", Image.new("RGB", (56, 28), "white"), "Read.")])
    assert result.ok and result.n_tokens <= 3
