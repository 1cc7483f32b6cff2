"""A small byte-level BPE tokenizer built offline, for tiny test and demo models.

Why byte-level BPE with Qwen2's pre-tokenizer: every Unicode string round-trips (no ``<unk>``),
so pre-reform Cyrillic (ѣ і ѳ ѵ ъ), Italian accents and Arabic survive encode/decode exactly, and
the merges learnt from the built-in multilingual corpus give those letters their own tokens at the
default vocabulary size (about 1000), which keeps transcription targets short for a tiny model.

Each family gets the special tokens its processor looks up by name and a chat template in that
family's style. The Qwen templates (and InternVL's, ChatML too) carry a ``{% generation %}``
block so that ``return_assistant_tokens_mask=True`` works (the official Qwen templates lack it;
env.md §3).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

#: Lines the BPE merges are learnt from: the four scripts of the project plus the prompt words
#: the tasks use. Repeated so letter pairs of every script are frequent enough to merge.
CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Transcribe the text in the image exactly. Answer the question with a single word.",
    "What color is the circle? How many shapes are there? Is there a red square? yes no",
    "one two three four five red green blue yellow circle square triangle shape object",
    "Describe the image in one sentence. A picture of a handwritten line of text.",
    "Perché la città è più bella così? Però già né caffè, virtù, università, libertà.",
    "Nel mezzo del cammin di nostra vita mi ritrovai per una selva oscura.",
    "Въ началѣ было Слово, и Слово было у Бога. Ѳедоръ, мѵро, міръ, вѣра, лѣсъ, хлѣбъ.",
    "Петръ Алексѣевичъ указалъ: всѣмъ людямъ жить по-новому. Іоаннъ, Ѳеодоръ, сѵнодъ.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Щука, юла, эхо, ёж, йод.",
    "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ абвгдеёжзийклмнопрстуфхцчшщъыьэюя ѢѣІіѲѳѴѵ",
    "بسم الله الرحمن الرحيم. مرحبا بالعالم، كتب الكاتب رسالة طويلة في المدينة القديمة.",
    "ابتثجحخدذرزسشصضطظعغفقكلمنهوي ة ى ء أ إ آ ؤ ئ",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 .,;:!?'\"()-",
    "àèéìòùÀÈÉÌÒÙ çñüöä",
)

QWEN_SPECIALS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
IDEFICS3_SPECIALS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)
PALIGEMMA_SPECIALS: tuple[str, ...] = ("<pad>", "<eos>", "<bos>", "<unk>", "<image>")
#: InternVL (-hf) on a Qwen2-style vocabulary: the image is ``<img><IMG_CONTEXT>*N</img>``.
INTERNVL_SPECIALS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
)

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."

#: Qwen2-VL / Qwen2.5-VL / Qwen3-VL chat format with a ``{% generation %}`` block around the
#: assistant's words and its ``<|im_end|>``. ``__SYSTEM__`` is replaced by the family's default
#: system prompt block (empty for Qwen3-VL and InternVL, which have none) and ``__IMAGE__`` by
#: the image placeholder (InternVL-hf's template writes ``<IMG_CONTEXT>`` and a newline).
_QWEN_TEMPLATE = (
    "{% set NL = '\\n' %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}__SYSTEM__{% endif %}"
    "<|im_start|>{{ message['role'] }}{{ NL }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{% endgeneration %}{{ NL }}"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' or 'image' in c or 'image_url' in c %}"
    "__IMAGE__"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{{ NL }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ NL }}{% endif %}"
)

#: Idefics3 / SmolVLM-Instruct chat format ("User:<image>...<end_of_utterance>\nAssistant: ...").
IDEFICS3_TEMPLATE = (
    "{% set NL = '\\n' %}"
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}"
    "{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>{% endgeneration %}{{ NL }}"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% elif c['type'] == 'image' %}<image>"
    "{% endif %}{% endfor %}{% endif %}<end_of_utterance>{{ NL }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
INTERNVL_IMAGE = "<IMG_CONTEXT>{{ NL }}"


def qwen_chat_template(
    default_system: str | None = QWEN_DEFAULT_SYSTEM, image: str = QWEN_IMAGE
) -> str:
    """The Qwen-style template, with ``default_system`` inserted when a chat has no system turn
    and ``image`` (template text) where an image goes."""
    block = (
        f"<|im_start|>system{{{{ NL }}}}{default_system}<|im_end|>{{{{ NL }}}}"
        if default_system
        else ""
    )
    return _QWEN_TEMPLATE.replace("__SYSTEM__", block).replace("__IMAGE__", image)


def train_bpe(
    specials: Iterable[str], *, vocab_size: int = 1000, corpus: Iterable[str] = CORPUS
):  # -> tokenizers.Tokenizer
    """Train the byte-level BPE (Qwen2 pre-tokenizer regex, NFC normalizer) on ``corpus``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
                ),
                behavior="isolated",
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    lines = [unicodedata.normalize("NFC", line) for line in corpus]
    # Every single letter of the corpus also appears on its own, so each letter (2 bytes for
    # Cyrillic/Arabic) is merged into one token before longer pieces take the vocabulary.
    letters = sorted({ch for line in lines for ch in line if not ch.isspace()})
    data = lines * 4 + ["\n".join(letters)] * 32
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(data, trainer)
    return tok


