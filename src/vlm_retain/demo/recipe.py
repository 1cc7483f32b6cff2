"""What the demo is made of: its synthetic data, its tiny base, and how that base is trained.

One place for every number, so ``demo build-base`` (which pretrains the shipped base) and
``demo`` (which fine-tunes it) always agree on the world, the lines and the prompts.

Why this world and these lines (research/demo-feasibility.md and our own probes):

- **An easier world.** Three kinds, four colours, at most two shapes, and the four question
  families a sub-million-parameter model can master on a CPU (colour, shape, count, exists).
  Relations, extremes and attribute counts take it far longer.
- **A closed vocabulary.** Lines are words from a fixed list of pseudo-words per language
  (``--lexicon``): one to three in print for pretraining, one or two in manuscript hands for
  fine-tuning. Reading an open vocabulary letter by letter stayed at the letter-frequency prior
  after 1,000 steps; over a closed list, and with a reading-first curriculum, the base reads
  print (CER 0.11) and not the hands (0.82). So the demo shows a real shift of hand, not a model
  learning to read at all.
- **The same words, other lines.** Print and manuscripts draw their lines with different seeds
  from the same word list, so fine-tuning teaches the hands, not new words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vlm_retain.data.synthetic.htr import HtrOptions
from vlm_retain.data.synthetic.world import WorldOptions

LANGS = ("ru", "en", "it", "ar")
LEXICON = 40
WORDS = (1, 2)
PRINT_SEED, MANUSCRIPT_SEED, WORLD_SEED = 1, 2, 3
MODEL_FAMILY, MODEL_SIZE, MODEL_SEED, INIT_STD = "qwen2_5_vl", "s", 0, 0.1
OCR_PROMPT = "Transcribe the text."

WORLD = WorldOptions(
    n=6000,
    seed=WORLD_SEED,
    kinds=("circle", "square", "triangle"),
    colours=("red", "green", "blue", "yellow"),
    families=("color", "shape", "count", "exists"),
    max_shapes=2,
    sign_share=0.0,
    questions_per_image=4,
)
PRINT_LINES = HtrOptions(
    langs=LANGS, per_lang=1500, seed=PRINT_SEED, style="print", words=WORDS, lexicon=LEXICON
)
MANUSCRIPT_LINES = HtrOptions(
    langs=LANGS, per_lang=1000, seed=MANUSCRIPT_SEED, words=WORDS, lexicon=LEXICON
)


@dataclass(frozen=True)
class BaseScale:
    """How much data and how many steps ``demo build-base`` uses.

    ``shipped`` made the base that ships with the package; ``test`` is the reduced scale a
    test runs to check that the recipe learns at all (minutes on two cores).

    ``read_steps`` is a reading-first curriculum: that many steps on printed lines alone before
    the world joins. A tiny model trained on both from the start learns the world and leaves
    the letters in the image unused (it guesses words from the language's word list); given all
    of the gradient, reading starts (research notes in docs/demo.md).
    """

    name: str
    scenes: int
    print_per_lang: int
    steps: int
    batch_size: int = 32
    lr: float = 2.0e-3
    print_weight: float = 3.0
    eval_limit: int = 200
    eval_lines_per_lang: int = 100
    read_steps: int = 0
    read_lr: float = 2.0e-3
    print_words: tuple[int, int] = WORDS
    model_size: str = MODEL_SIZE


BASE_SCALES = {
    "shipped": BaseScale(
        "shipped",
        scenes=6000,
        print_per_lang=8000,
        steps=6000,
        print_weight=0.5,
        read_steps=10000,
        print_words=(1, 3),
    ),
    "test": BaseScale(
        "test",
        scenes=400,
        print_per_lang=200,
        steps=200,
        eval_limit=32,
        eval_lines_per_lang=20,
        read_steps=60,
        print_words=(1, 3),
    ),
}


def world_options(scale: BaseScale | None = None, *, workers: int = 2) -> WorldOptions:
    n = scale.scenes if scale else WORLD.n
    return replace(WORLD, n=n, workers=workers)


def print_options(scale: BaseScale | None = None, *, workers: int = 2) -> HtrOptions:
    if scale is None:
        return replace(PRINT_LINES, workers=workers)
    return replace(
        PRINT_LINES, per_lang=scale.print_per_lang, words=scale.print_words, workers=workers
    )


def manuscript_options(per_lang: int, *, workers: int = 2) -> HtrOptions:
    return replace(MANUSCRIPT_LINES, per_lang=per_lang, workers=workers)


def base_train_config(
    model: Path, world: Path, printed: Path, out: Path, scale: BaseScale
) -> dict[str, Any]:
    """The pretraining run: full fine-tuning of a tiny model (fresh, or fresh from the reading
    phase) on world VQA, world captions and printed lines, with the world's VQA as the probe
    and held-out print as eval."""
    target = [
        {"manifest": str(world), "tasks": ["vqa", "caption"]},
        {"manifest": str(printed), "weight": scale.print_weight},
    ]
    probe = {"data": str(world), "every_steps": max(50, scale.steps // 12), "limit": 200}
    return _pretrain_config("demo-base", model, target, printed, probe, out, scale, scale.steps)


def read_train_config(model: Path, printed: Path, out: Path, scale: BaseScale) -> dict[str, Any]:
    """The reading phase of the curriculum: printed lines only, held-out print as eval."""
    target = [{"manifest": str(printed)}]
    reading = replace(scale, lr=scale.read_lr)
    return _pretrain_config(
        "demo-base-read", model, target, printed, {}, out, reading, scale.read_steps
    )


def _pretrain_config(
    name: str,
    model: Path,
    target: list[dict[str, Any]],
    printed: Path,
    probe: dict[str, Any],
    out: Path,
    scale: BaseScale,
    steps: int,
) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"path": str(model)},
        "tuning": {"mode": "full"},
        "data": {
            "target": target,
            "prompt": OCR_PROMPT,
            "eval": {"manifest": str(printed), "split": "val", "limit": 128},
        },
        "probe": probe,
        "train": {
            "seed": 0,
            "max_steps": steps,
            "batch_size": scale.batch_size,
            "lr": scale.lr,
            "warmup_ratio": 0.03,
            "gradient_checkpointing": "off",
            "precision": "fp32",
            "save_every_steps": max(50, steps // 6),
            "keep_checkpoints": 1,
            "output_dir": str(out),
        },
    }


# --- the fine-tuning recipes the demo compares -----------------------------------------------

#: Seeds of the demo's own world and printed lines: other scenes and lines than the base was
#: pretrained on, so its held-out scores are held out from pretraining too.
DEMO_WORLD_SEED, DEMO_PRINT_SEED = 4, 5


@dataclass(frozen=True)
class Recipe:
    """One way to fine-tune the base on manuscripts: what trains, and what holds it back."""

    name: str
    slug: str
    tuning: dict[str, Any]
    lr: float
    replay_share: float = 0.0
    kl: float = 0.0
    l2sp: float = 0.0
    ewc: float = 0.0


#: No LoRA dropout: on CPU its random masks took a fifth of a LoRA step of this tiny model.
_LORA = {
    "mode": "lora",
    "lora": {"r": 16, "dropout": 0.0, "targets": ["llm", "vision", "projector"]},
}
#: Full-rank recipes train at the base's own pretraining rate (2e-3), LoRA a little higher, as is
#: usual. At 4e-3 full fine-tuning wipes the world out (VQA 0.81 -> 0.37, CIDEr 2.4 -> 0.02),
#: at 1e-3 it barely moves; both were measured on the shipped base.
RECIPES: tuple[Recipe, ...] = (
    Recipe("full FT", "full", {"mode": "full"}, lr=2.0e-3),
    Recipe("LoRA", "lora", _LORA, lr=3.0e-3),
    Recipe("LoRA+replay+KL", "lora-replay-kl", _LORA, lr=3.0e-3, replay_share=0.25, kl=1.0),
    Recipe("llm-attn+vision", "selective", {"mode": "llm-attn+vision"}, lr=2.0e-3),
    Recipe("full FT+L2-SP", "full-l2sp", {"mode": "full"}, lr=2.0e-3, l2sp=1.0),
)
FULL_FT = "full"


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is: ``full`` (``make demo``) or ``quick`` (a smoke test)."""

    name: str
    manuscript_per_lang: int
    print_per_lang: int
    scenes: int
    steps: int
    eval_limit: int
    alphas: tuple[float, ...]
    batch_size: int = 32


DEMO_SCALES = {
    "full": DemoScale(
        "full",
        manuscript_per_lang=1000,
        print_per_lang=200,
        scenes=600,
        steps=400,
        eval_limit=200,
        alphas=(0.25, 0.5, 0.75),
    ),
    "quick": DemoScale(
        "quick",
        manuscript_per_lang=200,
        print_per_lang=20,
        scenes=150,
        steps=40,
        eval_limit=40,
        alphas=(0.5,),
    ),
}


def demo_world(scale: DemoScale, *, workers: int = 2) -> WorldOptions:
    return replace(WORLD, n=scale.scenes, seed=DEMO_WORLD_SEED, workers=workers)


def demo_print(scale: DemoScale, *, workers: int = 2) -> HtrOptions:
    return replace(
        PRINT_LINES, per_lang=scale.print_per_lang, seed=DEMO_PRINT_SEED, workers=workers
    )


def finetune_config(
    chosen: Recipe, base: Path, manuscripts: Path, world: Path, out: Path, scale: DemoScale
) -> dict[str, Any]:
    """The ``train`` config of one recipe: manuscripts as the target, world replay and the
    anchors as the recipe says, the world's VQA as the probe."""
    data: dict[str, Any] = {"target": [{"manifest": str(manuscripts)}], "prompt": OCR_PROMPT}
    if chosen.replay_share:
        data["replay"] = [{"world": str(world), "tasks": ["vqa", "caption"]}]
        data["replay_share"] = chosen.replay_share
    objectives: dict[str, Any] = {}
    if chosen.kl:
        objectives["kl_to_base"] = {"weight": chosen.kl, "scope": "replay"}
    if chosen.l2sp:
        objectives["l2sp"] = {"weight": chosen.l2sp}
    if chosen.ewc:
        objectives["ewc"] = {
            "weight": chosen.ewc,
            "data": str(world),
            "cache_dir": str(out.parent / "fisher"),
        }
    return {
        "name": f"demo-{chosen.slug}",
        "model": {"path": str(base)},
        "tuning": chosen.tuning,
        "data": data,
        "objectives": objectives,
        "probe": {"data": str(world), "every_steps": max(10, scale.steps // 2), "limit": 64},
        "train": {
            "seed": 0,
            "max_steps": scale.steps,
            "batch_size": scale.batch_size,
            "lr": chosen.lr,
            "warmup_ratio": 0.06,
            "gradient_checkpointing": "off",
            "precision": "fp32",
            "save_every_steps": scale.steps,
            "keep_checkpoints": 1,
            "output_dir": str(out),
        },
    }
