"""Tesseract as a classical OCR reference point beside the VLMs.

Why: a report that says "the fine-tuned VLM reads at 4% CER" means more beside what an
off-the-shelf engine does on the same lines. Each line image is piped to the ``tesseract`` binary
(``tesseract stdin stdout --psm 7``: treat the image as a single text line), several processes at
once, each limited to one thread (Tesseract's own OpenMP threads only fight each other when
several processes run).

Limits worth stating wherever its numbers appear (research/env.md §8): the ``rus`` model has
none of ѣ і ѳ ѵ and ``Cyrillic`` only і, so Tesseract cannot output ѣ, ѳ or ѵ: a built-in error
floor on pre-reform text. The prompt of a request is ignored.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from vlm_retain.data.images import BadImage
from vlm_retain.errors import InputError
from vlm_retain.evaluate.generate.base import Backend, Request, Result, error_result, load_image

#: Our ISO 639-1 codes -> Tesseract's traineddata names.
LANGS = {"ru": "rus", "en": "eng", "it": "ita", "ar": "ara"}
#: Debian/Ubuntu package of each Tesseract language, for the error message.
_PACKAGES = {"rus": "tesseract-ocr-rus", "eng": "tesseract-ocr-eng", "ita": "tesseract-ocr-ita"}
_PACKAGES["ara"] = "tesseract-ocr-ara"
TIMEOUT_S = 120


def tesseract_binary() -> str:
    """Path of the ``tesseract`` binary, or the :class:`InputError` saying how to get it."""
    found = shutil.which("tesseract")
    if not found:
        raise InputError(
            "the tesseract backend needs the tesseract binary, which is not on PATH",
            hint="install it (Debian/Ubuntu: apt-get install tesseract-ocr tesseract-ocr-eng)",
        )
    return found


def installed_languages(binary: str | None = None) -> list[str]:
    """Languages Tesseract has data for (``tesseract --list-langs``)."""
    binary = binary or tesseract_binary()
    done = subprocess.run(
        [binary, "--list-langs"], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (done.stdout or done.stderr).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("List of")]


def tesseract_lang(lang: str) -> str:
    """Tesseract's name for ``lang``: ``ru`` -> ``rus``; Tesseract names (``rus+eng``,
    ``Cyrillic``) pass through."""
    return "+".join(LANGS.get(part, part) for part in lang.split("+"))


class TesseractBackend(Backend):
    """Transcribe line images with Tesseract in ``lang`` (ISO code or Tesseract name)."""

    name = "tesseract"

    def __init__(self, lang: str, psm: int = 7, *, workers: int | None = None) -> None:
        if not lang:
            raise InputError(
                "the tesseract backend needs a language", hint="pass --lang ru|en|it|ar"
            )
        self.binary = tesseract_binary()
        self.lang = tesseract_lang(lang)
        self.psm = psm
        self.workers = max(1, workers or min(4, os.cpu_count() or 1))
        installed = installed_languages(self.binary)
        missing = [part for part in self.lang.split("+") if part not in installed]
        if missing:
            packages = " ".join(_PACKAGES.get(m, f"tesseract-ocr-{m.lower()}") for m in missing)
            raise InputError(
                f"Tesseract has no language data for {', '.join(missing)} "
                f"(installed: {', '.join(installed) or 'none'})",
                hint=f"install it (Debian/Ubuntu: apt-get install {packages})",
            )

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, "lang": self.lang, "psm": self.psm, "version": self.version()}

    def version(self) -> str:
        done = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        first = (done.stdout or done.stderr).strip().splitlines()
        return first[0] if first else "unknown"

    def generate(self, requests: Sequence[Request]) -> Iterator[Result]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            yield from pool.map(self._one, requests)

    def _one(self, request: Request) -> Result:
        try:
            image = load_image(request.image)
        except BadImage as exc:
            return error_result(request, exc)
        if image is None:
            return Result(id=request.id, text="", error="tesseract needs an image")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        command = [self.binary, "stdin", "stdout", "-l", self.lang, "--psm", str(self.psm)]
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            done = subprocess.run(
                command,
                input=buffer.getvalue(),
                capture_output=True,
                timeout=TIMEOUT_S,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Result(id=request.id, text="", error=f"tesseract timed out ({TIMEOUT_S} s)")
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = detail[-1] if detail else f"exit code {done.returncode}"
            return Result(id=request.id, text="", error=f"tesseract failed: {reason}")
        text = done.stdout.decode("utf-8", "replace")
        return Result(id=request.id, text=_one_line(text))


def _one_line(text: str) -> str:
    """Tesseract's output as one line: the form feed dropped, line breaks turned into spaces."""
    return re.sub(r"\s+", " ", text.replace("\f", " ")).strip()
