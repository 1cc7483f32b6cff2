"""Real-scale throughput of OCR evaluation and training on one GPU, plain path against ours.

Why: ``research/gpu-anchors.md`` measured the plain Hugging Face path with the Qwen2.5-VL-7B
shape at line-level inputs (0.58 lines/s the current workflow's way; LoRA 5.5k tokens/s, ~20%
MFU). Issue 9 asks for both figures, and ours, measured *in the same run* on the device machine,
which has torch, transformers and peft but no internet and no real weights. Throughput does not
depend on weight values, so the model is built randomly initialised from a shape config
(``configs/shapes/qwen2.5-vl-{3b,7b}.json``: the real ``config.json`` shapes) and fed synthetic
inputs built without a tokenizer:

* one 448x56 line image per sample (4x32 patches of 14 px -> 32 merged image tokens), given
  directly as ``pixel_values`` and ``image_grid_thw`` (random pixels);
* a prompt of 49 random text tokens around ``<|vision_start|>`` + 32 ``<|image_pad|>`` +
  ``<|vision_end|>`` (the chat template's system turn, user turn and assistant header), and a
  48-token answer: 131 tokens per sample, as in the anchors; labels only on the answer.

Cases, each timed after warm-up with the device synchronised (CUDA events are not needed at
these durations; ``time.perf_counter`` around ``synchronize``):

* ``eval/baseline``: the current workflow's way, one line at a time, sampling with LLaMA-Factory's
  defaults (what the seed script's ``predict`` uses: temperature 0.95, top_p 0.7, top_k 50);
* ``eval/ours-bN``: greedy, N lines per ``model.generate`` call, left padding (the HF backend
  of ``vlm_retain.evaluate`` batches the same way); both forced to exactly 48 new tokens
  (``min_new_tokens = max_new_tokens``) so the work per line is identical;
  ``eval/ours-static-bN`` (run last) the same with a static KV cache (``--kv-cache static``),
  with which transformers compiles the decoding step on CUDA; the warm-up call compiles;
* ``probe/vision-forward``: the frozen vision tower alone on one training batch;
* ``train/lora`` (the plain HF+PEFT step, the in-run baseline): PEFT LoRA r=64 alpha=128 on
  every linear of the language model, AdamW, bf16 weights on CUDA, the model's own loss over
  full logits, no gradient checkpointing; ``train/lora-kl`` adds the KL teacher pass (one
  no-grad forward under ``disable_adapter()``, no second model copy); ``train/lora-gc`` the same
  step with non-reentrant gradient checkpointing;
* ``train/ours-bN``, ``train/ours-kl-bN``: our current step (see ``OURS_METHOD``) as in a
  run's first epoch, every image new;
* ``train/ours-klr-bN``: ours with the KL on one row in four only (the replay rows at
  ``replay_share`` 0.25, ``kl_to_base.scope: replay``): the reference runs those rows alone;
* ``train/ours-compiled-bN`` (run late): ours with each decoder layer compiled
  (``train.compile: on``); two untimed warm-up steps compile the forward and the backward;
* ``train/ours-vc-bN``, ``train/ours-kl-vc-bN``: the same step from the second epoch on, when
  the trainer's vision-feature cache (``train.vision_cache``, on by default with a frozen tower)
  holds every line image: the batch repeats, so after warm-up the tower is never run (and the
  KL teacher reuses the student's cached features);
* ``train/llm-attn``: the selective preset (LLM attention projections at full rank);
* ``train/full``: full fine-tuning (bf16 weights and AdamW states) of the 3B shape.

FLOPs per token (the anchors' convention; "tokens" are all non-pad tokens, image tokens
included): ``2N`` for a forward, another ``2N`` for the backward through activations, ``2N_t``
for the weight gradients of the ``N_t`` trainable *base* parameters (LoRA adapters are
neglected): LoRA ``4N``, full fine-tuning ``6N``, a teacher pass ``+2N``. Gradient
checkpointing's recomputation is not counted (model FLOPs). MFU = tokens/s x FLOPs/token /
the measured dense matmul rate (bf16 8192^3 on CUDA, fp32 on CPU).

A case that fails (out of memory, no CUDA) is recorded with its error and the run goes on; a
progress line is printed and the JSON rewritten after every case, so a run cut short still
leaves what finished.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: LLaMA-Factory's GeneratingArguments defaults: how the seed script's ``predict`` run decodes.
CURRENT_SAMPLING = {"do_sample": True, "temperature": 0.95, "top_p": 0.7, "top_k": 50}

#: Line image and sequence layout (gpu-anchors.md): 448x56 px, 49 prompt text tokens around
#: the image, 48 answer tokens.
LINE_W, LINE_H = 448, 56
PROMPT_BEFORE, PROMPT_AFTER = 20, 29
ANSWER_TOKENS = 48
NEW_TOKENS = 48

#: LoRA of the plain HF+PEFT step (the anchors' setting); dropout 0 as LLaMA-Factory's default.
LORA_R, LORA_ALPHA, LORA_DROPOUT = 64, 128.0, 0.0
LR = 1e-5
KL_WEIGHT = 0.1  # the teacher term, as in gpu-anchors.md
REPLAY_EVERY = 4  # ours-klr: KL on one row in four, as replay_share 0.25 gives

SHAPES = ("7b", "3b", "tiny")
SHAPE_FILES = {"7b": "qwen2.5-vl-7b.json", "3b": "qwen2.5-vl-3b.json"}

OURS_METHOD = (
    "PEFT LoRA r=64 alpha=128 on all LLM linears (as the baseline), no gradient checkpointing, "
    "the trainer's objectives and forward: logits only at answer positions (answer-only "
    "logits), the vision tower's attention one call per window size, KL through the "
    "adapter-disabled reference in 512-position chunks, micro-batch {batch}; with CUDA the "
    "decoder layers compiled (ours-compiled, train.compile: auto); timed apart: the "
    "vision-feature cache (ours-vc, train.ours_warm_*), KL on replay rows only (ours-klr); "
    "not built: fused linear+CE"
)

#: (KL on replay rows, compiled, vision cache) at the large micro-batch, after the others:
#: the KL's cost at that batch, and everything on at once, with and without the KL
LARGE_COMBINATIONS = (
    (True, False, False),
    (False, True, False),
    (False, True, True),
    (True, True, True),
)

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- shapes


def shapes_dir() -> Path:
    """``configs/shapes`` of the repository this module lives in (or of the current folder)."""
    here = Path(__file__).resolve()
    for root in (*here.parents[2:4], Path.cwd()):
        folder = root / "configs" / "shapes"
        if folder.is_dir():
            return folder
    return Path.cwd() / "configs" / "shapes"


def tiny_config_dict() -> dict[str, Any]:
    """A very small Qwen2.5-VL for CPU checks: real special-token layout, real patch settings."""
    vocab = 1024
    pad, eos, start, end, image, video = range(vocab - 6, vocab)
    return {
        "model_type": "qwen2_5_vl",
        "text_config": {
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": pad,
            "eos_token_id": eos,
            "pad_token_id": pad,
        },
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
        },
        "image_token_id": image,
        "video_token_id": video,
        "vision_start_token_id": start,
        "vision_end_token_id": end,
        "tie_word_embeddings": False,
    }


def shape_dict(shape: str) -> dict[str, Any]:
    """The config dict of ``shape`` (``7b``, ``3b``, ``tiny`` or a path to a config JSON)."""
    if shape == "tiny":
        return tiny_config_dict()
    path = shapes_dir() / SHAPE_FILES[shape] if shape in SHAPE_FILES else Path(shape)
    if not path.is_file():
        raise FileNotFoundError(f"shape config not found: {path} (use {', '.join(SHAPES)})")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def load_config(shape: str) -> Any:
    """``Qwen2_5_VLConfig`` of ``shape``."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(**shape_dict(shape))


