"""The errors a user can act on, one paragraph each: `ConfigError` (a file or dict that does not
match its schema, listing every `Problem`), `UsageError` (a command called without what it needs)
and `Interrupted` (Ctrl-C after saving). The command line prints them with exit status 2 (130 for
`Interrupted`). This module imports nothing of `lsm`: the loader (`lsm.documents`) and the schemas
(`lsm.config`) both build on it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where, what was found, what was expected."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        where = f"field '{_printable(self.path)}'" if self.path else "the document"
        return f"{where} = {_show(self.value)}: expected {self.expected}"


MAX_LISTED_PROBLEMS = 10
"""A `ConfigError` lists this many problems and counts the rest (a paragraph, not a page)."""


class ConfigError(ValueError):
    """A config file (or dict) does not match its schema. `str()` is one readable paragraph."""

    def __init__(self, source: str | Path | None, problems: list[Problem], kind: str = "config"):
        self.source = _printable(str(source)) if source is not None else "<dict>"
        self.problems = list(problems)
        self.kind = kind
        n = len(self.problems)
        head = f"Invalid {kind} {self.source}: {n} problem{'s' if n != 1 else ''}."
        body = " ".join(f"({i + 1}) {p}." for i, p in enumerate(self.problems[:MAX_LISTED_PROBLEMS]))
        more = f" ... and {n - MAX_LISTED_PROBLEMS} more of the kind above." if n > MAX_LISTED_PROBLEMS else ""
        super().__init__(f"{head} {body}{more}")


class UsageError(ValueError):
    """A command was called without what it needs (a missing option, an id out of range). The
    command line prints it as one paragraph, exit status 2; library callers get a ValueError."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) after saving what it had: `str()` says what was kept and
    how to resume. The command line prints it and exits with status 130 (the shell's 128 + SIGINT)."""


def _printable(text: str, limit: int = 200) -> str:
    """A file name or other user text as it may be printed: escaped where not printable, truncated."""
    shown = text if text.isprintable() else repr(text)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _show(value: Any, limit: int = 60) -> str:
    if value is _MISSING:
        return "(missing)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_MISSING = object()


def quiet_teardown() -> None:
    """After Ctrl-C: an object the interrupt caught half-way (a journal tick's `.npz` being
    written, whose file the atomic write already closed) fails to clean itself up when collected,
    and Python would print that as a traceback after our one paragraph. The journal is whole either
    way, so such failures are not reported."""
    import sys

    sys.unraisablehook = lambda unraisable: None
