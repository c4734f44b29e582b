"""The per-tick journal that makes every run resumable after kill -9.

`<out>.journal/` holds `run.json` (a fingerprint of the run's inputs), and per finished tick
`tick_NNNN.npz` (the tick's fields) and `state_NNNN.json` (the loop's and the policy's state
after that tick); a policy with array state (the student's tensors) adds `arrays_NNNN.npz`,
kept for the last tick only. Every file is written to a temporary name, fsynced and renamed,
so a run killed at any moment loses at most the tick in progress. A journal from other inputs
is refused unless the run is restarted.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
from lsm.society.store import StoreError


class JournalMismatch(StoreError):
    """`<out>.journal/` holds a run with other inputs."""


class OutputLocked(StoreError):
    """Another process is writing the same output."""


class OutputLock:
    """An exclusive lock on an output for the life of a run: `<out>.lock` (flock; it holds the
    writer's pid). A second `lsm gen` / `lsm rollout` on the same output refuses at once and
    changes nothing; the OS releases the lock when the process ends, so kill -9 leaves no stale
    lock. A finished run removes the file while it still holds the lock; a process that locked
    the file just before it was removed finds, on checking, that the path no longer names the
    file it locked, and tries again on the new one: two writers can never both hold it."""

    def __init__(self, out: str | Path):
        out = Path(out)
        self.path = out.with_name(out.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self._fh: Any = open(self.path, "a+")
            try:
                fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._fh.seek(0)
                pid = self._fh.read().strip() or "unknown"
                self._fh.close()
                raise OutputLocked(f"{out}: another lsm process (pid {pid}) is writing it; wait for it to finish or stop it "
                                   "(nothing was changed)") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            self._fh.close()  # the file was removed by the run that held it: lock the one at the path now
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()

    def release(self) -> None:
        """Remove the lock file and let go of it (in that order: see the class docstring)."""
        if self._fh is not None and not self._fh.closed:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def file_digest(path: str | Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def fingerprint(files: list[str | Path], texts: list[str]) -> str:
    """A short hash of input files' bytes and of config texts (seeds included)."""
    h = hashlib.sha256()
    for f in files:
        file_digest(f, h)
        h.update(b"\0")
    for part in texts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


class Journal:
    """Finished ticks of one run, beside its output file."""

    def __init__(self, out: str | Path, fp: str, meta: dict[str, Any], restart: bool = False, keep_states: int = 1):
        """`keep_states`: how many of the newest array states to keep (a shard keeps 2: a rank one
        tick ahead of the others may have journaled a newer state than every rank has)."""
        out = Path(out)
        self.keep_states = keep_states
        self.lock = OutputLock(out)  # first: nothing below may touch another process's run
        self.dir = self.folder_of(out)
        try:
            self._open(fp, meta, restart)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, fp: str, meta: dict[str, Any], restart: bool) -> None:
        if self.dir.exists():
            run = self.dir / "run.json"
            prev = json.loads(run.read_text()).get("fingerprint") if run.is_file() else None
            if prev != fp and not restart:
                raise JournalMismatch(
                    f"{self.dir} holds a run with different inputs (world, scenario, policy config, checkpoint or seed); "
                    "re-run with the original arguments to resume it, or pass --restart true to discard it")
            if restart:
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        blob = json.dumps({"fingerprint": fp, **meta}).encode()
        atomic_write(self.dir / "run.json", lambda fh: fh.write(blob))

    @staticmethod
    def folder_of(out: str | Path) -> Path:
        """The journal folder of output `out`: `<out>.journal`."""
        out = Path(out)
        return out.with_name(out.name + ".journal")

    @staticmethod
    def paths_in(folder: Path, t: int) -> tuple[Path, Path, Path]:
        """(tick fields, state, array state) of tick t in a journal folder."""
        return folder / f"tick_{t:04d}.npz", folder / f"state_{t:04d}.json", folder / f"arrays_{t:04d}.npz"

    @classmethod
    def finished_in(cls, folder: Path, ticks: int | None = None) -> int:
        """How many ticks from 0 on (at most `ticks`) a journal folder holds completely (the state
        file is written last); read without taking the run's lock."""
        t = 0
        while (ticks is None or t < ticks) and cls.paths_in(folder, t)[1].is_file() and cls.paths_in(folder, t)[0].is_file():
            t += 1
        return t

    def _paths(self, t: int) -> tuple[Path, Path, Path]:
        return self.paths_in(self.dir, t)

    def finished(self, ticks: int) -> int:
        """How many ticks from 0 on are journaled completely (the state file is written last)."""
        return self.finished_in(self.dir, ticks)

    def save(self, t: int, data: dict[str, np.ndarray], state: dict[str, Any], arrays: dict[str, Any]) -> None:
        npz, st, arr = self._paths(t)
        blob: dict[str, Any] = {k: (np.asarray(v, dtype=str) if v.dtype == object else v) for k, v in data.items()}
        atomic_write(npz, lambda fh: np.savez(fh, **blob))
        if arrays:
            atomic_write(arr, lambda fh: np.savez(fh, **arrays))
        text = json.dumps(state).encode()
        atomic_write(st, lambda fh: fh.write(text))  # last: it marks the tick finished
        if arrays:  # only the newest `keep_states` array states are needed
            kept = [old for old in range(t) if self._paths(old)[2].is_file()]
            for old in kept[:max(0, len(kept) - (self.keep_states - 1))]:
                self._paths(old)[2].unlink(missing_ok=True)

    def newest_full(self, finished: int) -> int:
        """The newest of the first `finished` ticks whose journaled state holds the policy's whole
        state (`"full"`; every tick in journals written before the key existed), or -1: a resumed
        run loads it and replays the ticks after it."""
        for t in range(finished - 1, -1, -1):
            if json.loads(self._paths(t)[1].read_text()).get("full", True):
                return t
        return -1

    def data(self, t: int) -> dict[str, np.ndarray]:
        with np.load(self._paths(t)[0]) as z:
            return {k: (z[k].astype(object) if z[k].dtype.kind == "U" else z[k]) for k in z.files}

    def state(self, t: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        _, st, arr = self._paths(t)
        arrays: dict[str, np.ndarray] = {}
        if arr.is_file():
            with np.load(arr) as z:
                arrays = {k: z[k] for k in z.files}
        return json.loads(st.read_text()), arrays

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def release(self) -> None:
        """Let another process write this output (the journal stays unless `remove()`d)."""
        self.lock.release()