def param_count(config: Any) -> dict[str, int]:
    """Parameters of the model ``config`` describes, counted on the meta device (no memory)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    return {"total": total, "vision": vision, "text": total - vision}


def shape_info(name: str, config: Any) -> dict[str, Any]:
    text, vision = config.text_config, config.vision_config
    return {
        "name": name,
        "hidden_size": text.hidden_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "intermediate_size": text.intermediate_size,
        "vocab_size": text.vocab_size,
        "vision_depth": vision.depth,
        "vision_hidden_size": vision.hidden_size,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "params": param_count(config),
    }


# ----------------------------------------------------------------------------- inputs


def image_tokens_per_line(config: Any, width: int = LINE_W, height: int = LINE_H) -> int:
    """Merged image tokens of one ``width`` x ``height`` line image."""
    vision = config.vision_config
    grid_h, grid_w = height // vision.patch_size, width // vision.patch_size
    return grid_h * grid_w // vision.spatial_merge_size**2


def synthetic_batch(
    config: Any,
    batch_size: int,
    *,
    answer: bool = True,
    seed: int = 0,
    prompt_lengths: Sequence[int] | None = None,
    device: Any = "cpu",
    dtype: Any = None,
) -> dict[str, Any]:
    """Tokenizer-free model inputs for ``batch_size`` line images.

    Each sample: ``PROMPT_BEFORE`` text tokens, ``<|vision_start|>``, the image pads,
    ``<|vision_end|>``, ``PROMPT_AFTER`` text tokens (or ``prompt_lengths[i]`` text tokens in
    all), then with ``answer`` ``ANSWER_TOKENS`` answer tokens, labelled (everything else is
    -100). Samples of different lengths are padded on the left (generation's side; training
    batches here are all the same length). Text ids are random ids below every special id.
    """
    import torch

    vision = config.vision_config
    grid_h, grid_w = LINE_H // vision.patch_size, LINE_W // vision.patch_size
    n_image = image_tokens_per_line(config)
    pad = config.text_config.pad_token_id
    specials = [
        config.image_token_id,
        config.video_token_id,
        config.vision_start_token_id,
        config.vision_end_token_id,
        pad,
        config.text_config.eos_token_id,
    ]
    text_hi = min(int(s) for s in specials if isinstance(s, int))
    gen = torch.Generator().manual_seed(seed)
    rows: list[list[int]] = []
    labels: list[list[int]] = []
    for i in range(batch_size):
        n_text = prompt_lengths[i] if prompt_lengths else PROMPT_BEFORE + PROMPT_AFTER
        before = min(PROMPT_BEFORE, n_text)
        text = torch.randint(0, text_hi, (n_text,), generator=gen).tolist()
        ids = [
            *text[:before],
            config.vision_start_token_id,
            *[config.image_token_id] * n_image,
            config.vision_end_token_id,
            *text[before:],
        ]
        lab = [-100] * len(ids)
        if answer:
            ans = torch.randint(0, text_hi, (ANSWER_TOKENS,), generator=gen).tolist()
            ids += ans
            lab += ans
        rows.append(ids)
        labels.append(lab)
    width = max(len(r) for r in rows)
    input_ids = torch.full((batch_size, width), pad, dtype=torch.long)
    attention = torch.zeros((batch_size, width), dtype=torch.long)
    label_t = torch.full((batch_size, width), -100, dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
        label_t[i, width - len(ids) :] = torch.tensor(lab)
    patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn((batch_size * grid_h * grid_w, patch_dim), generator=gen)
    batch: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "pixel_values": pixels.to(device=device, dtype=dtype or torch.float32),
        "image_grid_thw": torch.tensor([[1, grid_h, grid_w]] * batch_size).to(device),
        # as the processor marks them: the model computes the multimodal rotary positions
        # from these (without them it falls back to plain 1-D positions)
        "mm_token_type_ids": (input_ids == config.image_token_id).int().to(device),
    }
    if answer:
        batch["labels"] = label_t.to(device)
    return batch


# ----------------------------------------------------------------------------- measuring


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def synchronize(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def matmul_rate(device: Any, *, n: int | None = None, iters: int = 20) -> dict[str, Any]:
    """Measured dense matmul rate: bf16 ``n``^3 (8192) on CUDA, fp32 (512) on CPU."""
    import torch

    cuda = str(device).startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    n = n or (8192 if cuda else 512)
    iters = iters if cuda else max(1, iters // 4)
    a = torch.randn((n, n), device=device, dtype=dtype)
    b = torch.randn((n, n), device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1000
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        seconds = time.perf_counter() - t0
    flops = 2 * n**3 * iters / seconds
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "tflops": flops / 1e12}


def reset_peak(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: Any) -> float:
    """Peak memory of the case: CUDA max allocated; on CPU the process's max RSS (not per case)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def free_memory(device: Any) -> None:
    import torch

    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- options


