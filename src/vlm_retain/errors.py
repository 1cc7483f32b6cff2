"""Errors that the CLI turns into one-line messages and fixed exit codes.

Exit codes across the CLI: 0 success, 1 a check or gate found problems, 2 usage or input error.
Library code raises these instead of printing, so the same functions work from Python and
from the command line.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class VlmRetainError(Exception):
    """Base class: ``str(error)`` is the complete one-line message shown to the user."""

    exit_code = EXIT_USAGE


class InputError(VlmRetainError):
    """Bad input: a missing folder, a malformed file, an unknown option value.

    The message names the file (and line or field when known) and says what to do.
    """

    def __init__(
        self,
        what: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            if field is not None:
                where += f" (field {field!r})"
            where += ": "
        elif field is not None:
            where = f"field {field!r}: "
        message = f"{where}{what}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field


class ProblemsFound(VlmRetainError):
    """A check or a gate ran to completion and found problems (exit code 1)."""

    exit_code = EXIT_PROBLEMS
