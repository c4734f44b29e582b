"""Checks on the files a command is told to write, before any work is done.

An output that is a directory, or whose folder cannot be created or written, is refused with a
`UsageError` naming the option and the path (exit status 2), instead of failing after minutes
of work. An existing file is not an error: every writer replaces it atomically (a temporary
name, then a rename) or resumes it from its journal.
"""
from __future__ import annotations

import os
from pathlib import Path

from lsm.config import UsageError


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """`path` as a `Path` if a file can be written there; `UsageError` otherwise."""
    p = Path(path)
    shown = repr(str(p)) if not str(p).isprintable() else str(p)
    if not str(p) or str(p).endswith(os.sep):
        raise UsageError(f"{option} {shown}: expected a file name, not a folder")
    if p.is_dir():
        raise UsageError(f"{option} {shown}: is a directory; expected a file name to write")
    folder = p.parent if str(p.parent) else Path(".")
    existing = folder
    while not existing.exists():  # the first folder that exists must let us create the rest
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {shown}: {existing} is a file, so the folder {folder} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {shown}: the folder {existing} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{option} {shown}: the file exists and is not writable")
    return p