@dataclass
class BenchOptions:
    """What to run; ``None`` fields take the device's default (GPU / CPU) in :meth:`resolved`."""

    shape: str = "7b"
    device: str = "auto"
    out: Path | None = None
    steps: int | None = None
    warmup: int | None = None
    iters: int | None = None
    baseline_lines: int | None = None
    batch_size: int | None = None
    eval_batch_sizes: tuple[int, ...] | None = None
    static_batch_sizes: tuple[int, ...] | None = None
    ours_batch_sizes: tuple[int, ...] | None = None
    planned_batch_sizes: tuple[int, ...] | None = None
    memory_cap_gib: float | None = None
    full_shape: str = "auto"
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    time_budget: float | None = None
    seed: int = 0
    quiet: bool = False

    def resolved(self, device: str) -> BenchOptions:
        import dataclasses

        gpu = device.startswith("cuda")
        bs = self.batch_size or (16 if gpu else 2)
        return dataclasses.replace(
            self,
            device=device,
            steps=self.steps or (5 if gpu else 2),
            warmup=self.warmup if self.warmup is not None else (2 if gpu else 1),
            iters=self.iters or (2 if gpu else 1),
            baseline_lines=self.baseline_lines or (6 if gpu else 2),
            batch_size=bs,
            eval_batch_sizes=self.eval_batch_sizes or ((32, 64, 128, 256) if gpu else (2, 4)),
            static_batch_sizes=self.static_batch_sizes or ((256,) if gpu else (2,)),
            ours_batch_sizes=self.ours_batch_sizes or ((bs, 4 * bs) if gpu else (bs, 2 * bs)),
            planned_batch_sizes=self.planned_batch_sizes or ((256,) if gpu else (4,)),
            full_shape=(
                ("tiny" if self.shape == "tiny" else "3b")
                if self.full_shape == "auto"
                else self.full_shape
            ),
        )


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def device_slug(name: str) -> str:
    if name.startswith("CPU"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def versions() -> dict[str, str | None]:
    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cuda": torch.version.cuda,
    }


def default_out(device: str, date: str) -> Path:
    return Path("benchmarks") / "results" / f"gpu-{device_slug(device_name(device))}-{date}.json"


# ----------------------------------------------------------------------------- the run


class CaseError(RuntimeError):
    """A case that cannot run here (recorded, not fatal)."""


