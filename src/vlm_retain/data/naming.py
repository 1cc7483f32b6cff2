"""Names shared by importers and exports: split words, the image tag, file-safe unique names.

Kept in one place so that an import and the export it round-trips with agree on them: a split
word read by ``import hf`` or ``import sharegpt`` maps the same way everywhere, and a file name
made from an id is made the same way whichever importer writes it.
"""

from __future__ import annotations

import re

#: Split words found in sources (file names, ``--split`` values, split-list names) -> our split.
#: Hugging Face names first (``validation``), then the common aliases; the order is also the
#: order files of the same split kind are read in.
SPLIT_WORDS = {
    "train": "train",
    "validation": "val",
    "valid": "val",
    "val": "val",
    "dev": "val",
    "test": "test",
}

#: The placeholder LLaMA-Factory (and the sharegpt convention) puts where the image goes.
IMAGE_TAG = "<image>"

#: Characters left out of file names made from ids: anything that could be a path separator,
#: a shell or Windows special character, or trip a tool that does not quote names.
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, fallback: str = "_") -> str:
    """A file-name-safe form of an id or folder name (the id itself stays natural).

    Runs of unsafe characters become ``_`` and leading/trailing dots and underscores go, so
    ``..`` or ``.hidden`` cannot come out; an empty result becomes ``fallback``.
    """
    return UNSAFE_NAME.sub("_", name).strip("._") or fallback


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... when it is taken; the result is added to ``used``.

    Ids made file-safe can collide (``a/b`` and ``a_b`` both become ``a_b``); numbering the
    later ones keeps every record's file its own.
    """
    candidate, number = name, 1
    while candidate in used:
        number += 1
        candidate = f"{name}_{number}"
    used.add(candidate)
    return candidate
