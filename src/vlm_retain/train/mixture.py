"""The training mixture: target samples plus replay, with the replay share counted in TOKENS.

Why tokens and not samples: a 56-px text line costs a few dozen image tokens, a general scene a
few hundred, so "25 % replay" by sample count can mean 70 % of the compute (and of the gradient)
going to replay, or 5 %. Every sample carries an estimate of its sequence length (image tokens
from the family's image facts after the pixel budget, plus template, prompt and answer tokens
from the tokenizer) and the replay is drawn until it holds the requested share of the epoch's
tokens.

Why re-drawn each epoch: a fixed replay subset is memorised like any small set; a fresh draw per
epoch (seeded by ``(seed, epoch)``, so a resumed run sees the same data) covers the replay pool
over the run. Target samples are all used every epoch (``weight`` repeats or subsamples them).

Sources (see :class:`~vlm_retain.train.config.ReplaySource`): any manifest (``ocr`` records get
the OCR prompt, ``vqa`` records their ``meta.question`` in the evaluation's VQA prompt (or
``meta.prompt`` as written), ``caption`` records the caption prompt),
the synthetic world's manifest, or a benchmark: a folder holding a ``manifest.jsonl`` is read
as a manifest, any other folder in its own layout (VQAv2, TextVQA, DocVQA, COCO, Flickr30k)
through the data layer's loaders (:mod:`~vlm_retain.train.benchmark_replay`: VQA questions with
their majority answer, one reference caption per image). Self-replay
(:func:`self_replay_samples`) answers general prompts with the base model once, caches the
answers as a manifest, and uses them as replay targets.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlm_retain.data.card import manifest_hash
from vlm_retain.data.images import BadImage, open_image
from vlm_retain.data.manifest import (
    MANIFEST_NAME,
    Record,
    iter_manifest_lines,
    manifest_path,
    read_manifest,
    write_manifest,
)
from vlm_retain.data.prompts import VQA_PROMPT
from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json
from vlm_retain.train.config import (
    DEFAULT_CAPTION_PROMPT,
    DEFAULT_OCR_PROMPT,
    TRAINABLE_TASKS,
    DataConfig,
    ReplaySource,
)

SELF_REPLAY_SOURCE = "self-replay"

#: ``generate_fn(images, prompts) -> answers``: one answer per prompt; ``images[i]`` is the image
#: path (or None for a text-only prompt). The trainer passes the HF generation backend.
GenerateFn = Callable[[list[Path | None], list[str]], list[str]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One training example.

    ``source`` names where it came from (per-source loss and token stats); ``image`` is an image
    path or None (text-only); ``tokens`` is the estimated sequence length; ``replay`` marks
    general data (the KL term can be restricted to it); ``size`` is the original image's
    ``(width, height)`` when known.
    """

    source: str
    image: Path | None
    prompt: str
    answer: str
    task: str = "ocr"
    tokens: int = 0
    replay: bool = False
    id: str = ""
    size: tuple[int, int] | None = None


# --- image geometry and token counts ---------------------------------------------------------