@dataclass
class Bench:
    """State of one run: options, the model cache, the rows so far, the JSON writer."""

    opts: BenchOptions
    log: Log
    out: Path
    result: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    models: dict[str, Any] = field(default_factory=dict)
    dtype: Any = None

    # -- infrastructure

    @property
    def device(self) -> str:
        return self.opts.device

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write(self) -> None:
        self.result.update(summarize(self.result))
        self.result["elapsed_s"] = round(self.elapsed(), 2)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps(self.result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.out)

    def wanted(self, name: str) -> bool:
        def hit(patterns: Sequence[str]) -> bool:
            return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)

        return (not self.opts.only or hit(self.opts.only)) and not hit(self.opts.skip)

    def case(self, name: str, kind: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one case, record its row (or its error), print a progress line, rewrite JSON."""
        if not self.wanted(name):
            return {}
        row: dict[str, Any] = {"name": name, "kind": kind}
        budget = self.opts.time_budget
        if budget is not None and self.elapsed() > budget:
            row.update(status="skipped", error=f"time budget of {budget:.0f} s spent")
        else:
            t0 = time.perf_counter()
            try:
                if self.cuda and not _cuda_available():
                    raise CaseError("CUDA is not available")
                reset_peak(self.device)
                row.update(fn())
                row["status"] = "ok"
            except Exception as exc:  # recorded, the run goes on (OOM, no CUDA, ...)
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                row.update(status="error", error=f"{type(exc).__name__}: {first}")
                # Where it broke: a device run is too dear to repeat just to find out.
                row["where"] = _last_frames(exc)
            row["wall_s"] = round(time.perf_counter() - t0, 3)
            free_memory(self.device)
        self.result["cases"].append(row)
        self.write()
        self.log(progress_line(row, self.elapsed()))
        return row

    # -- models

    def model(self, shape: str) -> Any:
        """The randomly initialised model of ``shape`` (built once; others are dropped first)."""
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        if shape in self.models:
            return self.models[shape]
        if shape in SHAPE_FILES and not self.cuda:
            raise CaseError(f"the {shape} shape needs CUDA here; use --shape tiny on CPU")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise CaseError("CUDA is not available")
        self.models.clear()
        free_memory(self.device)
        config = load_config(shape)
        config._attn_implementation = "sdpa"
        torch.manual_seed(self.opts.seed)
        t0 = time.perf_counter()
        with torch.device(self.device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(
                config, dtype=self.dtype, attn_implementation="sdpa"
            )
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        synchronize(self.device)
        self.log(f"[{self.elapsed():7.1f}s] built {shape} in {time.perf_counter() - t0:.1f} s")
        self.models[shape] = model
        return model

    def batch(self, model: Any, size: int, *, answer: bool, seed: int = 0) -> dict[str, Any]:
        return synthetic_batch(
            model.config,
            size,
            answer=answer,
            seed=self.opts.seed + seed,
            device=self.device,
            dtype=self.dtype,
        )

    # -- evaluation

    def generation_config(self, model: Any, *, sample: bool) -> Any:
        from transformers import GenerationConfig

        text = model.config.text_config
        extra = dict(CURRENT_SAMPLING) if sample else {"do_sample": False}
        return GenerationConfig(
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=text.pad_token_id,
            eos_token_id=text.eos_token_id,
            use_cache=True,
            **extra,
        )

    def generate(self, model: Any, batch: dict[str, Any], gen: Any) -> int:
        import torch

        with torch.inference_mode():
            out = model.generate(**batch, generation_config=gen)
        new = out.shape[1] - batch["input_ids"].shape[1]
        if new != NEW_TOKENS:
            raise CaseError(f"generated {new} tokens, not {NEW_TOKENS}")
        return out.shape[0]

    def eval_baseline(self, shape: str) -> dict[str, Any]:
        import torch

        model = self.model(shape)
        gen = self.generation_config(model, sample=True)
        lines = [
            self.batch(model, 1, answer=False, seed=i) for i in range(self.opts.baseline_lines)
        ]
        torch.manual_seed(self.opts.seed)
        self.generate(model, lines[0], gen)  # warm-up
        synchronize(self.device)
        t0 = time.perf_counter()
        for line in lines:
            self.generate(model, line, gen)
        synchronize(self.device)
        seconds = time.perf_counter() - t0
        return {
            "what": "batch 1, sampling (temperature 0.95, top_p 0.7, top_k 50), 48 new tokens",
            "batch_size": 1,
            "lines": len(lines),
            "seconds": seconds,
            "lines_per_s": len(lines) / seconds,
            "peak_gib": peak_gib(self.device),
        }

    def eval_ours(self, shape: str, size: int, *, static: bool = False) -> dict[str, Any]:
        """Greedy batches; ``static``: preallocated KV cache, which on CUDA makes transformers
        compile the decoding step (the untimed warm-up call pays the compilation)."""
        from vlm_retain.models.vision_attention import segment_attention_on

        model = self.model(shape)
        gen = self.generation_config(model, sample=False)
        if static:
            gen.cache_implementation = "static"
        batch = self.batch(model, size, answer=False)
        with segment_attention_on(model):  # as load_model sets it up for our backend
            self.generate(model, batch, gen)  # warm-up
            synchronize(self.device)
            t0 = time.perf_counter()
            for _ in range(self.opts.iters):
                self.generate(model, batch, gen)
            synchronize(self.device)
        seconds = time.perf_counter() - t0
        lines = size * self.opts.iters
        return {
            "what": f"greedy, batch {size}, left padding, 48 new tokens"
            + (", static KV cache (compiled decoding on CUDA)" if static else ""),
            "batch_size": size,
            "lines": lines,
            "seconds": seconds,
            "lines_per_s": lines / seconds,
            "peak_gib": peak_gib(self.device),
        }

    def vision_forward(self, shape: str, *, segments: bool = False) -> dict[str, Any]:
        """The frozen tower alone; ``segments``: one attention call per window size
        (:mod:`vlm_retain.models.vision_attention`) instead of transformers' per-window loop."""
        import torch

        from vlm_retain.models.vision_attention import segment_attention_on

        model = self.model(shape)
        batch = self.batch(model, self.opts.batch_size, answer=False)

        def once() -> None:
            with torch.inference_mode():
                model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])

        with segment_attention_on(model, segments):
            for _ in range(max(1, self.opts.warmup)):
                once()
            synchronize(self.device)
            t0 = time.perf_counter()
            for _ in range(self.opts.steps):
                once()
            synchronize(self.device)
        step = (time.perf_counter() - t0) / self.opts.steps
        how = "one attention call per window size" if segments else "per-window attention loop"
        return {
            "what": f"frozen vision tower forward, batch {self.opts.batch_size} lines, {how}",
            "batch_size": self.opts.batch_size,
            "step_s": step,
            "peak_gib": peak_gib(self.device),
        }

    # -- training

    def memory_plan(
        self,
        model: Any,
        base: Any,
        batch: dict[str, Any],
        objectives: list[Any],
        teacher: bool,
        optimizer: Any,
    ) -> Any:
        """``train.chunk_rows: auto`` for this batch: the trainer's trials and choice, measured
        by the CUDA allocator (on CPU: bytes saved for backward), capped at
        ``--memory-cap-gib`` to see what a smaller card would get."""
        from vlm_retain.models.checkpointing import set_checkpointing
        from vlm_retain.train.memory_plan import (
            GIB,
            CappedGauge,
            ChunkTrials,
            CudaGauge,
            SavedTensorGauge,
            choose_plan,
            step_reserve,
        )

        gauge: Any = CudaGauge(self.device) if self.cuda else SavedTensorGauge()
        if self.opts.memory_cap_gib:
            gauge = CappedGauge(gauge, self.opts.memory_cap_gib * GIB)
        size = int(batch["input_ids"].shape[0])
        trainable = [p for p in model.parameters() if p.requires_grad]
        trials = ChunkTrials(
            model=model,
            groups=[list(range(size))],
            collate=lambda rows: _rows_of(batch, rows),
            prepare=lambda chunk: chunk,
            loss=lambda m, chunk: training_loss(
                m, chunk, answer_logits=True, teacher=teacher, objectives=objectives
            ),
            set_checkpointing=lambda on: set_checkpointing(base, on),
            gauge=gauge,
            reserve_bytes=step_reserve(optimizer, trainable, batch_size=size, grad_accum=1),
        )
        return choose_plan(size, trials, "auto", trials.capacity_bytes / GIB)

    def train_case(
        self,
        shape: str,
        *,
        tuning: str,
        batch_size: int,
        answer_logits: bool = False,
        teacher: bool = False,
        checkpointing: bool = False,
        vision_cache: bool = False,
        replay_every: int | None = None,
        compiled: bool = False,
        planned: bool = False,
    ) -> dict[str, Any]:
        """Time ``steps`` optimizer steps (after ``warmup``) of one training setting.

        ``vision_cache`` (ours only) installs the trainer's vision-feature cache; the batch is
        the same every step, so after the first (warm-up) step the tower's output is reused,
        as from a run's second epoch on. ``replay_every`` (ours with the teacher) flags every
        n-th row as replay and runs the KL on those rows only, as ``vlm-retain train`` does with
        ``kl_to_base.scope: replay``; the reference forward then covers those rows alone.
        ``compiled`` (ours) compiles each decoder layer (``train.compile``); the warm-up steps
        (at least two) pay the compilation. ``planned`` (ours) runs ``train.chunk_rows: auto``:
        the memory plan's trials on this device (capped at ``--memory-cap-gib``), then steps of
        the whole micro-batch in the chunks it chose (the peak is that of the steps).
        """
        import torch

        from vlm_retain.models.checkpointing import set_checkpointing
        from vlm_retain.models.registry import get_family
        from vlm_retain.models.vision_attention import restore_attention, use_segment_attention
        from vlm_retain.train.presets import LoraOptions, TuningSpec, apply_tuning

        base = self.model(shape)
        base_names = {n for n, _ in base.named_parameters()}
        lora = LoraOptions(r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT)
        spec = TuningSpec.parse(tuning, lora=lora)
        try:
            tuned = apply_tuning(base, get_family("qwen2_5_vl"), spec)
        except BaseException:
            self.models.pop(shape, None)  # possibly half-wrapped: rebuild for the next case
            raise
        model = tuned.model
        optimizer = None
        cache = None
        losses: list[Any] = []
        # ours: the tower's attention as load_model sets it up (models/vision_attention)
        segments = answer_logits and use_segment_attention(base)
        try:
            if compiled:
                if not answer_logits:
                    raise CaseError("compilation is part of our step only")
                from vlm_retain.train.compile import compile_layers

                compile_layers(model, get_family("qwen2_5_vl"))
            if vision_cache:
                if not answer_logits:
                    raise CaseError("the vision-feature cache is part of our step only")
                from vlm_retain.train.vision_cache import VisionCache

                cache = VisionCache().install(model)
            trainable = [p for p in model.parameters() if p.requires_grad]
            n_trainable = sum(p.numel() for p in trainable)
            names = {n.removeprefix("base_model.model.") for n in tuned.trainable_names()}
            base_trainable = sum(
                p.numel() for n, p in base.named_parameters() if n in names and n in base_names
            )
            optimizer = torch.optim.AdamW(trainable, lr=LR)
            batch = self.batch(base, batch_size, answer=True)
            if (batch["attention_mask"] == 0).any():
                raise CaseError("training batches here must be padding-free")
            tokens = int(batch["attention_mask"].sum())
            if replay_every:
                if not (answer_logits and teacher):
                    raise CaseError("KL on replay rows is part of our step with the teacher only")
                batch["replay"] = torch.arange(batch_size, device=self.device) % replay_every == 0
            if checkpointing:
                set_checkpointing(base, True)
            model.train()
            if answer_logits:
                _require_kept_logits(model)
            scope = "replay" if replay_every else "all"
            objectives = our_objectives(model, teacher, on=scope) if answer_logits else None
            chunks: list[dict[str, Any]] = [batch]
            scales: list[Any] = [None]
            if planned:
                if not answer_logits:
                    raise CaseError("the memory plan is part of our step only")
                started = time.perf_counter()
                plan = self.memory_plan(model, base, batch, objectives, teacher, optimizer)
                checkpointing = plan.checkpointing  # turned off again below
                set_checkpointing(base, checkpointing)  # the choice, not the last trial's
                plan_row = {**plan.summary(), "plan_s": time.perf_counter() - started}
                chunks, scales = _chunked(batch, plan.rows, objectives)
                reset_peak(self.device)  # the steps' peak, not the trials'
            # a cached case fills the cache in an untimed step first; a compiled one compiles
            # the forward and the backward there
            warmup = self.opts.warmup
            if vision_cache or compiled:
                warmup = max(warmup, 2 if compiled else 1)
            for i in range(warmup + self.opts.steps):
                if i == warmup:
                    synchronize(self.device)
                    t0 = time.perf_counter()
                step_loss = 0.0
                for chunk, scale in zip(chunks, scales, strict=True):
                    loss = training_loss(
                        model,
                        chunk,
                        answer_logits=answer_logits,
                        teacher=teacher,
                        objectives=objectives,
                        scale=scale,
                    )
                    loss.backward()
                    step_loss = step_loss + loss.detach()  # the chunks' terms add up
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(step_loss)
            synchronize(self.device)
            step_s = (time.perf_counter() - t0) / self.opts.steps
            peak = peak_gib(self.device)
        finally:
            if segments:
                restore_attention(base)
            if compiled:
                from vlm_retain.train.compile import uncompile_layers

                uncompile_layers(model, get_family("qwen2_5_vl"))
            if cache is not None:
                cache.remove()
            if checkpointing or planned:  # the plan's trials may have left it on
                set_checkpointing(base, False)
            if optimizer is not None:
                optimizer.state.clear()
            model.eval()
            if spec.peft:
                model.unload()  # the base model again, adapters removed in place
            for param in base.parameters():
                param.requires_grad_(False)
                param.grad = None
        losses = [float(x) for x in losses]
        if not all(math.isfinite(x) for x in losses):
            raise CaseError(f"non-finite loss: {losses}")
        n_total = self.result["shapes"][shape]["params"]["total"]
        replay_rows = int(batch["replay"].sum()) if replay_every else batch_size
        teacher_share = replay_rows / batch_size if teacher else 0.0
        flops_token = (4 + 2 * teacher_share) * n_total + 2 * base_trainable
        tokens_s = tokens / step_s
        tflops = self.result["matmul"]["tflops"]
        row = {
            "what": describe(tuning, batch_size, answer_logits, teacher, checkpointing),
            "tuning": tuning,
            "batch_size": batch_size,
            "tokens_per_step": tokens,
            "step_s": step_s,
            "tokens_per_s": tokens_s,
            "trainable_params": n_trainable,
            "flops_per_token": flops_token,
            "mfu": tokens_s * flops_token / (tflops * 1e12) if tflops else None,
            "peak_gib": peak,
            "loss": losses[-1],
            "vision_attention": "segments" if segments else "sdpa",
        }
        if cache is not None:
            row["what"] += ", vision-feature cache (images repeat: epoch 2 on)"
            row["vision_cache"] = {"hits": cache.hits, "misses": cache.misses}
            if cache.hits == 0:
                raise CaseError("the vision-feature cache was never hit")
        if compiled:
            row["what"] += ", decoder layers compiled (torch.compile)"
        if planned:
            row["what"] += (
                f", memory plan: chunks of {plan_row['chunk_rows']}, gradient checkpointing "
                f"{'on' if plan_row['gradient_checkpointing'] else 'off'} ({plan_row['reason']})"
            )
            row["memory_plan"] = plan_row
        if replay_every:
            row["what"] += f", KL on replay rows only (1 in {replay_every})"
            row["replay_rows"] = int(batch["replay"].sum())
            # rows the reference forward left out, over all steps (none would mean no saving)
            row["reference_rows_skipped"] = objectives[-1].reference.rows_skipped
        return row


