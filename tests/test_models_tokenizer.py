"""The offline multilingual BPE: round trips, own tokens for every letter, specials, templates."""

from __future__ import annotations

import pytest

from vlm_retain.models.tokenizer import CORPUS, build_tokenizer

SAMPLES = [
    "Въ началѣ было Слово: Ѳедоръ, мѵро, міръ, ъ",
    "مرحبا بالعالم",
    "Perché la città è così bella",
    "The quick brown fox 123",
    "漢字 and 🙂 never seen before",
    "",
]


@pytest.fixture(scope="module")
def toks():
    return {f: build_tokenizer(f) for f in ("qwen2_5_vl", "idefics3", "paligemma", "internvl")}


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3", "paligemma", "internvl"])
def test_round_trip(toks, family):
    tok = toks[family]
    for text in SAMPLES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


def test_letters_get_their_own_tokens(toks):
    tok = toks["qwen2_5_vl"]
    for letter in "ѣіѳѵъЯжشعقèòà":
        assert len(tok(letter, add_special_tokens=False)["input_ids"]) == 1, letter
    assert len(tok) == 1000


def test_specials_are_single_tokens(toks):
    for family, names in {
        "qwen2_5_vl": ["<|im_end|>", "<|image_pad|>", "<|vision_start|>"],
        "idefics3": ["<end_of_utterance>", "<image>", "<row_6_col_6>", "<global-img>"],
        "paligemma": ["<bos>", "<eos>", "<image>"],
        "internvl": ["<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
    }.items():
        tok = toks[family]
        for name in names:
            assert len(tok(name, add_special_tokens=False)["input_ids"]) == 1, (family, name)


def test_deterministic_and_vocab_size_configurable(toks):
    again = build_tokenizer("qwen2_5_vl")
    assert again.backend_tokenizer.to_str() == toks["qwen2_5_vl"].backend_tokenizer.to_str()
    assert len(build_tokenizer("qwen2_5_vl", vocab_size=700)) == 700


def test_qwen_template_generation_block(toks):
    tok = toks["qwen2_5_vl"]
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Вѣра"}]},
    ]
    out = tok.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(ids) == "Вѣра<|im_end|>"
    text = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n")
    q3 = build_tokenizer("qwen3_vl").apply_chat_template(chat[:1], tokenize=False)
    assert "system" not in q3


def test_internvl_template_and_named_tokens(toks):
    """InternVL-hf's ChatML: no default system, the image is <IMG_CONTEXT> and a newline; the
    processor finds its tokens by name on the tokenizer."""
    tok = toks["internvl"]
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Вѣра"}]},
    ]
    text = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<IMG_CONTEXT>\nRead.<|im_end|>\n<|im_start|>assistant\n"
    out = tok.apply_chat_template(
        chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(ids) == "Вѣра<|im_end|>"
    assert (tok.start_image_token, tok.end_image_token) == ("<img>", "</img>")
    assert tok.context_image_token == "<IMG_CONTEXT>"
    assert tok.context_image_token_id == tok.convert_tokens_to_ids("<IMG_CONTEXT>")


def test_corpus_covers_the_scripts():
    text = " ".join(CORPUS)
    for letter in "ѣіѳѵъاèù":
        assert letter in text
