"""``data purge``: remove what vlm-retain derived, and nothing else.

Derived folders (imports, exports) can be large (crops, decoded images) and are cheap to rebuild,
so removing them must be easy, but a wrong path must never cost a user their data. Hence:

- a folder is removed only when it holds the marker :func:`~vlm_retain.fsutil.write_marker`
  wrote; anything else is refused before a single file is touched;
- symbolic links are never followed: the folder itself must not be one, and links inside it are
  removed as links (``shutil.rmtree`` works on file descriptors and does not descend into them);
- source images referenced with ``../`` paths lie outside the folder and are never touched, and
  a folder whose card names a source inside it is refused;
- staging leftovers of an interrupted run (``.<name>.XXXXXXXX.partial`` and ``.old`` siblings
  made by :func:`~vlm_retain.fsutil.staged_output_dir`) are removed with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from vlm_retain.data.manifest import CARD_NAME
from vlm_retain.errors import InputError
from vlm_retain.fsutil import MARKER_NAME, read_marker

_NOTHING_DELETED = "nothing was deleted"
LEFTOVERS_KIND = "staging leftovers only"


@dataclass(frozen=True)
class PurgePlan:
    """What :func:`purge_folder` will remove: the folder (when present) and staging leftovers."""

    folder: Path
    kind: str
    files: int
    bytes: int
    remove_folder: bool
    leftovers: tuple[Path, ...]


def plan_purge(folder: Path) -> PurgePlan:
    """Refuse anything not written by vlm-retain; otherwise count what would be removed."""
    folder = Path(folder)
    leftovers = staging_leftovers(folder)
    if folder.is_symlink():
        raise InputError(
            "is a symbolic link",
            path=folder,
            hint=f"pass the folder it points to; {_NOTHING_DELETED}",
        )
    if not folder.exists():
        if leftovers:
            files, size = _tally(leftovers)
            return PurgePlan(folder, LEFTOVERS_KIND, files, size, False, leftovers)
        raise InputError("folder not found", path=folder, hint=_NOTHING_DELETED)
    if not folder.is_dir():
        raise InputError(
            "not a folder",
            path=folder,
            hint=f"pass a folder written by vlm-retain; {_NOTHING_DELETED}",
        )
    marker = read_marker(folder)
    if marker is None:
        raise InputError(
            f"not a vlm-retain folder (no valid {MARKER_NAME} marker)",
            path=folder,
            hint=f"purge only removes folders written by vlm-retain; {_NOTHING_DELETED}",
        )
    _refuse_source_inside(folder)
    files, size = _tally((folder, *leftovers))
    return PurgePlan(folder, str(marker.get("kind", "unknown")), files, size, True, leftovers)


def purge_folder(folder: Path, plan: PurgePlan) -> None:
    """Remove what ``plan`` lists, checking the marker again right before deleting."""
    folder = Path(folder)
    if plan.remove_folder:
        if Path(plan.folder) != folder or folder.is_symlink() or read_marker(folder) is None:
            raise InputError(
                "folder changed since the purge was planned",
                path=folder,
                hint=f"run purge again; {_NOTHING_DELETED}",
            )
        _remove(folder)
    for leftover in plan.leftovers:
        if leftover.is_dir() and not leftover.is_symlink():
            _remove(leftover)


def staging_leftovers(folder: Path) -> tuple[Path, ...]:
    """Siblings named like ``staged_output_dir``'s temporary folders for ``folder``."""
    folder = Path(folder)
    parent = folder.parent
    if not parent.is_dir():
        return ()
    # tempfile.mkdtemp puts 8 characters from [a-z0-9_] between prefix and suffix.
    pattern = re.compile(rf"^\.{re.escape(folder.name)}\.[a-z0-9_]{{8}}\.(partial|old)$")
    return tuple(
        sorted(
            entry
            for entry in parent.iterdir()
            if pattern.match(entry.name) and entry.is_dir() and not entry.is_symlink()
        )
    )


def _refuse_source_inside(folder: Path) -> None:
    """An import whose source lies inside its output would take the source with it."""
    try:
        card = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
        source = card["importer"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not isinstance(source, str) or not source:
        return
    root, src = folder.resolve(), Path(source).resolve()
    if src == root or root in src.parents:
        raise InputError(
            f"the import source {source} lies inside this folder",
            path=folder,
            hint=f"move the source out first; {_NOTHING_DELETED}",
        )


def _tally(roots: tuple[Path, ...]) -> tuple[int, int]:
    """Files (links counted as files, never followed) and their bytes under ``roots``."""
    files = size = 0
    for root in roots:
        for current, dirs, names in os.walk(root, followlinks=False):
            entries = names + [d for d in dirs if os.path.islink(os.path.join(current, d))]
            for name in entries:
                files += 1
                try:
                    size += os.lstat(os.path.join(current, name)).st_size
                except OSError:
                    continue
    return files, size


def _remove(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise InputError(
            f"could not remove everything ({exc.strerror or exc})",
            path=path,
            hint="check permissions and run purge again",
        ) from None