def _rows_of(batch: dict[str, Any], rows: Sequence[int]) -> dict[str, Any]:
    """The synthetic batch's ``rows`` (images included), as the collator would give them."""
    import torch

    from vlm_retain.train.batch_rows import select_rows

    keep = torch.zeros(batch["input_ids"].shape[0], dtype=torch.bool)
    keep[list(rows)] = True
    chunk = select_rows(batch, keep)
    if chunk is None:
        raise CaseError("this batch's rows cannot be cut")
    return chunk


def _chunked(batch: dict[str, Any], rows: int, objectives: list[Any]) -> tuple[list, list]:
    """``batch`` in chunks of ``rows`` and each chunk's objective scales (one chunk: None)."""
    from vlm_retain.train.chunks import chunk_scales, split_rows

    size = int(batch["input_ids"].shape[0])
    parts = split_rows(list(range(size)), rows)
    chunks = [batch] if len(parts) == 1 else [_rows_of(batch, part) for part in parts]
    return chunks, chunk_scales(objectives, chunks)


def _require_kept_logits(model: Any) -> None:
    """Refuse to time "ours" on a transformers whose forward lacks a boolean ``logits_to_keep``
    (before 5.24 the head indexes the mask as a slice and fails deep in the forward)."""
    import transformers

    from vlm_retain.train.positions import supports_kept_logits

    if not supports_kept_logits(model):
        raise CaseError(
            f"transformers {transformers.__version__} has no boolean logits_to_keep; "
            "install transformers>=5.24 (the version pyproject.toml requires)"
        )


def training_loss(
    model: Any,
    batch: dict[str, Any],
    *,
    answer_logits: bool,
    teacher: bool,
    objectives: list[Any] | None = None,
    scale: dict[str, float] | None = None,
) -> Any:
    """CE on the answer (+ 0.1 x KL(teacher || model) on the answer with the adapter disabled).

    The baseline (``answer_logits`` False) is plain HF+PEFT: the model's own loss over full
    logits and a hand-written teacher pass. Ours is the trainer's own step: its objectives
    (:class:`CrossEntropy`, :class:`KLToBase` with the adapter-disabled reference) and its
    forward with logits only where they read (:func:`forward_kept`), so the bench measures the
    code ``vlm-retain train`` runs; pass ``objectives`` (:func:`our_objectives`) to build
    them once per case rather than once per step; ``scale`` weights a chunk of a micro-batch
    (:mod:`~vlm_retain.train.chunks`).
    """
    import torch
    import torch.nn.functional as F

    if answer_logits:
        from vlm_retain.train.objectives import combine, model_inputs
        from vlm_retain.train.positions import forward_kept

        objectives = objectives if objectives is not None else our_objectives(model, teacher)
        inputs = {**model_inputs(batch), "use_cache": False}
        outputs = forward_kept(model, inputs, objectives, batch)
        total, _ = combine(objectives, batch, outputs, scale)
        return total
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, labels=labels, use_cache=False)
    loss, logits = out.loss, out.logits[:, :-1]
    if teacher:
        with torch.no_grad(), model.disable_adapter():
            ref = model(**inputs, use_cache=False).logits[:, :-1]
        mask = labels[:, 1:] != -100
        student = F.log_softmax(logits[mask].float(), dim=-1)
        base = F.log_softmax(ref[mask].float(), dim=-1)
        loss = loss + KL_WEIGHT * F.kl_div(student, base, log_target=True, reduction="batchmean")
    return loss


