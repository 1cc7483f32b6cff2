"""Atomic file and folder writes, so an interrupted or failed run never leaves half an output.

Every output of the tool is written to a temporary sibling first and renamed into place:
a reader sees either the old complete file or the new complete file, never a partial one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlm_retain.errors import InputError

#: Name of the marker file that identifies a folder written by this tool (used by ``data purge``).
MARKER_NAME = ".vlm-retain.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise InputError("is a folder, expected a file path", path=path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _apply_umask(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Pretty-printed UTF-8 JSON (non-ASCII kept readable), written atomically."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_marker(folder: Path, kind: str, **details: Any) -> None:
    """Mark ``folder`` as derived by this tool, so ``data purge`` may remove it."""
    atomic_write_json(folder / MARKER_NAME, {"tool": "vlm-retain", "kind": kind, **details})


def read_marker(folder: Path) -> dict[str, Any] | None:
    """Return the marker of a tool-derived folder, or None when the folder is not one."""
    path = folder / MARKER_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "vlm-retain" else None


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite`` and it is a folder this tool wrote."""
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise InputError(
                "output path exists and is not a folder", path=out, hint="choose another --out"
            )
        if not overwrite:
            raise InputError(
                "output folder already exists",
                path=out,
                hint="choose another --out or pass --overwrite",
            )
        if any(out.iterdir()) and read_marker(out) is None:
            raise InputError(
                "output folder exists and was not written by vlm-retain",
                path=out,
                hint="refusing to replace it; choose another --out",
            )


@contextlib.contextmanager
def staged_output_dir(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; rename it to ``out`` only on success.

    On any exception the temporary folder is removed and ``out`` is untouched. An existing
    ``out`` is an error unless ``overwrite`` is set, and even then it is only replaced once the
    new one is complete (and only when it was written by this tool).
    """
    out = Path(out)
    _check_replaceable(out, overwrite)
    created = _make_parents(out.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        _apply_umask(staging, directory=True)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, trash / "old")
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p`` that returns the folders it created (deepest last), to undo on failure."""
    missing: list[Path] = []
    current = folder.absolute()
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def _remove_empty(created: list[Path]) -> None:
    """Remove folders made by :func:`_make_parents` again, deepest first, if still empty."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import: ``os.umask`` can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def _apply_umask(path: Path, *, directory: bool) -> None:
    """Give a ``mkstemp``/``mkdtemp`` result (private 0600/0700) the permissions the user's
    umask asks for, as a plain ``open``/``mkdir`` would; a restrictive umask keeps data private."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


@contextlib.contextmanager
def fresh_output_dir(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Create ``out`` in place (after the same checks as :func:`staged_output_dir`) and remove
    it again if the body fails.

    For outputs whose files record their own absolute paths (evaluation results, reports),
    which a rename from a staging folder would make stale. An earlier folder is deleted only
    when ``overwrite`` is set and it was written by this tool.
    """
    out = Path(out)
    _check_replaceable(out, overwrite)
    if out.exists():
        shutil.rmtree(out)
    created = _make_parents(out.parent)
    out.mkdir()
    try:
        yield out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        _remove_empty(created)
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (streamed, constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_utf8(path: Path) -> str:
    """Read a text file as strict UTF-8 (a BOM is dropped), naming the file and line on failure."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"invalid UTF-8 at byte {exc.start}",
            path=path,
            line=line,
            hint="re-save the file as UTF-8",
        ) from None
    return text.removeprefix("\ufeff")


def relative_to_folder(target: Path, folder: Path) -> str:
    """Path of ``target`` relative to ``folder`` in POSIX form (``..`` allowed), for manifests."""
    return Path(os.path.relpath(Path(target).resolve(), Path(folder).resolve())).as_posix()
