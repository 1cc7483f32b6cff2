"""A JSONL output that survives interruption: written incrementally, resumed, finished atomically.

Why: a run over thousands of lines may be killed (pre-emption, out of memory, Ctrl-C). Lines go
to ``OUT.partial``, appended, flushed and fsynced after every batch, beside ``OUT.partial.json``
that records the settings that produced them. Running the same command again resumes:

- lines already in ``OUT.partial`` are kept and their ids skipped; a torn last line (the process
  died mid-write) is cut off;
- lines that recorded an error (``meta.error``) are dropped and those images tried again;
- if the settings differ (another model, adapter, backend, prompt, max new tokens, language),
  the run stops with an error rather than mixing two runs in one file (``overwrite`` starts over);
  the batch size may change, so a run killed for memory can resume with a smaller one.

When every item is done, the lines are written to ``OUT`` in input order (atomically) and the two
partial files removed. An existing complete ``OUT`` is never replaced unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_json, atomic_write_text


class ResumableJsonl:
    """See the module docstring. Use :meth:`start`, then :meth:`write` per batch, then
    :meth:`finish`."""

    def __init__(self, out: Path, settings: Mapping[str, Any], *, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.settings_file = self.out.with_name(self.out.name + ".partial.json")
        self.settings = json.loads(json.dumps(dict(settings)))  # as it will read back
        self.overwrite = overwrite
        self.done: dict[str, dict[str, Any]] = {}
        self.retried = 0
        self._handle: IO[str] | None = None

    def start(self) -> dict[str, dict[str, Any]]:
        """Prepare the partial file; return the lines already done, by id."""
        if self.out.is_dir():
            raise InputError("is a folder, expected a .jsonl file path", path=self.out)
        if self.out.exists() and not self.overwrite:
            raise InputError(
                "output already exists",
                path=self.out,
                hint="pass --overwrite or choose another --out",
            )
        if self.overwrite:
            for path in (self.partial, self.settings_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.partial.exists():
            self._check_settings()
            self.done = self._read_partial()
        else:
            atomic_write_json(self.settings_file, self.settings)
            self.partial.write_text("", encoding="utf-8")
        self._handle = open(self.partial, "a", encoding="utf-8")  # noqa: SIM115 - closed in finish
        return dict(self.done)

    def _check_settings(self) -> None:
        try:
            saved = json.loads(self.settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(
                f"a partial output exists without readable settings ({self.settings_file.name})",
                path=self.partial,
                hint="pass --overwrite to start over",
            ) from None
        differing = sorted(
            k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k)
        )
        if differing:
            raise InputError(
                f"a partial output from a run with other settings ({', '.join(differing)})",
                path=self.partial,
                hint="rerun with the same settings to resume, or pass --overwrite to start over",
            )

    def _read_partial(self) -> dict[str, dict[str, Any]]:
        """Good lines of the partial file; cut a torn tail, drop error lines (retried)."""
        raw = self.partial.read_bytes()
        done: dict[str, dict[str, Any]] = {}
        keep_until = 0
        position = 0
        for line in raw.splitlines(keepends=True):
            try:
                obj = json.loads(line.decode("utf-8"))
                complete = line.endswith(b"\n") and isinstance(obj, dict) and "id" in obj
            except (UnicodeDecodeError, ValueError):
                complete = False
            if not complete:
                break
            position += len(line)
            keep_until = position
            if (obj.get("meta") or {}).get("error"):
                self.retried += 1
                done.pop(str(obj["id"]), None)
            else:
                done[str(obj["id"])] = obj
        if keep_until != len(raw) or self.retried:
            text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in done.values())
            atomic_write_text(self.partial, text)
        return done

    def write(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """Append lines and make them durable (flush + fsync): one call per batch."""
        if self._handle is None:
            raise RuntimeError("ResumableJsonl.start() was not called")
        for line in lines:
            self._handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the partial file and keep it (an interrupted run resumes from it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finish(self, order: Sequence[str]) -> int:
        """Write ``OUT`` with the lines of ``order``'s ids in that order; remove the partials.

        Returns the number of lines written. Ids of the partial file not in ``order`` (inputs
        removed since the interrupted run) are left out.
        """
        self.close()
        lines: dict[str, str] = {}
        for raw in self.partial.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                lines[str(json.loads(raw)["id"])] = raw
        missing = [i for i in order if i not in lines]
        if missing:
            raise InputError(f"{len(missing)} items were not written (first: {missing[0]!r})")
        atomic_write_text(self.out, "".join(lines[i] + "\n" for i in order))
        for path in (self.partial, self.settings_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return len(order)