def budget_size(
    width: int, height: int, max_pixels: int | None, unit: int | None
) -> tuple[int, int]:
    """The size an image is given before the processor sees it: at most ``max_pixels`` pixels.

    Larger images are downscaled keeping the aspect; with a ``unit`` (Qwen: 28, the side of one
    LLM token) both sides become multiples of it (at least one unit), so the processor does not
    resize again. Images within the budget are left as they are.
    """
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    if unit:
        w = max(unit, math.floor(width * scale / unit) * unit)
        h = max(unit, math.floor(height * scale / unit) * unit)
        while w * h > max_pixels and (w > unit or h > unit):  # extreme aspect after the floor
            if w >= h and w > unit:
                w -= unit
            else:
                h -= unit
        return w, h
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def smart_resize(
    height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen2-VL's resize rule (transformers ``smart_resize``): sides rounded to multiples of
    ``factor`` with the pixel count kept within ``[min_pixels, max_pixels]``."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_token_counter(
    family: Any, processor: Any = None, *, max_pixels: int | None = None
) -> Callable[[int, int], int]:
    """``(width, height) -> LLM tokens`` for one image of this family, after the pixel budget.

    Dynamic-resolution families (Qwen) follow ``smart_resize`` with the processor's own limits
    (falling back to the registry's :class:`~vlm_retain.models.registry.ImageFacts`): one token
    per ``unit x unit`` px. Fixed-size families cost the processor's ``image_seq_length`` (or
    ``(side/patch)^2``). Idefics3 costs ``image_seq_len`` per tile plus a global view (an
    estimate: its row/column markers are not counted). InternVL costs ``image_seq_length`` per
    tile of its aspect-matched grid, plus a thumbnail and ``<img>``/``</img>`` (exact).
    """
    facts = family.image
    unit = facts.unit
    ip = getattr(processor, "image_processor", None)
    if facts.dynamic:
        size = getattr(ip, "size", None)
        lo = _size_value(size, "shortest_edge") or facts.min_pixels or unit * unit
        hi = _size_value(size, "longest_edge") or facts.max_pixels or 28 * 28 * 1280

        def dynamic(width: int, height: int) -> int:
            w, h = budget_size(width, height, max_pixels, unit)
            rh, rw = smart_resize(h, w, factor=unit, min_pixels=lo, max_pixels=hi)
            return (rh // unit) * (rw // unit)

        return dynamic
    if family.chat.style == "idefics3":
        per_tile = int(getattr(processor, "image_seq_len", 64) or 64)
        longest = _size_value(getattr(ip, "size", None), "longest_edge") or 4 * 364
        tile = _size_value(getattr(ip, "max_image_size", None), "longest_edge") or 364

        def tiled(width: int, height: int) -> int:
            w, h = budget_size(width, height, max_pixels, None)
            scale = min(1.0, longest / max(w, h))
            tiles = math.ceil(h * scale / tile) * math.ceil(w * scale / tile)
            return per_tile * (tiles + (1 if tiles > 1 else 0))

        return tiled
    if family.chat.style == "internvl":
        from vlm_retain.evaluate.generate.lengths import image_tokens

        def tiles(width: int, height: int) -> int:
            return image_tokens(family, processor, budget_size(width, height, max_pixels, None))

        return tiles
    fixed = getattr(processor, "image_seq_length", None)
    if not fixed:
        side = (facts.fixed_size or (224, 224))[0]
        fixed = (side // facts.patch_size) ** 2
    return lambda width, height: int(fixed)


def _size_value(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return int(value) if value else None


class TokenCounter:
    """Estimates a sample's sequence length: template + prompt + answer + image tokens.

    Text is counted with the tokenizer (prompt and answer separately, so merges across the
    boundary can make it off by a token); the template's own tokens are measured once per
    modality. Build it from a loaded model with :meth:`for_model`, or from parts in tests.
    """

    def __init__(
        self,
        text_tokens: Callable[[str], int],
        image_tokens: Callable[[int, int], int],
        *,
        overhead_text: int = 0,
        overhead_image: int = 0,
    ) -> None:
        self.text_tokens = text_tokens
        self.image_tokens = image_tokens
        self.overhead_text = overhead_text
        self.overhead_image = overhead_image

    def __call__(self, prompt: str, answer: str, size: tuple[int, int] | None) -> int:
        text = self.text_tokens(prompt) + self.text_tokens(answer)
        if size is None:
            return self.overhead_text + text
        return self.overhead_image + text + self.image_tokens(*size)

    @classmethod
    def for_model(cls, loaded: Any, *, max_pixels: int | None = None) -> TokenCounter:
        """The counter for a :class:`~vlm_retain.models.loading.LoadedModel` and pixel budget."""
        tokenizer = loaded.processor.tokenizer

        def text_tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        images = image_token_counter(loaded.family, loaded.processor, max_pixels=max_pixels)
        if loaded.family.chat.uses_chat_template:
            from vlm_retain.models.encoding import render_full

            def overhead(image: bool) -> int:
                _, full = render_full(loaded, "a", "b", image=image)
                # the image placeholder renders as one token that the processor expands
                return text_tokens(full) - 2 - (1 if image else 0)

            return cls(
                text_tokens, images, overhead_text=overhead(False), overhead_image=overhead(True)
            )
        # PaliGemma: <image>*n + BOS + prompt + "\n" + answer + EOS
        return cls(text_tokens, images, overhead_text=3, overhead_image=3)


# --- reading sources -------------------------------------------------------------------------


def load_samples(
    path: str | Path,
    *,
    counter: Callable[[str, str, tuple[int, int] | None], int],
    split: str = "train",
    source: str | None = None,
    replay: bool = False,
    tasks: Sequence[str] | None = None,
    prompt: str = DEFAULT_OCR_PROMPT,
    caption_prompt: str = DEFAULT_CAPTION_PROMPT,
    what: str = "manifest",
) -> list[Sample]:
    """Samples of one split of a manifest (folder or file).

    ``ocr`` records are asked ``prompt``, ``vqa`` records their ``meta.question`` inside
    :data:`VQA_PROMPT` (what the evaluation asks; ``meta.prompt`` is used as written), ``caption``
    records ``caption_prompt``; records of other tasks (retrieval) and of ``tasks`` not listed
    are left out. An empty result, a VQA record without a question or an image that cannot be
    opened to learn its size is an :class:`InputError` naming the manifest (``what`` says which
    role it plays, e.g. "replay source").
    """
    file = _manifest_file(path, what)
    folder = file.parent
    wanted = tuple(tasks) if tasks else TRAINABLE_TASKS
    samples: list[Sample] = []
    seen_split = 0
    for line, record in iter_manifest_lines(file):
        if record.split != split:
            continue
        seen_split += 1
        if record.task not in wanted:
            continue
        question = _prompt_of(record, file, line, prompt, caption_prompt)
        image = record.image_path(folder)
        size = _image_size(record, image, file, line)
        samples.append(
            Sample(
                source=source or record.source,
                image=image,
                prompt=question,
                answer=record.text,
                task=record.task,
                tokens=counter(question, record.text, size),
                replay=replay,
                id=record.id,
                size=size,
            )
        )
    if not samples:
        detail = (
            f"no {'/'.join(wanted)} records in split {split!r}"
            if seen_split
            else f"no records in split {split!r}"
        )
        raise InputError(f"{what} is empty: {detail}", path=file)
    return samples


def _manifest_file(path: str | Path, what: str) -> Path:
    try:
        return manifest_path(Path(path))
    except InputError:
        raise InputError(
            f"{what}: no {MANIFEST_NAME} here",
            path=path,
            hint="pass a folder written by 'vlm-retain data import' or 'data synth'",
        ) from None


def _prompt_of(record: Record, file: Path, line: int, prompt: str, caption_prompt: str) -> str:
    if record.task == "ocr":
        return prompt
    if record.task == "caption":
        return caption_prompt
    prompt_text = record.meta.get("prompt")
    if isinstance(prompt_text, str) and prompt_text.strip():
        return prompt_text
    question = record.meta.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError(
            "a vqa record needs its question in meta.question",
            path=file,
            line=line,
            field="meta.question",
        )
    return VQA_PROMPT.format(question=question)


def _image_size(record: Record, image: Path, file: Path, line: int) -> tuple[int, int]:
    width, height = record.meta.get("width"), record.meta.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    try:
        with open_image(image) as handle:
            return handle.size
    except BadImage as exc:
        raise InputError(f"{exc}: {image}", path=file, line=line, field="image") from None


def replay_source_samples(
    src: ReplaySource,
    *,
    counter: Callable[[str, str, tuple[int, int] | None], int],
    prompt: str = DEFAULT_OCR_PROMPT,
    caption_prompt: str = DEFAULT_CAPTION_PROMPT,
    seed: int = 0,
    what: str | None = None,
) -> list[Sample]:
    """The samples of one configured replay source (manifest, world or benchmark folder).

    A ``benchmark`` folder without a ``manifest.jsonl`` is read in its own layout
    (:func:`~vlm_retain.train.benchmark_replay.benchmark_samples`; ``seed`` picks each image's
    reference caption). ``what`` names the source in errors (default ``replay <kind>``).
    """
    path = Path(src.path)
    what = what or f"replay {src.kind}"
    if src.kind == "benchmark" and not (path / MANIFEST_NAME).is_file() and not path.is_file():
        from vlm_retain.train.benchmark_replay import benchmark_samples

        if not path.is_dir():
            raise InputError(f"{what}: no such folder", path=path)
        return benchmark_samples(
            path,
            counter=counter,
            split=src.split,
            source=src.name,
            tasks=src.tasks,
            caption_prompt=caption_prompt,
            seed=seed,
            what=what,
        )
    return load_samples(
        path,
        counter=counter,
        split=src.split,
        source=src.name,
        replay=True,
        tasks=src.tasks,
        prompt=prompt,
        caption_prompt=caption_prompt,
        what=what,
    )


# --- self-replay -----------------------------------------------------------------------------


def self_replay_samples(
    prompts_from: str | Path,
    *,
    generate_fn: GenerateFn,
    model_key: str,
    cache_dir: str | Path,
    counter: Callable[[str, str, tuple[int, int] | None], int],
    n: int = 256,
    seed: int = 0,
    split: str = "train",
    prompt: str = DEFAULT_OCR_PROMPT,
    caption_prompt: str = DEFAULT_CAPTION_PROMPT,
    batch_size: int = 16,
) -> list[Sample]:
    """Replay samples whose answers are the base model's own, generated once and cached.

    ``n`` records of ``prompts_from`` (a seeded draw) are answered by ``generate_fn`` in batches
    of ``batch_size``. The answers are written as a manifest to
    ``cache_dir/<key>/manifest.jsonl`` (key: ``model_key``, the data's hash, split, n, seed and
    prompts), so the next run with the same model and data reads them back without generating.
    Empty answers are left out. ``model_key`` must change when the weights change (see
    :func:`model_fingerprint`).
    """
    file = _manifest_file(prompts_from, "self-replay prompts")
    key = _cache_key(model_key, file, split, n, seed, prompt, caption_prompt)
    folder = Path(cache_dir) / key
    if not (folder / MANIFEST_NAME).is_file():
        _generate_cache(
            file, folder, generate_fn, counter, n, seed, split, prompt, caption_prompt, batch_size
        )
        atomic_write_json(
            folder / "info.json",
            {"model": model_key, "data": str(file), "split": split, "n": n, "seed": seed},
        )
    return _read_cache(folder, counter)


def _cache_key(model_key: str, file: Path, *parts: Any) -> str:
    blob = json.dumps([model_key, manifest_hash(file), *parts], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _generate_cache(
    file: Path,
    folder: Path,
    generate_fn: GenerateFn,
    counter: Callable[[str, str, tuple[int, int] | None], int],
    n: int,
    seed: int,
    split: str,
    prompt: str,
    caption_prompt: str,
    batch_size: int,
) -> None:
    pool = load_samples(
        file,
        counter=counter,
        split=split,
        replay=True,
        prompt=prompt,
        caption_prompt=caption_prompt,
        what="self-replay prompts",
    )
    records = {r.id: r for r in read_manifest(file)}
    pool.sort(key=lambda s: s.id)
    rng = np.random.default_rng([seed, 0x5E1F])
    chosen = [pool[i] for i in sorted(rng.permutation(len(pool))[: min(n, len(pool))])]
    out: list[Record] = []
    for start in range(0, len(chosen), batch_size):
        chunk = chosen[start : start + batch_size]
        answers = generate_fn([s.image for s in chunk], [s.prompt for s in chunk])
        if len(answers) != len(chunk):
            raise InputError(
                f"self-replay: generate_fn returned {len(answers)} answers for {len(chunk)} prompts"
            )
        for sample, answer in zip(chunk, answers, strict=True):
            origin = records[sample.id]
            record = Record.create(
                id=sample.id,
                image=str(Path(sample.image).resolve()),
                text=answer,
                lang=origin.lang,
                source=SELF_REPLAY_SOURCE,
                split="train",
                task=sample.task,
                meta={"prompt": sample.prompt, "origin": origin.source, **_size_meta(sample)},
            )
            if record.text:
                out.append(record)
    if not out:
        raise InputError("self-replay: the model gave no non-empty answer", path=file)
    write_manifest(folder / MANIFEST_NAME, out)


def _size_meta(sample: Sample) -> dict[str, int]:
    return {"width": sample.size[0], "height": sample.size[1]} if sample.size else {}


def _read_cache(
    folder: Path, counter: Callable[[str, str, tuple[int, int] | None], int]
) -> list[Sample]:
    samples = []
    file = folder / MANIFEST_NAME
    for line, record in iter_manifest_lines(file):
        question = record.meta.get("prompt")
        if not isinstance(question, str):
            raise InputError("self-replay cache without meta.prompt", path=file, line=line)
        image = record.image_path(folder)
        size = _image_size(record, image, file, line)
        samples.append(
            Sample(
                source=SELF_REPLAY_SOURCE,
                image=image,
                prompt=question,
                answer=record.text,
                task=record.task,
                tokens=counter(question, record.text, size),
                replay=True,
                id=record.id,
                size=size,
            )
        )
    return samples


def model_fingerprint(model_dir: str | Path, adapter: str | Path | None = None) -> str:
    """A cheap identity of a model's weights for cache keys: config.json bytes, and for every
    ``*.safetensors`` file its name, size, modification time and header (tensor names, shapes,
    offsets). Copying a model changes the time, so at worst a cache is rebuilt, never misused."""
    digest = hashlib.sha256()
    for folder in [Path(model_dir), *([Path(adapter)] if adapter else [])]:
        for name in ("config.json", "adapter_config.json"):
            if (folder / name).is_file():
                digest.update((folder / name).read_bytes())
        for weights in sorted(folder.glob("*.safetensors")):
            stat = weights.stat()
            digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            with open(weights, "rb") as handle:
                header = int.from_bytes(handle.read(8), "little")
                digest.update(handle.read(min(header, 1 << 24)))
    return digest.hexdigest()[:16]


# --- the mixture -----------------------------------------------------------------------------


class Mixture:
    """Target samples plus replay drawn to ``replay_share`` of each epoch's tokens.

    Every epoch holds the target samples (each source ``weight`` times: integer part as repeats,
    the fraction as a seeded subset) and replay samples drawn without replacement (the pool is
    cycled when the budget exceeds it) until the replay tokens are closest to
    ``share / (1 - share) x target tokens``, split among replay sources by ``replay_weights``.
    The draw depends only on ``(seed, epoch)``.
    """

    def __init__(
        self,
        target_samples: Sequence[Sample],
        replay_samples: Sequence[Sample],
        replay_share: float,
        seed: int = 0,
        *,
        target_weights: Mapping[str, float] | None = None,
        replay_weights: Mapping[str, float] | None = None,
    ) -> None:
        if not 0 <= replay_share < 1:
            raise InputError(f"replay_share must be in [0, 1), not {replay_share}")
        if not target_samples:
            raise InputError("the mixture has no target samples")
        if replay_share > 0 and not replay_samples:
            raise InputError("replay_share > 0 but there are no replay samples")
        clash = {s.source for s in target_samples} & {s.source for s in replay_samples}
        if clash:
            raise InputError(
                f"source name {sorted(clash)[0]!r} is both target and replay",
                hint="give the replay source a name: in the config",
            )
        self.target = _by_source(target_samples)
        self.replay = _by_source(replay_samples)
        self.replay_share = replay_share
        self.seed = seed
        self.target_weights = {s: float((target_weights or {}).get(s, 1.0)) for s in self.target}
        self.replay_weights = {s: float((replay_weights or {}).get(s, 1.0)) for s in self.replay}

    def epoch(self, e: int) -> list[Sample]:
        """The shuffled samples of epoch ``e`` (deterministic for ``(seed, e)``)."""
        rng = np.random.default_rng([self.seed, e])
        chosen: list[Sample] = []
        for name in sorted(self.target):
            chosen += _weighted(self.target[name], self.target_weights[name], rng)
        target_tokens = sum(s.tokens for s in chosen)
        if self.replay_share > 0 and self.replay:
            budget = target_tokens * self.replay_share / (1 - self.replay_share)
            total_weight = sum(self.replay_weights.values())
            for name in sorted(self.replay):
                share = budget * self.replay_weights[name] / total_weight
                chosen += _draw(self.replay[name], share, rng)
        order = rng.permutation(len(chosen))
        return [chosen[i] for i in order]

    @staticmethod
    def stats(samples: Sequence[Sample]) -> dict[str, int]:
        """Estimated tokens per source."""
        counts: Counter[str] = Counter()
        for sample in samples:
            counts[sample.source] += sample.tokens
        return dict(sorted(counts.items()))

    @staticmethod
    def share(samples: Sequence[Sample]) -> float:
        """The replay share of the tokens of ``samples`` (what :meth:`epoch` aims at)."""
        total = sum(s.tokens for s in samples)
        return sum(s.tokens for s in samples if s.replay) / total if total else 0.0


def _by_source(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for sample in samples:
        out.setdefault(sample.source, []).append(sample)
    return out


def _weighted(samples: list[Sample], weight: float, rng: np.random.Generator) -> list[Sample]:
    whole, frac = int(weight), weight - int(weight)
    out = samples * whole
    extra = round(frac * len(samples))
    if extra:
        out += [samples[i] for i in sorted(rng.choice(len(samples), extra, replace=False))]
    return out


def _draw(pool: list[Sample], budget: float, rng: np.random.Generator) -> list[Sample]:
    """Samples in random order (reshuffled each pass) until their tokens are closest to budget."""
    out: list[Sample] = []
    total = 0
    if budget <= 0 or not any(s.tokens > 0 for s in pool):
        return out
    while total < budget:
        for i in rng.permutation(len(pool)):
            sample = pool[int(i)]
            if total + sample.tokens > budget:
                if (total + sample.tokens - budget) < (budget - total):
                    out.append(sample)
                    total += sample.tokens
                return out
            out.append(sample)
            total += sample.tokens
    return out


# --- from the config -------------------------------------------------------------------------


def build_mixture(
    data: DataConfig,
    *,
    counter: Callable[[str, str, tuple[int, int] | None], int],
    seed: int = 0,
    generate_fn: GenerateFn | None = None,
    model_key: str | None = None,
) -> Mixture:
    """The mixture a :class:`~vlm_retain.train.config.DataConfig` describes.

    With ``data.self_replay.enabled``, pass ``generate_fn`` and ``model_key``; ``generate_fn`` is
    only called when the cache for this model and data does not exist yet, so it can build the
    generation backend lazily.
    """
    target: list[Sample] = []
    target_weights: dict[str, float] = {}
    for src in data.target:
        samples = load_samples(
            src.manifest,
            counter=counter,
            split=src.split,
            source=src.name,
            tasks=src.tasks,
            prompt=data.prompt,
            caption_prompt=data.caption_prompt,
            what="target manifest",
        )
        target += samples
        for name in {s.source for s in samples}:
            target_weights[name] = src.weight
    replay: list[Sample] = []
    replay_weights: dict[str, float] = {}
    if data.replay_share > 0:
        for src in data.replay:
            samples = replay_source_samples(
                src,
                counter=counter,
                prompt=data.prompt,
                caption_prompt=data.caption_prompt,
                seed=seed,
            )
            replay += samples
            for name in {s.source for s in samples}:
                replay_weights[name] = src.weight
        sr = data.self_replay
        if sr.enabled:
            if generate_fn is None or model_key is None:
                raise InputError("data.self_replay is enabled: pass generate_fn and model_key")
            assert sr.prompts_from is not None  # checked by the config
            replay += self_replay_samples(
                sr.prompts_from,
                generate_fn=generate_fn,
                model_key=model_key,
                cache_dir=sr.cache_dir,
                counter=counter,
                n=sr.n,
                seed=seed,
                split=sr.split,
                prompt=data.prompt,
                caption_prompt=data.caption_prompt,
            )
            replay_weights[SELF_REPLAY_SOURCE] = sr.weight
    return Mixture(
        target,
        replay,
        data.replay_share,
        seed,
        target_weights=target_weights,
        replay_weights=replay_weights,
    )
