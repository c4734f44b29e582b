"""The society loop on P ranks: each answers for its shard of the agents, one file comes out.

Every rank perceives for its own agents only (`Partition.members(rank)`): exposures and shown
neighbours are seeded for the whole population and a shard takes its rows of the same draws
(`NeighborIndex` keeps its receivers' in-edges and picks their keys from the population's Gumbel
stream), so they do not depend on P; the policy's state, inputs and forward pass are the
shard's. After each tick the ranks gather what triggers and
the tick's statistics read (decision, channels, validity: a few bytes per agent) and each journals
its own rows in its own journal, `<out>.shards/rank<r>of<P>.journal/`. When every tick is
journaled, rank 0 writes `<out>` from the P journals, in agent order: the file is the one a single
process writes (tested bitwise).

Resume: a killed run resumes from the last tick every rank journaled (a rank is at most one
tick ahead of another, so each keeps its two newest array states).

Notation: N agents | N_r agents of rank r | P ranks.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lsm.society.loop.comm import Comm
from lsm.society.loop.journal import Journal, OutputLock
from lsm.society.loop.runner import SocietyLoop


def shards_dir(out: str | Path) -> Path:
    """The folder of a sharded run's per-rank journals, beside its output."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def rank_journal(out: str | Path, rank: int, size: int) -> Path:
    """The output name a rank's journal is kept for (`<out>.shards/rank<r>of<P>` + `.journal`)."""
    return shards_dir(out) / f"rank{rank}of{size}"


def journaled_ticks(out: str | Path, size: int) -> int:
    """Ticks from 0 on that every rank of a sharded run of `out` has journaled (0 when none)."""
    return min((Journal.finished_in(Journal.folder_of(rank_journal(out, r, size))) for r in range(size)), default=0)


class ShardedLoop(SocietyLoop):
    """`SocietyLoop` for the rows of one rank (module docstring); the policy answers for `comm.mine`."""

    def __init__(self, *args, comm: Comm, **kw):
        self.comm = comm
        self.receivers = comm.mine  # the perception is the shard's rows (`SocietyLoop.perceive`)
        super().__init__(*args, **kw)

    def population(self, data: dict[str, np.ndarray], spoke: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        whole = {k: self.comm.gather_rows(v) for k, v in data.items()}
        return whole, self.comm.gather_rows(spoke.astype(bool))

    def step(self, t, progress=None, capture=False):
        rec = super().step(t, progress, capture)
        rec.stats["halo_bytes"] = int(self.comm.sum(self.comm.sent_bytes))  # every rank's, this tick
        self.comm.sent_bytes = 0
        return rec

    def journal(self, out: Path, fp: str, meta: dict[str, Any], restart: bool) -> Journal:
        c = self.comm
        own = rank_journal(out, c.rank, c.size)
        own.parent.mkdir(parents=True, exist_ok=True)
        return Journal(own, fp + f"/rank{c.rank}of{c.size}", {**meta, "rank": c.rank, "ranks": c.size}, restart, keep_states=2)

    def journal_place(self, journal: Journal) -> Path:
        return journal.dir.parent

    def finished(self, journal: Journal) -> int:
        return self.comm.min(journal.finished(self.n_ticks))

    def finish(self, out: Path, journal: Journal, world_file, scenario_yaml: str, seeds: dict[str, Any],
               configs: dict[str, Any], summary: dict[str, Any]) -> None:
        c = self.comm
        c.barrier()  # every rank has journaled every tick
        if c.rank == 0:
            dirs = [Journal.folder_of(rank_journal(out, r, c.size)) for r in range(c.size)]
            self._assemble(out, dirs, lambda t: self.merged(dirs, t), world_file, scenario_yaml, seeds, configs, summary)
        c.barrier()  # `out` is written: the journals may go
        journal.remove()

    def run(self, out, *args, **kw) -> dict[str, Any]:
        """`SocietyLoop.run` on every rank; rank 0 also holds `<out>.lock`, so no other run (of
        one process or of several) writes `out` meanwhile."""
        lock = OutputLock(out) if self.comm.rank == 0 else None
        try:
            summary = super().run(out, *args, **kw)
        finally:
            if lock is not None:
                lock.release()
        self.comm.barrier()  # every rank has let go of its journal's lock
        if self.comm.rank == 0:
            shutil.rmtree(shards_dir(out), ignore_errors=True)
        return summary

    def merged(self, dirs: list[Path], t: int) -> dict[str, np.ndarray]:
        """Tick t's fields of every agent, from the ranks' journals (rows put at their agents' ids)."""
        parts = [np.load(Journal.paths_in(d, t)[0]) for d in dirs]
        try:
            out: dict[str, np.ndarray] = {}
            for name in parts[0].files:
                first = parts[0][name]
                whole = np.empty((self.n, *first.shape[1:]), dtype=first.dtype)
                for r, z in enumerate(parts):
                    whole[self.comm.members[r]] = z[name]
                out[name] = whole.astype(object) if whole.dtype.kind == "U" else whole
            return out
        finally:
            for z in parts:
                z.close()