def build_tokenizer(family: str, *, vocab_size: int = 1000, model_max_length: int = 4096):
    """A ``PreTrainedTokenizerFast`` for ``family`` (registry name): specials and chat template.

    Deterministic: the same arguments give the same ``tokenizer.json``.
    """
    from transformers import PreTrainedTokenizerFast

    if family in ("qwen2_5_vl", "qwen2_vl", "qwen3_vl"):
        tok = train_bpe(QWEN_SPECIALS, vocab_size=vocab_size)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            additional_special_tokens=list(QWEN_SPECIALS[1:]),
            extra_special_tokens={
                "image_token": "<|image_pad|>",
                "video_token": "<|video_pad|>",
                "vision_bos_token": "<|vision_start|>",
                "vision_eos_token": "<|vision_end|>",
            },
            padding_side="left",
            model_max_length=model_max_length,
        )
        system = None if family == "qwen3_vl" else QWEN_DEFAULT_SYSTEM
        hf.chat_template = qwen_chat_template(system)
    elif family == "internvl":
        tok = train_bpe(INTERNVL_SPECIALS, vocab_size=vocab_size)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            additional_special_tokens=list(INTERNVL_SPECIALS[1:]),
            extra_special_tokens={
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
            padding_side="left",
            model_max_length=model_max_length,
        )
        hf.chat_template = qwen_chat_template(None, image=INTERNVL_IMAGE)
    elif family == "idefics3":
        tok = train_bpe(IDEFICS3_SPECIALS, vocab_size=vocab_size)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|im_start|>",
            eos_token="<end_of_utterance>",
            pad_token="<|endoftext|>",
            unk_token=None,
            additional_special_tokens=list(IDEFICS3_SPECIALS[1:]),
            extra_special_tokens={"image_token": "<image>"},
            padding_side="left",
            model_max_length=model_max_length,
        )
        hf.chat_template = IDEFICS3_TEMPLATE
    elif family == "paligemma":
        tok = train_bpe(PALIGEMMA_SPECIALS, vocab_size=vocab_size)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
            additional_special_tokens=["<image>"],
            extra_special_tokens={"image_token": "<image>"},
            padding_side="left",
            model_max_length=model_max_length,
        )
    else:
        from vlm_retain.errors import InputError

        raise InputError(
            f"no tokenizer recipe for family {family!r}",
            hint="use one of qwen2_5_vl, qwen2_vl, qwen3_vl, idefics3, paligemma, internvl",
        )
    return hf
