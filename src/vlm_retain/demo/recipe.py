"""What the demo is made of: its synthetic data, its tiny base, and how that base is trained.

One place for every number, so ``demo build-base`` (which pretrains the shipped base) and
``demo`` (which fine-tunes it) always agree on the world, the lines and the prompts.

Why this world and these lines (research/demo-feasibility.md and our own probes):

- **An easier world.** Three kinds, four colours, at most two shapes, and the four question
  families a sub-million-parameter model can master on a CPU (colour, shape, count, exists).
  Relations, extremes and attribute counts take it far longer.
- **A closed vocabulary.** Lines are one or two words from a fixed list of pseudo-words per
  language (``--lexicon``), in print for pretraining and in manuscript hands for fine-tuning.
  Reading an open vocabulary letter by letter stayed at the letter-frequency prior after 1,000
  steps; whole-word recognition over a closed list is learnt in a few hundred. So the demo shows
  a real shift of hand (print read well, manuscripts not), not a model learning to read at all.
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
    """

    scenes: int
    print_per_lang: int
    steps: int
    batch_size: int = 32
    lr: float = 2.0e-3
    eval_limit: int = 200


BASE_SCALES = {
    "shipped": BaseScale(scenes=6000, print_per_lang=1500, steps=6000),
    "test": BaseScale(scenes=600, print_per_lang=200, steps=250, eval_limit=64),
}


def world_options(scale: BaseScale | None = None, *, workers: int = 2) -> WorldOptions:
    n = scale.scenes if scale else WORLD.n
    return replace(WORLD, n=n, workers=workers)


def print_options(scale: BaseScale | None = None, *, workers: int = 2) -> HtrOptions:
    per_lang = scale.print_per_lang if scale else PRINT_LINES.per_lang
    return replace(PRINT_LINES, per_lang=per_lang, workers=workers)


def base_train_config(
    model: Path, world: Path, printed: Path, out: Path, scale: BaseScale
) -> dict[str, Any]:
    """The pretraining run: full fine-tuning of a fresh tiny model on world VQA, world captions
    and printed lines, with the world's VQA as the probe and held-out print as eval."""
    return {
        "name": "demo-base",
        "model": {"path": str(model)},
        "tuning": {"mode": "full"},
        "data": {
            "target": [
                {"manifest": str(world), "tasks": ["vqa", "caption"]},
                {"manifest": str(printed)},
            ],
            "prompt": OCR_PROMPT,
            "eval": {"manifest": str(printed), "split": "val", "limit": 128},
        },
        "probe": {"data": str(world), "every_steps": max(50, scale.steps // 12), "limit": 200},
        "train": {
            "seed": 0,
            "max_steps": scale.steps,
            "batch_size": scale.batch_size,
            "lr": scale.lr,
            "warmup_ratio": 0.03,
            "gradient_checkpointing": "off",
            "precision": "fp32",
            "save_every_steps": max(50, scale.steps // 6),
            "keep_checkpoints": 1,
            "output_dir": str(out),
        },
    }