def our_objectives(model: Any, teacher: bool, on: str = "all") -> list[Any]:
    """The trainer's objectives for one case: cross-entropy, and with ``teacher`` the KL to the
    base through the adapter-disabled model (no second copy)."""
    from vlm_retain.train.kl import KLToBase
    from vlm_retain.train.objectives import CrossEntropy
    from vlm_retain.train.reference import ReferenceModel

    objectives: list[Any] = [CrossEntropy()]
    if teacher:
        objectives.append(KLToBase(ReferenceModel(model), weight=KL_WEIGHT, on=on))
    return objectives


def describe(tuning: str, batch: int, answer: bool, teacher: bool, ckpt: bool) -> str:
    what = {
        "lora": f"LoRA r={LORA_R} alpha={LORA_ALPHA:g} all LLM linears",
        "llm-attn": "selective: LLM attention projections, full rank",
        "full": "full fine-tuning, weights and AdamW states in the model dtype",
    }.get(tuning, tuning)
    parts = [what, f"batch {batch}"]
    parts.append("logits at answer positions" if answer else "full logits (model loss)")
    if teacher:
        parts.append("+ KL teacher pass (adapter disabled)")
    if ckpt:
        parts.append("gradient checkpointing")
    return ", ".join(parts)


def _last_frames(exc: BaseException, count: int = 4) -> list[str]:
    """The innermost ``count`` frames of ``exc`` as ``file:line in function`` strings."""
    frames = traceback.extract_tb(exc.__traceback__)[-count:]
    return [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]


def progress_line(row: dict[str, Any], elapsed: float) -> str:
    head = f"[{elapsed:7.1f}s] {row['name']}: "
    if row.get("status") != "ok":
        return head + f"{row.get('status')} ({row.get('error')})"
    bits = []
    if "lines_per_s" in row:
        bits.append(f"{row['lines_per_s']:.2f} lines/s")
    if "tokens_per_s" in row:
        bits.append(f"{row['tokens_per_s']:,.0f} tokens/s")
    if "step_s" in row:
        bits.append(f"{row['step_s']:.3f} s/step")
    if "mfu" in row:
        bits.append(f"MFU {100 * row['mfu']:.1f}%")
    if row.get("peak_gib") is not None:
        bits.append(f"peak {row['peak_gib']:.1f} GiB")
    return head + ", ".join(bits)


# ----------------------------------------------------------------------------- summary


