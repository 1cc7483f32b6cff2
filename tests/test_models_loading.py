"""load_model: offline resolution, safetensors only, adapters, and the bad inputs."""

from __future__ import annotations

import json
import shutil

import pytest

from vlm_retain.errors import InputError


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from vlm_retain.models.tiny import build_tiny

    return build_tiny("qwen2_5_vl", tmp_path_factory.mktemp("base") / "model", size="xs")


def _make_adapter(base, out):
    """A real PEFT LoRA adapter on a tiny model saved to ``out``, with its in-memory logits."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tests.test_models_tiny import line_image
    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import load_model

    loaded = load_model(base)
    regex = loaded.family.lora_regex("llm")
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=regex))
    with torch.no_grad():  # LoRA B starts at zero: give it weights so the adapter matters
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    peft_model.eval()
    batch = encode(loaded, [line_image()], ["Read."], ["Вѣра"])
    with torch.no_grad():
        logits = peft_model(**batch).logits
    peft_model.save_pretrained(str(out))
    return out, batch, logits


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory):
    return _make_adapter(base, tmp_path_factory.mktemp("adapter") / "lora")


#: Adapter loading is checked on three families (issue 5): different module trees and processors.
ADAPTER_FAMILIES = ("qwen2_5_vl", "idefics3", "paligemma")


@pytest.fixture(scope="module", params=ADAPTER_FAMILIES)
def family_adapter(request, tmp_path_factory):
    """(base folder, adapter folder, batch, in-memory logits) for each family (tiny xs)."""
    if request.param == "qwen2_5_vl":  # reuse the module's Qwen model and adapter
        return (request.getfixturevalue("base"), *request.getfixturevalue("adapter"))
    from vlm_retain.models.tiny import build_tiny

    root = tmp_path_factory.mktemp(request.param)
    folder = build_tiny(request.param, root / "model", size="xs")
    return (folder, *_make_adapter(folder, root / "lora"))


def test_adapter_logits_match_in_memory_peft(family_adapter):
    import torch

    from vlm_retain.models.loading import load_model

    base, folder, batch, logits = family_adapter
    loaded = load_model(base, adapter=folder)
    assert loaded.adapter == folder
    assert type(loaded.model).__name__ == "PeftModel"
    with torch.no_grad():
        again = loaded.model(**batch).logits
    assert torch.equal(again, logits)
    plain = load_model(base)
    with torch.no_grad():
        assert not torch.allclose(plain.model(**batch).logits, logits)
    assert loaded.describe()["adapter"] == str(folder)


def test_adapter_for_another_base_is_refused(family_adapter, tmp_path):
    from vlm_retain.models.loading import load_model

    base, adapter_folder, _, _ = family_adapter
    folder = tmp_path / "other"
    shutil.copytree(adapter_folder, folder)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-VL-7B-Instruct"
    config_file.write_text(json.dumps(config))
    with pytest.raises(InputError) as err:
        load_model(base, adapter=folder)
    message = str(err.value)
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in message and str(base) in message
    assert "adapter_config.json" in message and "--ignore-adapter-base" in message
    assert "\n" not in message
    assert load_model(base, adapter=folder, strict_adapter_base=False).adapter == folder


def _with_base(adapter_folder, dest, base_name):
    shutil.copytree(adapter_folder, dest)
    config_file = dest / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base_name)
    config_file.write_text(json.dumps(config))
    return dest


def test_adapter_base_copy_and_relative_path_accepted(base, adapter, tmp_path, monkeypatch):
    """A byte-identical copy of the recorded base is the same base; a relative recorded path is
    read from the adapter folder, whatever the working directory."""
    import os

    from vlm_retain.models.loading import load_model

    copy = tmp_path / "renamed-base"
    shutil.copytree(base, copy)
    recorded_original = _with_base(adapter[0], tmp_path / "a1", base)
    assert load_model(copy, adapter=recorded_original).adapter == recorded_original
    recorded_copy = _with_base(adapter[0], tmp_path / "a2", copy)
    assert load_model(base, adapter=recorded_copy).adapter == recorded_copy

    run = tmp_path / "run"
    relative = _with_base(adapter[0], run / "adapter", os.path.relpath(base, run / "adapter"))
    monkeypatch.chdir(tmp_path)
    assert load_model(base, adapter=relative).adapter == relative
    assert load_model(copy, adapter=relative).adapter == relative  # and it is a copy of copy


def test_adapter_base_that_only_looks_alike_is_refused(base, adapter, tmp_path):
    """Same architecture and config, other weights (another seed): not a copy of the base."""
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    other = build_tiny("qwen2_5_vl", tmp_path / "seed1", size="xs", seed=1)
    assert json.loads((other / "config.json").read_text()) == json.loads(
        (base / "config.json").read_text()
    )
    with pytest.raises(InputError, match="adapter was trained on") as err:
        load_model(other, adapter=adapter[0])
    assert "--ignore-adapter-base" in str(err.value)
    config_changed = tmp_path / "changed"
    shutil.copytree(base, config_changed)
    config = json.loads((config_changed / "config.json").read_text())
    config["note"] = "edited"
    (config_changed / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="adapter was trained on"):
        load_model(config_changed, adapter=adapter[0])


def test_model_info_ignore_adapter_base_flag(run_cli, base, adapter, tmp_path):
    from vlm_retain.models.tiny import build_tiny

    other = build_tiny("qwen2_5_vl", tmp_path / "seed1", size="xs", seed=1)
    refused = run_cli("model", "info", other, "--adapter", adapter[0])
    assert refused.code == 2 and "adapter was trained on" in refused.err
    assert "--ignore-adapter-base" in refused.err and "Traceback" not in refused.err
    accepted = run_cli("model", "info", other, "--adapter", adapter[0], "--ignore-adapter-base")
    assert accepted.code == 0, accepted.err
    assert str(adapter[0]) in accepted.out.replace("\n", "")


def test_adapter_shape_mismatch_is_refused(adapter, tmp_path):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    bigger = build_tiny("qwen2_5_vl", tmp_path / "bigger", size="s")
    with pytest.raises(InputError, match="does not fit"):
        load_model(bigger, adapter=adapter[0], strict_adapter_base=False)
    with pytest.raises(InputError, match="adapter was trained on"):
        load_model(bigger, adapter=adapter[0])


def test_not_an_adapter_folder(base, tmp_path):
    from vlm_retain.models.loading import load_model

    with pytest.raises(InputError, match=r"adapter_config\.json"):
        load_model(base, adapter=tmp_path)


def test_pickle_only_refused_unless_allowed(base, tmp_path):
    import torch
    from safetensors.torch import load_file

    from vlm_retain.models.loading import load_model

    folder = tmp_path / "pickled"
    shutil.copytree(base, folder)
    state = load_file(str(folder / "model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError) as err:
        load_model(folder)
    assert "pytorch_model.bin" in str(err.value) and str(folder) in str(err.value)
    loaded = load_model(folder, allow_pickle=True)
    reference = load_model(base)
    for (name, a), (_, b) in zip(
        loaded.model.state_dict().items(), reference.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_folder_without_weights_or_processor(base, tmp_path):
    from vlm_retain.models.loading import load_model

    no_weights = tmp_path / "no_weights"
    shutil.copytree(base, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no model weights") as err:
        load_model(no_weights)
    assert str(no_weights) in str(err.value)

    no_proc = tmp_path / "no_proc"
    shutil.copytree(base, no_proc)
    (no_proc / "processor_config.json").unlink()
    with pytest.raises(InputError, match="no processor files") as err:
        load_model(no_proc)
    assert str(no_proc) in str(err.value)


def test_unsupported_family_lists_supported(base, tmp_path):
    from vlm_retain.models.loading import load_model

    folder = tmp_path / "odd"
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llava"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as err:
        load_model(folder)
    assert "llava" in str(err.value) and "Qwen2.5-VL" in str(err.value)
    assert str(folder) in str(err.value)


def test_missing_model_and_uncached_hub_id(tmp_path, monkeypatch):
    from vlm_retain.models.loading import load_model

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing")
    with pytest.raises(InputError, match="download it beforehand"):
        load_model("nobody/no-such-model")


def test_hub_id_resolved_from_local_cache(base, tmp_path, monkeypatch):
    """A hub-cache layout (models--org--name/snapshots/REV) resolves without network."""
    from huggingface_hub import constants

    from vlm_retain.models.loading import resolve_model_path

    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny--qwen" / "snapshots" / ("a" * 40)
    shutil.copytree(base, snapshot)
    (cache / "models--tiny--qwen" / "refs").mkdir()
    (cache / "models--tiny--qwen" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert resolve_model_path("tiny/qwen").resolve() == snapshot.resolve()


def test_device_dtype_attention_choices():
    import torch

    from vlm_retain.models.loading import choose_attention, choose_device, choose_dtype

    cpu = choose_device("cpu")
    assert choose_dtype("auto", cpu) == torch.float32
    assert choose_dtype("bf16", cpu) == torch.bfloat16
    assert choose_attention("auto", cpu, torch.float32) == "sdpa"
    with pytest.raises(InputError, match="flash_attention_2"):
        choose_attention("flash_attention_2", cpu, torch.bfloat16)
    with pytest.raises(InputError, match="dtype"):
        choose_dtype("int3", cpu)
    with pytest.raises(InputError, match="attention"):
        choose_attention("magic", cpu, torch.float32)


def test_processor_backends(base):
    from vlm_retain.models.processor import (
        image_backend_of,
        load_processor,
        torchvision_available,
    )
    from vlm_retain.models.registry import FAMILIES

    family = FAMILIES["qwen2_5_vl"]
    processor = load_processor(base, family)
    assert image_backend_of(processor) == "pil"
    assert hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")
    auto = load_processor(base, family, backend="auto")
    assert image_backend_of(auto) == ("torchvision" if torchvision_available() else "pil")
    if not torchvision_available():
        with pytest.raises(InputError, match="torchvision"):
            load_processor(base, family, backend="torchvision")


def test_auto_processor_registration_returns_a_processor(base, tmp_path):
    """A folder naming the image-only class (env.md's recipe) gives a processor, not the
    tokenizer, through plain AutoProcessor once the classes are registered."""
    from transformers import AutoProcessor, ProcessorMixin

    from vlm_retain.models.processor import register_image_only_processors, torchvision_available

    if torchvision_available():
        pytest.skip("registration is only done without torchvision")
    folder = tmp_path / "custom"
    shutil.copytree(base, folder)
    for name in ("processor_config.json", "tokenizer_config.json"):
        data = json.loads((folder / name).read_text())
        data["processor_class"] = "ImageOnlyQwen2_5_VLProcessor"
        (folder / name).write_text(json.dumps(data))
    register_image_only_processors()
    processor = AutoProcessor.from_pretrained(str(folder))
    assert isinstance(processor, ProcessorMixin)
    assert type(processor).__name__ == "ImageOnlyQwen2_5_VLProcessor"


@pytest.fixture(scope="module")
def internvl(tmp_path_factory):
    from vlm_retain.models.tiny import build_tiny

    return build_tiny("internvl", tmp_path_factory.mktemp("ivl") / "model", size="xs")


def test_internvl_hub_layout_loads_without_torchvision(internvl, tmp_path):
    """An OpenGVLab -hf style folder: a video processor config beside the rest and a
    Qwen2Tokenizer class name. load_processor gives the image-only processor (PIL backend), with
    the folder's tokens per tile; plain AutoProcessor does too for a folder naming the image-only
    class once it is registered (no torchvision)."""
    from transformers import AutoProcessor

    from vlm_retain.models.loading import load_model
    from vlm_retain.models.processor import (
        image_backend_of,
        load_processor,
        register_image_only_processors,
        torchvision_available,
    )
    from vlm_retain.models.registry import FAMILIES

    folder = tmp_path / "hub"
    shutil.copytree(internvl, folder)
    (folder / "video_preprocessor_config.json").write_text(
        json.dumps({"video_processor_type": "InternVLVideoProcessor", "size": {"height": 64}})
    )
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    processor = load_processor(folder, FAMILIES["internvl"])
    assert type(processor).__name__ == "ImageOnlyInternVLProcessor"
    assert image_backend_of(processor) == "pil"
    assert processor.image_seq_length == 16
    assert processor.image_token == "<IMG_CONTEXT>" and processor.start_image_token == "<img>"
    loaded = load_model(folder)
    assert loaded.family.name == "internvl" and loaded.processor.image_seq_length == 16
    if not torchvision_available():  # a folder naming the image-only class, as for Qwen
        for name in ("processor_config.json", "tokenizer_config.json"):
            data = json.loads((folder / name).read_text())
            data["processor_class"] = "ImageOnlyInternVLProcessor"
            (folder / name).write_text(json.dumps(data))
        register_image_only_processors()
        auto = AutoProcessor.from_pretrained(str(folder))
        assert type(auto).__name__ == "ImageOnlyInternVLProcessor"
        assert auto.image_seq_length == 16
