"""``vlm-retain transcribe``: read a user's own line images with a chosen model.

What an archive team runs after choosing a model: images (a manifest, a folder, files) in, one
JSON line per image out, resumable after an interruption. The work is done by
:mod:`vlm_retain.evaluate.generate`; this module only turns options into calls.
Registered in ``cli/main.py`` as ``app.command("transcribe")(transcribe_cli.transcribe)``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from vlm_retain.evaluate.generate.prompts import DEFAULT_OCR_PROMPT

console = Console()


def transcribe(
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="IMAGES_OR_MANIFEST...",
        help="A manifest (folder or .jsonl), a folder of images (recursive), or image files.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output .jsonl file (one line per image)."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model folder or hub id (local cache only); not for tesseract."
    ),
    adapter: Path | None = typer.Option(None, "--adapter", help="PEFT adapter folder."),
    ignore_adapter_base: bool = typer.Option(
        False,
        "--ignore-adapter-base",
        help="Accept an adapter whose recorded base names another model (hf; its shapes still "
        "have to fit).",
    ),
    backend: str = typer.Option("hf", "--backend", "-b", help="hf, vllm or tesseract."),
    lang: str | None = typer.Option(
        None,
        "--lang",
        help="Language (ru, en, it, ar): of a manifest, only its records in this language; "
        "tesseract's model (default: the manifest's only language).",
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest answer (tokens)."),
    prompt: str = typer.Option(
        DEFAULT_OCR_PROMPT,
        "--prompt",
        help="Instruction sent with every image.",
        show_default=False,
    ),
    split: str | None = typer.Option(None, "--split", help="Only this split of a manifest."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N (hf)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, bf16, fp16, fp32."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Accept pickle (.bin) weights from a trusted source (hf)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start over: replace --out and discard a partial run."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Transcribe line images into a JSONL file; an interrupted run resumes where it stopped."""
    from vlm_retain.errors import InputError
    from vlm_retain.evaluate.generate import BACKENDS, GenerationConfig, make_backend
    from vlm_retain.evaluate.generate.inputs import filter_lang, is_manifest, resolve_inputs
    from vlm_retain.evaluate.generate.run import transcribe_items

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    config = GenerationConfig(batch_size=batch_size, max_new_tokens=max_new_tokens)
    items = resolve_inputs(inputs, split=split)
    left_out = 0
    if lang is not None and len(inputs) == 1 and is_manifest(inputs[0]):
        kept = filter_lang(items, lang, path=inputs[0])
        left_out, items = len(items) - len(kept), kept
    if backend == "tesseract":
        if model is not None or adapter is not None:
            raise InputError("the tesseract backend takes no --model or --adapter")
        lang = lang or _single_lang([item.lang for item in items])
    elif model is None:
        raise InputError(f"the {backend} backend needs --model")
    options: dict[str, object] = {}
    if backend == "hf":
        _quiet_transformers()
        options = {
            "device": device,
            "dtype": dtype,
            "allow_pickle": allow_pickle,
            "strict_adapter_base": not ignore_adapter_base,
        }
    elif backend == "vllm" and dtype != "auto":
        options = {"dtype": dtype}
    engine = make_backend(
        backend, model=model, adapter=adapter, lang=lang, config=config, **options
    )
    settings = {
        "backend": backend,
        "model": model,
        "adapter": str(adapter) if adapter else None,
        "lang": lang if backend == "tesseract" else None,
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
    }
    summary = transcribe_items(
        engine,
        items,
        out,
        prompt=prompt,
        settings=settings,
        overwrite=overwrite,
        progress=progress,
        flush_every=batch_size,
    )
    if left_out:
        summary.notes.append(f"{left_out} records not in language {lang} left out")
    console.print(summary.line(), highlight=False, soft_wrap=True)


def _single_lang(langs: list[str | None]) -> str:
    from vlm_retain.errors import InputError

    found = sorted({lang for lang in langs if lang})
    if len(found) == 1:
        return found[0]
    raise InputError(
        "the tesseract backend needs --lang"
        + (f" (the manifest has {', '.join(found)}; run one language at a time)" if found else ""),
        hint="pass --lang ru|en|it|ar",
    )


def _quiet_transformers() -> None:
    """No per-shard progress bars or generation warnings: this command prints its own summary."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