def _rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in result.get("cases", []) if r.get("status") == "ok"}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures from the rows so far (None where a case is missing)."""
    rows = _rows(result)

    def get(name: str, key: str) -> Any:
        return rows.get(name, {}).get(key)

    ours_eval = [r for n, r in rows.items() if n.startswith("eval/ours-")]
    best_eval = max(ours_eval, key=lambda r: r["lines_per_s"], default=None)
    base_eval = get("eval/baseline", "lines_per_s")
    # ours = our step as `vlm-retain train` runs it by default on this device: with CUDA the
    # decoder layers are compiled (train.compile: auto), on CPU they are not
    on_cuda = str(result.get("options", {}).get("device", "")).startswith("cuda")
    compiled = "(-compiled)?" if on_cuda else ""
    ours_train = [r for n, r in rows.items() if re.fullmatch(rf"train/ours{compiled}-b\d+", n)]
    best = max(ours_train, key=lambda r: r["tokens_per_s"], default=None)
    ours_warm = [r for n, r in rows.items() if re.fullmatch(rf"train/ours{compiled}-vc-b\d+", n)]
    # any of our settings without the KL, opt-in ones (compile) and from epoch 2 (cache) too
    ours_any = [
        (n, r) for n, r in rows.items() if re.fullmatch(r"train/ours(-compiled)?(-vc)?-b\d+", n)
    ]
    top_name, top = max(ours_any, key=lambda nr: nr[1]["tokens_per_s"], default=(None, None))
    warm = max(ours_warm, key=lambda r: r["tokens_per_s"], default=None)
    base_tok = get("train/lora", "tokens_per_s")

    def ratio(a: Any, b: Any) -> float | None:
        return a / b if a is not None and b else None

    def overhead(with_kl: str, without: str) -> float | None:
        a, b = get(with_kl, "step_s"), get(without, "step_s")
        return a / b - 1 if a is not None and b else None

    sizes = result.get("options", {}).get("ours_batch_sizes") or [None]
    first_ours, large = sizes[0], sizes[-1]
    kl_pair = (f"train/ours-kl-b{first_ours}", f"train/ours-b{first_ours}")
    return {
        "eval": {
            "baseline_lines_per_s": base_eval,
            "ours_lines_per_s": best_eval["lines_per_s"] if best_eval else None,
            "ours_batch_size": best_eval["batch_size"] if best_eval else None,
            "ours_what": best_eval["what"] if best_eval else None,
            "speedup": ratio(best_eval["lines_per_s"] if best_eval else None, base_eval),
        },
        "train": {
            "baseline_tokens_per_s": base_tok,
            "baseline_step_s": get("train/lora", "step_s"),
            "baseline_mfu": get("train/lora", "mfu"),
            "baseline_peak_gib": get("train/lora", "peak_gib"),
            "ours_tokens_per_s": best["tokens_per_s"] if best else None,
            "ours_step_s": best["step_s"] if best else None,
            "ours_batch_size": best["batch_size"] if best else None,
            "ours_method": OURS_METHOD.format(batch=best["batch_size"]) if best else None,
            "ours_what": best["what"] if best else None,
            "speedup": ratio(best["tokens_per_s"] if best else None, base_tok),
            "mfu": best["mfu"] if best else None,
            "peak_gib": best["peak_gib"] if best else None,
            "kl_overhead": overhead(*kl_pair),
            "kl_replay_overhead": overhead(
                f"train/ours-klr-b{first_ours}", f"train/ours-b{first_ours}"
            ),
            "ours_warm_tokens_per_s": warm["tokens_per_s"] if warm else None,
            "ours_warm_batch_size": warm["batch_size"] if warm else None,
            "ours_warm_what": warm["what"] if warm else None,
            "warm_speedup": ratio(warm["tokens_per_s"] if warm else None, base_tok),
            "warm_mfu": warm["mfu"] if warm else None,
            "warm_peak_gib": warm["peak_gib"] if warm else None,
            "compiled_tokens_per_s": get(f"train/ours-compiled-b{first_ours}", "tokens_per_s"),
            "compiled_speedup": ratio(
                get(f"train/ours-compiled-b{first_ours}", "tokens_per_s"), base_tok
            ),
            "warm_kl_overhead": overhead(
                f"train/ours-kl-vc-b{first_ours}", f"train/ours-vc-b{first_ours}"
            ),
            "baseline_kl_overhead": overhead("train/lora-kl", "train/lora"),
            "kl_replay_overhead_large": overhead(
                f"train/ours-klr-b{large}", f"train/ours-b{large}"
            ),
            "kl_replay_overhead_all_on": overhead(
                f"train/ours-klr-compiled-vc-b{large}", f"train/ours-compiled-vc-b{large}"
            ),
            "best_case": top_name,
            "best_tokens_per_s": top["tokens_per_s"] if top else None,
            "best_speedup": ratio(top["tokens_per_s"] if top else None, base_tok),
            "best_mfu": top["mfu"] if top else None,
            "best_peak_gib": top["peak_gib"] if top else None,
            "gc_slowdown": ratio(get("train/lora-gc", "step_s"), get("train/lora", "step_s")),
            "vision_share_of_lora_step": ratio(
                get("probe/vision-forward", "step_s"), get("train/lora", "step_s")
            ),
            "vision_segments_speedup": ratio(
                get("probe/vision-forward", "step_s"),
                get("probe/vision-forward-segments", "step_s"),
            ),
            "selective_tokens_per_s": get("train/llm-attn", "tokens_per_s"),
            "full_tokens_per_s": get("train/full", "tokens_per_s"),
            "full_peak_gib": get("train/full", "peak_gib"),
            **_planned_summary(rows, base_tok),
        },
    }


def _planned_summary(rows: dict[str, dict[str, Any]], base_tok: Any) -> dict[str, Any]:
    """The memory-planned case with the largest micro-batch: its choice and its speed."""
    planned = [r for n, r in rows.items() if re.fullmatch(r"train/ours-planned-b\d+", n)]
    top = max(planned, key=lambda r: r["batch_size"], default=None)
    plan = (top or {}).get("memory_plan") or {}
    tokens = top["tokens_per_s"] if top else None
    return {
        "planned_batch_size": top["batch_size"] if top else None,
        "planned_chunk_rows": plan.get("chunk_rows"),
        "planned_checkpointing": plan.get("gradient_checkpointing"),
        "planned_trials": len(plan["trials"]) if plan else None,
        "planned_plan_s": plan.get("plan_s"),
        "planned_tokens_per_s": tokens,
        "planned_speedup": tokens / base_tok if tokens is not None and base_tok else None,
        "planned_peak_gib": top["peak_gib"] if top else None,
    }


def print_table(result: dict[str, Any], log: Log) -> None:
    """One table of every case (rich when installed, plain text otherwise)."""
    head = ["case", "what", "batch", "s/step", "lines/s", "tokens/s", "MFU", "peak GiB"]
    body = []
    for r in result["cases"]:
        if r.get("status") != "ok":
            body.append([r["name"], f"{r.get('status')}: {r.get('error')}", "", "", "", "", "", ""])
            continue

        def fmt(key: str, spec: str, r: dict[str, Any] = r) -> str:
            value = r.get(key)
            return format(value, spec) if value is not None else ""

        body.append(
            [
                r["name"],
                r.get("what", ""),
                str(r.get("batch_size", "")),
                fmt("step_s", ".3f"),
                fmt("lines_per_s", ".2f"),
                fmt("tokens_per_s", ",.0f"),
                fmt("mfu", ".1%"),
                fmt("peak_gib", ".1f"),
            ]
        )
    s = result
    title = (
        f"{result['device']} | {result['shape']['name']} "
        f"({_params(result['shape']['params']['total'])} params) | "
        f"matmul {_num(result['matmul']['tflops'])} TFLOP/s {result['matmul']['dtype']}"
    )
    foot = (
        f"eval: baseline {_num(s['eval']['baseline_lines_per_s'])} lines/s, ours "
        f"{_num(s['eval']['ours_lines_per_s'])} (batch {s['eval']['ours_batch_size']}), "
        f"x{_num(s['eval']['speedup'])}; train: baseline "
        f"{_num(s['train']['baseline_tokens_per_s'])} tokens/s, ours "
        f"{_num(s['train']['ours_tokens_per_s'])}, x{_num(s['train']['speedup'])}, "
        f"KL overhead {_num(s['train']['kl_overhead'])}; from epoch 2 (vision cache): "
        f"{_num(s['train']['ours_warm_tokens_per_s'])} tokens/s, "
        f"x{_num(s['train']['warm_speedup'])}, KL overhead {_num(s['train']['warm_kl_overhead'])}; "
        f"best: {s['train']['best_case']} {_num(s['train']['best_tokens_per_s'])} tokens/s, "
        f"x{_num(s['train']['best_speedup'])}"
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        log(title)
        log(" | ".join(head))
        for row in body:
            log(" | ".join(row))
        log(foot)
        return
    table = Table(title=title, caption=foot)
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i < 2 else "right", overflow="fold")
    for row in body:
        table.add_row(*row)
    Console(width=max(Console().width, 160)).print(table)


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


# ----------------------------------------------------------------------------- entry points


def run_benchmark(options: BenchOptions, *, log: Log | None = None) -> dict[str, Any]:
    """Run every wanted case of ``options``; return the result dict (also written as JSON)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    log = log or (lambda line: print(line, flush=True))
    with warnings.catch_warnings():
        # transformers' renames, triggered inside PEFT and checkpointing: not ours to fix
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
        return _run(options, log)


