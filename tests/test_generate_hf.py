"""HFBackend: batched greedy decoding equals one-at-a-time, on tiny models of four families."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from vlm_retain.evaluate.generate.base import GenerationConfig, Request

FAMILIES = ("qwen2_5_vl", "idefics3", "paligemma", "internvl")
PROMPTS = ("Transcribe the text.", "Read this line exactly, please, every letter of it.")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("gen")
    return {f: load_model(build_tiny(f, root / f, size="xs"), device="cpu") for f in FAMILIES}


def line(width: int, height: int, text: str) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((4, 4), text, fill="black")
    return image


def requests(n: int = 7) -> list[Request]:
    return [
        Request(f"r{i}", line(112 + 56 * (i % 4), 28 * (1 + i % 2), f"line {i}"), PROMPTS[i % 2])
        for i in range(n)
    ]


def run(loaded, reqs, **config):
    from vlm_retain.evaluate.generate.hf import HFBackend

    config.setdefault("max_new_tokens", 8)
    return {r.id: r for r in HFBackend(loaded, GenerationConfig(**config)).generate(reqs)}


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_unbatched(models, family):
    reqs = requests()
    one = run(models[family], reqs, batch_size=1)
    many = run(models[family], reqs, batch_size=4)
    assert set(one) == set(many) == {r.id for r in reqs}
    for key in one:
        assert one[key].ok and many[key].ok
        assert one[key].text == many[key].text, key
        assert one[key].n_tokens == many[key].n_tokens
    assert any(r.text for r in one.values())


def test_length_sorting_keeps_ids(models):
    from vlm_retain.evaluate.generate.hf import HFBackend

    reqs = requests(6)
    backend = HFBackend(models["qwen2_5_vl"], GenerationConfig(batch_size=3, max_new_tokens=6))
    order = backend.order(reqs)
    lengths = [backend.estimate_length(r) for r in order]
    assert lengths == sorted(lengths) and {r.id for r in order} == {r.id for r in reqs}
    assert [r.id for r in order] != [r.id for r in reqs]  # the test really reorders
    results = list(backend.generate(reqs))
    assert [r.id for r in results] == [r.id for r in order]
    unsorted = run(models["qwen2_5_vl"], reqs, batch_size=3, max_new_tokens=6, sort_by_length=False)
    assert {r.id: r.text for r in results} == {k: v.text for k, v in unsorted.items()}


def test_estimate_matches_processor_for_qwen(models):
    from vlm_retain.evaluate.generate.lengths import image_tokens

    loaded = models["qwen2_5_vl"]
    for width, height in ((224, 56), (448, 64), (60, 20), (2000, 56)):
        out = loaded.processor.image_processor(images=[line(width, height, "x")])
        grid = out["image_grid_thw"][0]
        real = int(grid.prod()) // 4
        assert image_tokens(loaded.family, loaded.processor, (width, height)) == real


def test_estimate_matches_processor_for_internvl(models):
    """Tiles (aspect-matched grid + thumbnail) x tokens per tile + <img></img>, exactly."""
    from vlm_retain.evaluate.generate.lengths import image_tokens

    loaded = models["internvl"]
    context = loaded.processor.image_token_id
    sizes = ((224, 56), (448, 64), (60, 20), (2000, 56), (56, 224), (64, 64), (130, 64))
    for width, height in sizes:
        batch = loaded.processor(
            text=[loaded.processor.image_token], images=[line(width, height, "x")]
        )
        ids = list(batch["input_ids"][0])
        real = ids.count(context) + 2  # + <img> and </img>
        assert image_tokens(loaded.family, loaded.processor, (width, height)) == real, (
            width,
            height,
        )
    # defaults of a real checkpoint (448-px tiles, 256 tokens each, 1..12 tiles), no processor
    assert image_tokens(loaded.family, None, (448, 448)) == 256 + 2
    assert image_tokens(loaded.family, None, (1792, 448)) == 256 * 5 + 2


def test_stops_at_eos(models):
    """A model that always prefers the end-of-turn token stops after one token, empty text."""
    loaded = models["qwen2_5_vl"]
    eot = loaded.tokenizer.convert_tokens_to_ids(loaded.family.chat.end_of_turn)

    def prefer_eot(_module, _inputs, output):
        output[..., eot] += 1e4
        return output

    handle = loaded.model.lm_head.register_forward_hook(prefer_eot)
    try:
        results = run(loaded, requests(3), batch_size=3, max_new_tokens=8)
    finally:
        handle.remove()
    assert all(r.text == "" and r.n_tokens == 1 for r in results.values())


def test_stops_mid_answer_and_decodes_only_before_the_stop(models):
    from vlm_retain.evaluate.generate.hf import HFBackend

    loaded = models["qwen2_5_vl"]
    reqs = requests(1)
    free = HFBackend(loaded, GenerationConfig(max_new_tokens=8, min_new_tokens=8))
    # find the generated tokens, then declare the 4th one a stop token
    from vlm_retain.models.encoding import encode
    from vlm_retain.models.loading import batch_to

    batch = batch_to(encode(loaded, [reqs[0].image], [reqs[0].prompt]), loaded)
    out = loaded.model.generate(**batch, generation_config=free._generation_config)
    new = out[0, batch["input_ids"].shape[1] :].tolist()
    k = next(i for i in range(1, len(new)) if new[i] not in new[:i])
    backend = HFBackend(loaded, GenerationConfig(max_new_tokens=8), stop_ids=[new[k]])
    (result,) = backend.generate(reqs)
    assert result.n_tokens == k + 1
    assert result.text == loaded.tokenizer.decode(new[:k], skip_special_tokens=True).strip()


def test_bad_images_become_errors_and_the_rest_generate(models, tmp_path):
    buffer = io.BytesIO()
    line(224, 56, "cut").save(buffer, format="PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buffer.getvalue()[:200])
    good = requests(4)
    bad = [
        Request("lazy-truncated", Image.open(truncated), PROMPTS[0]),
        Request("missing-file", tmp_path / "nope.png", PROMPTS[0]),
        Request("aspect", line(28 * 210, 28, "too long"), PROMPTS[0]),  # Qwen refuses >= 200
    ]
    mixed = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3]]
    results = run(models["qwen2_5_vl"], mixed, batch_size=4)
    assert set(results) == {r.id for r in mixed}
    assert "truncated" in results["lazy-truncated"].error
    assert results["missing-file"].error == "image missing"
    assert results["aspect"].error and not results["aspect"].text
    reference = run(models["qwen2_5_vl"], good, batch_size=1)
    for request in good:
        assert results[request.id].ok and results[request.id].text == reference[request.id].text


def test_model_sampling_defaults_do_not_leak_into_greedy(models):
    loaded = models["idefics3"]
    reqs = requests(3)
    before = run(loaded, reqs, batch_size=3)
    gen = loaded.model.generation_config
    saved = (gen.do_sample, gen.temperature, gen.repetition_penalty)
    gen.do_sample, gen.temperature, gen.repetition_penalty = True, 5.0, 3.0
    try:
        after = run(loaded, reqs, batch_size=3)
    finally:
        gen.do_sample, gen.temperature, gen.repetition_penalty = saved
    assert {k: v.text for k, v in before.items()} == {k: v.text for k, v in after.items()}


def test_sampling_with_forced_length(models):
    results = run(
        models["paligemma"],
        requests(2),
        batch_size=1,
        do_sample=True,
        temperature=0.95,
        top_p=0.7,
        top_k=50,
        max_new_tokens=6,
        min_new_tokens=6,
    )
    assert all(r.ok and r.n_tokens == 6 for r in results.values())


def test_config_is_checked():
    from vlm_retain.errors import InputError

    with pytest.raises(InputError, match="batch size"):
        GenerationConfig(batch_size=0)
    with pytest.raises(InputError, match="min new tokens"):
        GenerationConfig(max_new_tokens=4, min_new_tokens=5)
    with pytest.raises(InputError, match="kv_cache"):
        GenerationConfig(kv_cache="paged")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
def test_static_kv_cache_gives_the_same_tokens(models, family):
    """A preallocated cache changes where keys and values live, not what is generated."""
    from vlm_retain.evaluate.generate.hf import HFBackend

    reqs = requests()
    dynamic = run(models[family], reqs, batch_size=4)
    static = run(models[family], reqs, batch_size=4, kv_cache="static")
    backend = HFBackend(models[family], GenerationConfig(kv_cache="static"))
    assert backend._generation_config.cache_implementation == "static"
    assert {k: (r.text, r.n_tokens) for k, r in static.items()} == {
        k: (r.text, r.n_tokens) for k, r in dynamic.items()
    }


def test_a_batch_out_of_memory_is_retried_at_half_the_size(models, monkeypatch):
    """The accelerator's out-of-memory error is simulated (a CPU cannot run out that way):
    batches over two lines fail: the first (all 7 lines) -> 4 -> 2, and 2 is kept."""
    import torch

    from vlm_retain.evaluate.generate.hf import HFBackend

    loaded = models["qwen2_5_vl"]
    reqs = requests()
    expected = run(loaded, reqs, batch_size=1)
    real = HFBackend._generate_batch
    sizes: list[int] = []

    def limited(self, batch):
        sizes.append(batch["input_ids"].shape[0])
        if batch["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(self, batch)

    monkeypatch.setattr(HFBackend, "_generate_batch", limited)
    with pytest.warns(UserWarning, match="out of memory at 7 lines"):
        got = run(loaded, reqs, batch_size=8)
    assert sizes[:3] == [7, 4, 2] and max(sizes[3:]) == 2
    assert {k: r.text for k, r in got.items()} == {k: r.text for k, r in expected.items()}
    monkeypatch.setattr(HFBackend, "_generate_batch", lambda self, batch: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # anything else is not retried
        run(loaded, reqs, batch_size=8)
