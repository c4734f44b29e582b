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


def check_room(path: str | Path, need: int, what: str, kept: str = "") -> None:
    """Refuse, before a byte is written, to write `path` when its file system has less free space
    than `need` bytes (an upper bound: the data uncompressed) or the process may not write a file
    that large (`ulimit -f`, RLIMIT_FSIZE). HDF5 cannot recover from a write that fails half way
    (it crashes), so the check comes first; `kept` says what the refusal leaves for a rerun."""
    import resource
    import shutil

    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    mb = lambda b: f"{b / 2**20:,.1f} MB"  # noqa: E731
    tail = f" Nothing was written{'; ' + kept if kept else ''}."
    if limit != resource.RLIM_INFINITY and need > limit:
        raise UsageError(f"{p}: writing {what} needs up to {mb(need)}, but this process may write files of at most "
                         f"{mb(limit)} (ulimit -f). Raise the limit or write a smaller run.{tail}")
    if need > free:
        raise UsageError(f"{p}: writing {what} needs up to {mb(need)}, but its file system has {mb(free)} free. "
                         f"Free some space or write it elsewhere.{tail}")


def array_bytes(*objects: object) -> int:
    """Bytes of the numpy arrays and lists of texts held by `objects` (their attributes, and the
    values of dicts among them): what writing them uncompressed takes."""
    import numpy as np

    total = 0
    for obj in objects:
        values = list(vars(obj).values()) if hasattr(obj, "__dict__") else [obj]
        for v in values:
            for x in (v.values() if isinstance(v, dict) else [v]):
                if isinstance(x, np.ndarray):
                    total += sum(len(str(e).encode()) + 8 for e in x.ravel()) if x.dtype == object else x.nbytes
                elif isinstance(x, list) and x and isinstance(x[0], str):
                    total += sum(len(e.encode()) + 8 for e in x)
    return total
