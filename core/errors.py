"""Errors the desk reports to the operator, with their exit codes.

DESIGN.md section 1: exit 2 for usage, bad input, bad config, missing
credentials or an unreachable venue at start; exit 3 for a run that ended
halted by an unreconciled difference.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNRECONCILED = 3


class DeskError(Exception):
    """Base of operator-facing errors; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_USAGE


class ConfigError(DeskError):
    """A bad flag, config value or state-dir mismatch (exit 2)."""


class DataError(DeskError):
    """Bad input data, reported as ``FILE:LINE: field …`` (exit 2).

    Attributes:
        path: the file.
        line: 1-based physical line number (a header line counts), or 0 when
            the problem is with the whole file.
        message: what is wrong, naming the field and the value.
    """

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.message = message
        where = f"{self.path}:{self.line}" if self.line else self.path
        super().__init__(f"{where}: {message}")


class StateDirError(DeskError):
    """The state dir is locked by another desk, or holds another setup (exit 2)."""