def _run(options: BenchOptions, log: Log) -> dict[str, Any]:
    import torch

    if options.shape not in SHAPES and not Path(options.shape).is_file():
        raise FileNotFoundError(f"unknown shape {options.shape!r}: use {', '.join(SHAPES)}")
    device = pick_device(options.device)
    opts = options.resolved(device)
    now = _dt.datetime.now(_dt.UTC)
    out = Path(opts.out) if opts.out else default_out(device, now.strftime("%Y-%m-%d"))
    cuda = device.startswith("cuda")
    shape_names = [opts.shape] + ([opts.full_shape] if opts.full_shape not in ("none",) else [])
    shapes = {}
    for name in dict.fromkeys(shape_names):
        shapes[name] = shape_info(name, load_config(name))
    result: dict[str, Any] = {
        "benchmark": "vlm-retain bench gpu",
        "device": device_name(device),
        "device_kind": "cuda" if cuda else "cpu",
        "device_memory_gib": (
            torch.cuda.get_device_properties(device).total_memory / 2**30
            if cuda and torch.cuda.is_available()
            else None
        ),
        "versions": versions(),
        "date": now.strftime("%Y-%m-%d"),
        "timestamp": now.isoformat(timespec="seconds"),
        "shape": shapes[opts.shape],
        "shapes": shapes,
        "input": {
            "image": f"{LINE_W}x{LINE_H}",
            "image_tokens": image_tokens_per_line(load_config(opts.shape)),
            "prompt_text_tokens": PROMPT_BEFORE + PROMPT_AFTER,
            "answer_tokens": ANSWER_TOKENS,
            "tokens_per_sample": PROMPT_BEFORE
            + PROMPT_AFTER
            + 2
            + image_tokens_per_line(load_config(opts.shape))
            + ANSWER_TOKENS,
            "new_tokens": NEW_TOKENS,
        },
        "dtype": "bfloat16" if cuda else "float32",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "settings": {
            "baseline_sampling": CURRENT_SAMPLING,
            "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "dropout": LORA_DROPOUT},
            "optimizer": f"torch.optim.AdamW lr={LR}",
            "attention": "sdpa",
            "flops_per_token": "4N (+2N per teacher pass) + 2 x trainable base params; "
            "N = all parameters",
        },
        "matmul": {"dtype": None, "n": None, "tflops": None, "error": None},
        "eval": {},
        "train": {},
        "cases": [],
    }
    bench = Bench(opts, log, out, result)
    bench.dtype = torch.bfloat16 if cuda else torch.float32
    if cuda and not torch.cuda.is_available():
        bench.log("CUDA is not available: every case will be recorded as an error")
    log(
        f"vlm-retain bench gpu: {result['device']}, shape {opts.shape} "
        f"({_params(shapes[opts.shape]['params']['total'])} params), writing {out}"
    )
    try:
        result["matmul"] = matmul_rate(device)
        log(f"[{bench.elapsed():7.1f}s] matmul: {result['matmul']['tflops']:.1f} TFLOP/s")
    except Exception as exc:  # no CUDA: recorded, every case will say so too
        result["matmul"]["error"] = f"{type(exc).__name__}: {exc}"
        log(f"matmul rate not measured: {result['matmul']['error']}")
    free_memory(device)
    bench.write()
    run_cases(bench)
    bench.write()
    if not opts.quiet:
        print_table(result, log)
    log(f"wrote {out}")
    return result


def run_cases(bench: Bench) -> None:
    o, shape = bench.opts, bench.opts.shape
    bench.case("eval/baseline", "eval", lambda: bench.eval_baseline(shape))
    for size in o.eval_batch_sizes:
        bench.case(f"eval/ours-b{size}", "eval", lambda size=size: bench.eval_ours(shape, size))
    bench.case("probe/vision-forward", "probe", lambda: bench.vision_forward(shape))
    bench.case(
        "probe/vision-forward-segments",
        "probe",
        lambda: bench.vision_forward(shape, segments=True),
    )
    bs = o.batch_size
    train = bench.train_case

    def ours(name: str, size: int, **settings: Any) -> None:
        """One case of our LoRA step (answer-only logits) at micro-batch ``size``."""
        bench.case(
            name,
            "train",
            lambda: train(shape, tuning="lora", batch_size=size, answer_logits=True, **settings),
        )

    bench.case("train/lora", "train", lambda: train(shape, tuning="lora", batch_size=bs))
    bench.case(
        "train/lora-kl", "train", lambda: train(shape, tuning="lora", batch_size=bs, teacher=True)
    )
    for i, size in enumerate(o.ours_batch_sizes):
        ours(f"train/ours-b{size}", size)
        if i == 0:
            ours(f"train/ours-kl-b{size}", size, teacher=True)
            ours(f"train/ours-klr-b{size}", size, teacher=True, replay_every=REPLAY_EVERY)
    for i, size in enumerate(o.ours_batch_sizes):
        for kl in (False, True) if i == 0 else (False,):
            ours(f"train/ours{'-kl' if kl else ''}-vc-b{size}", size, teacher=kl, vision_cache=True)
    bench.case(
        "train/lora-gc",
        "train",
        lambda: train(shape, tuning="lora", batch_size=bs, checkpointing=True),
    )
    bench.case("train/llm-attn", "train", lambda: train(shape, tuning="llm-attn", batch_size=bs))
    if o.full_shape != "none":
        bench.case("train/full", "train", lambda: train(o.full_shape, tuning="full", batch_size=bs))
    # last: compilation takes a while, and a time budget should cut these first
    first, large = o.ours_batch_sizes[0], o.ours_batch_sizes[-1]
    ours(f"train/ours-compiled-b{first}", first, compiled=True)
    if large != first:  # everything together at the large micro-batch, with and without KL
        for kl, compiled, cached in LARGE_COMBINATIONS:
            name = "train/ours" + ("-klr" if kl else "") + ("-compiled" if compiled else "")
            ours(
                name + ("-vc" if cached else "") + f"-b{large}",
                large,
                teacher=kl,
                replay_every=REPLAY_EVERY if kl else None,
                compiled=compiled,
                vision_cache=cached,
            )
    for size in o.planned_batch_sizes:  # train.chunk_rows: auto, as the trainer runs it
        ours(f"train/ours-planned-b{size}", size, compiled=bench.cuda, planned=True)
    for size in o.static_batch_sizes:
        bench.case(
            f"eval/ours-static-b{size}",
            "eval",
            lambda size=size: bench.eval_ours(shape, size, static=True),
        )


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_gpu.py",
        description="Real-shape evaluation and training throughput, plain path against ours.",
    )
    parser.add_argument("--shape", default="7b", help="7b, 3b, tiny or a config JSON path")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (5 / 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (2 / 1)")
    parser.add_argument("--iters", type=int, default=None, help="timed generate calls (2 / 1)")
    parser.add_argument("--baseline-lines", type=int, default=None, help="lines, batch 1 (6/2)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (16 / 2)")
    parser.add_argument("--eval-batch-sizes", type=_sizes, default=None, help="e.g. 32,64,128")
    parser.add_argument("--static-batch-sizes", type=_sizes, default=None, help="e.g. 256")
    parser.add_argument("--ours-batch-sizes", type=_sizes, default=None, help="e.g. 16,64")
    parser.add_argument(
        "--planned-batch-sizes", type=_sizes, default=None, help="memory-planned batches (256/4)"
    )
    parser.add_argument(
        "--memory-cap-gib", type=float, default=None, help="plan as on a card with this much"
    )
    parser.add_argument("--full-shape", default="auto", help="auto (3b; tiny), 3b, 7b, none")
    parser.add_argument("--only", type=_names, default=(), help="case names or prefixes*")
    parser.add_argument("--skip", type=_names, default=(), help="case names or prefixes*")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds; then skip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", "-q", action="store_true", help="no table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Plain-script entry point (``benchmarks/bench_gpu.py``)."""
    args = build_parser().parse_args(argv)
    options = BenchOptions(**vars(args))
    run_benchmark(options)
    return 0
