"""encode(): the supervised span is exactly the answer + end-of-turn token, for every family."""

from __future__ import annotations

import pytest

from tests.test_models_tiny import TINY, line_image
from vlm_retain.errors import InputError

ANSWERS = ["Вѣра і Ѳома", "ok", "مرحبا بالعالم"]
PROMPTS = ["Transcribe the text.", "What is it?", "Read this line, please, carefully."]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from vlm_retain.models.loading import load_model
    from vlm_retain.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("enc")
    return {name: load_model(build_tiny(name, root / name, size="xs")) for name in TINY}


def _images():
    return [line_image(), line_image(112, 28), line_image(336, 56)]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", TINY)
def test_supervised_span_is_answer_plus_end_token(loaded, name, side):
    from vlm_retain.models.encoding import encode

    lm = loaded[name]
    batch = encode(lm, _images(), PROMPTS, ANSWERS, padding_side=side)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert labels.shape == ids.shape
    end = lm.family.chat.end_of_turn
    for i, answer in enumerate(ANSWERS):
        span = labels[i][labels[i] != -100]
        assert lm.tokenizer.decode(span) == lm.family.chat.answer_prefix + answer + end
        # the supervised positions are contiguous real tokens
        where = (labels[i] != -100).nonzero().flatten()
        assert (where[-1] - where[0] + 1) == len(where)
        assert mask[i][where].all()
    pad_cols = mask[:, 0] == 0 if side == "left" else mask[:, -1] == 0
    assert pad_cols.any()  # the batch really was padded on that side


@pytest.mark.parametrize("name", TINY)
def test_prompt_only_batch_has_no_labels_and_ends_with_generation_prompt(loaded, name):
    from vlm_retain.models.encoding import encode

    lm = loaded[name]
    batch = encode(lm, _images(), PROMPTS)
    assert "labels" not in batch
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padded: every row ends at the end
    tail = lm.tokenizer.decode(batch["input_ids"][0][-12:])
    assert tail.endswith(lm.family.chat.generation_prompt)


def test_batched_encoding_equals_single(loaded):
    from vlm_retain.models.encoding import encode

    lm = loaded["qwen2_5_vl"]
    batch = encode(lm, _images(), PROMPTS, ANSWERS)
    one = encode(lm, _images()[1:2], PROMPTS[1:2], ANSWERS[1:2])
    row = batch["attention_mask"][1].bool()
    assert batch["input_ids"][1][row].tolist() == one["input_ids"][0].tolist()
    assert batch["labels"][1][row].tolist() == one["labels"][0].tolist()


def test_text_only_and_system_prompt_qwen(loaded):
    from vlm_retain.models.encoding import encode, render_prompt

    lm = loaded["qwen2_5_vl"]
    batch = encode(
        lm, [None, line_image()], ["Say hi.", "Read."], ["hi", "Вѣра"], system="Be brief."
    )
    assert lm.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100]) == "hi<|im_end|>"
    assert batch["image_grid_thw"].shape[0] == 1
    assert "Be brief." in lm.tokenizer.decode(batch["input_ids"][0])
    assert "You are a helpful assistant." in render_prompt(lm, "x", image=False)


def test_label_count_does_not_depend_on_the_prompt(loaded):
    """Only the answer and the end token are supervised, whatever the prompt's length."""
    from vlm_retain.models.encoding import encode

    lm = loaded["qwen2_5_vl"]
    a = encode(lm, _images()[:1], ["Read."], ["ok"])
    b = encode(lm, _images()[:1], ["Read the whole line now."], ["ok"])
    n = len(lm.tokenizer("ok", add_special_tokens=False)["input_ids"]) + 1
    assert (a["labels"] != -100).sum() == (b["labels"] != -100).sum() == n


def test_bad_inputs(loaded):
    from vlm_retain.models.encoding import encode

    with pytest.raises(InputError, match="one of each"):
        encode(loaded["qwen2_5_vl"], [None], ["a", "b"])
    with pytest.raises(InputError, match="padding_side"):
        encode(loaded["qwen2_5_vl"], [None], ["a"], padding_side="middle")
    with pytest.raises(InputError, match="needs an image"):
        encode(loaded["paligemma"], [None], ["a"])
    with pytest.raises(InputError, match="system"):
        encode(loaded["paligemma"], [line_image()], ["a"], system="x")
