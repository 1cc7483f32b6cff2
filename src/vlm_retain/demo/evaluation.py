"""How the demo evaluates a model: the same runner as ``vlm-retain eval``, on the demo's data.

Each model gets two folders: ``main`` (manuscript OCR plus the world's VQA, captions and
retrieval: what the report reads, target against general skills) and ``print`` (OCR on printed
lines: the base must read print, and a fine-tune can forget that too). The OCR prompt is the
short one the demo trains with (``recipe.OCR_PROMPT``), recorded in every task's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from vlm_retain.demo import recipe
from vlm_retain.evaluate.results import read_results

#: The world's general tasks the demo scores (flickr30k would repeat coco on the same images).
GENERAL_TASKS = ("vqav2", "coco", "coco-retrieval")
#: Lines are one or two words and captions one short sentence.
MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class DemoEval:
    """Where the held-out data is and how many items each task scores."""

    world: Path
    manuscripts: Path
    printed: Path | None
    limit: int
    batch_size: int = 32
    resamples: int = 200


def evaluate_model(model: Path, adapter: Path | None, spec: DemoEval, out: Path) -> dict[str, Path]:
    """Evaluate ``model`` (+ ``adapter``) into ``out/main`` and ``out/print``; return both."""
    from vlm_retain.evaluate.runner import EvalSettings, Runner, discover

    settings = EvalSettings(
        model=str(model),
        adapter=str(adapter) if adapter else None,
        limit=spec.limit,
        max_new_tokens=MAX_NEW_TOKENS,
        batch_size=spec.batch_size,
        resamples=spec.resamples,
        ocr_prompt=recipe.OCR_PROMPT,
    )
    quiet = Console(quiet=True)
    runner = Runner(settings, out / "main", console=quiet, progress=False)
    tasks = discover("ocr", [spec.manuscripts])
    general = discover("general", [spec.world])
    tasks.update({name: general[name] for name in GENERAL_TASKS})
    runner.run(tasks)
    folders = {"main": out / "main"}
    if spec.printed is not None:
        printed = Runner(
            settings, out / "print", console=quiet, progress=False, loaded=runner.loaded
        )
        printed.run(discover("ocr", [spec.printed]))
        folders["print"] = out / "print"
    return folders


def headline(folders: dict[str, Path]) -> dict[str, Any]:
    """The numbers the demo prints: CER and exact lines on manuscripts and print, VQA
    accuracy, caption CIDEr, retrieval R@1 (text to image)."""
    main = folders["main"]
    scores: dict[str, Any] = {
        "manuscript_cer": _metric(main / "ocr", "cer"),
        "manuscript_exact": _metric(main / "ocr", "line_accuracy"),
        "vqa_accuracy": _metric(main / "vqav2", "accuracy"),
        "caption_cider": _metric(main / "coco", "cider"),
        "retrieval_r1": _metric(main / "coco-retrieval", "t2i_r1"),
    }
    if "print" in folders:
        scores["print_cer"] = _metric(folders["print"] / "ocr", "cer")
        scores["print_exact"] = _metric(folders["print"] / "ocr", "line_accuracy")
    return scores


def _metric(task_dir: Path, name: str) -> float | None:
    file = task_dir / "results.json"
    if not file.is_file():
        return None
    value = read_results(file)["metrics"].get(name)
    return round(float(value), 4) if isinstance(value, int | float) else None
