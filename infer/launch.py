"""The ranks of a sharded rollout: P processes spawned on this machine (`lsm rollout --nproc P`),
or the ranks `torchrun` started (on one machine or several: `torchrun --nnodes ... -m lsm rollout
...`; the output folder must then be one file system every node sees).

Each spawned rank joins a gloo process group on the loopback, runs `sharded.run_rank` with
`cores / P` torch threads, and reports back through files in a private temporary folder: rank 0
its summary, a rank that fails its error. When one rank ends early (an error, Ctrl-C, kill -9),
the others are stopped and the command says in one paragraph which rank ended and how, and from
which tick the same command resumes (every finished tick of every rank is journaled).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from lsm.config import ConfigError, Interrupted, UsageError
from lsm.errors import quiet_teardown
from lsm.infer.sharded import ShardedRun, run_rank
from lsm.society.loop.sharded import journaled_ticks, shards_dir
from lsm.society.store import StoreError

USER_ERRORS = (ConfigError, StoreError, UsageError, FileNotFoundError, OSError)
"""A rank's errors that are about the inputs or the machine (said as they are, exit 2), not the
ranks' connection breaking because another rank ended."""


class RankFailed(StoreError):
    """A rank of a sharded run ended without finishing (killed, or its connection broke)."""


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, ranks) when this process is one of several ranks `torchrun` started, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        return int(os.environ["RANK"]), size
    return None


def run_sharded(run: ShardedRun, nproc: int) -> tuple[dict[str, Any], bool]:
    """Run `run` on `nproc` spawned ranks, or as the rank torchrun made this process; returns
    (the summary, whether this process is rank 0, which writes the report)."""
    import torch.distributed as dist

    started = torchrun_rank()
    if started is not None:
        dist.init_process_group("gloo", timeout=timedelta(minutes=30))
        try:
            return run_rank(run), started[0] == 0
        finally:
            dist.destroy_process_group()
    return spawn(run, nproc), True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, size: int, port: int, run: ShardedRun, folder: str, threads: int) -> None:
    import sys

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(minutes=30))
        summary = run_rank(run)
        if rank == 0:
            Path(folder, "summary.json").write_text(json.dumps(summary))
        dist.destroy_process_group()
    except BaseException as err:  # noqa: BLE001 - said by the launcher, in one paragraph
        if isinstance(err, KeyboardInterrupt):
            quiet_teardown()
        said = {"kind": type(err).__name__, "message": str(err), "user": isinstance(err, USER_ERRORS),
                "interrupted": isinstance(err, KeyboardInterrupt)}
        Path(folder, f"error{rank}.json").write_text(json.dumps(said))
        sys.exit(2)


def spawn(run: ShardedRun, nproc: int) -> dict[str, Any]:
    """`nproc` ranks on this machine (module docstring); the summary of rank 0."""
    import logging

    import torch
    import torch.multiprocessing as mp

    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # its "Terminating process ..." line: we say why
    threads = max(1, torch.get_num_threads() // nproc)
    # a rank killed by a signal leaves semaphores that multiprocessing's resource tracker (a process
    # started with this environment) frees at exit, with a warning that would follow our paragraph
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS", ""), quiet]))
    with tempfile.TemporaryDirectory(prefix="lsm-ranks-") as folder:
        ctx = mp.start_processes(_rank_main, args=(nproc, _free_port(), run, folder, threads), nprocs=nproc,
                                 join=False, start_method="spawn")
        try:
            while not ctx.join(timeout=0.5):
                pass
        except KeyboardInterrupt:  # Ctrl-C (sent to this process alone, or to every rank from a terminal)
            time.sleep(0.5)  # a terminal's Ctrl-C reached the ranks too: let them start saving
            for p in ctx.processes:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGINT)  # each rank journals what it has and says so
            for p in ctx.processes:
                p.join(30)
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise _failure(run, nproc, ctx, folder, interrupted=True) from None
        except Exception as err:  # noqa: BLE001 - torch's ProcessExitedException: a rank ended early
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                p.join()
            raise _failure(run, nproc, ctx, folder, first=getattr(err, "error_index", None)) from None
        return json.loads(Path(folder, "summary.json").read_text())


def _failure(run: ShardedRun, nproc: int, ctx, folder: str, interrupted: bool = False,
             first: int | None = None) -> BaseException:
    """The one error that says why a sharded run ended (module docstring); `first`: the rank
    seen to end first (the others may have been stopped by the launcher since)."""
    errors: dict[int, dict[str, Any]] = {}  # rank -> what it said (`_rank_main`)
    for r in range(nproc):
        f = Path(folder, f"error{r}.json")
        if f.is_file():
            try:
                errors[r] = json.loads(f.read_text())
            except ValueError:  # killed while writing it
                pass
    done = journaled_ticks(run.out, nproc)
    resume = (f"{run.out} was not written. The {done} ticks every rank finished are journaled in {shards_dir(run.out)}/: "
              f"run the same command again to resume from tick {done}, or add --restart true to start over.")
    if interrupted:  # (each rank's own message counts its own ticks only)
        return Interrupted(f"Interrupted. {resume}")
    for r, said in sorted(errors.items()):
        if said["user"] and not said["interrupted"]:
            return RankFailed(said["message"])  # about the inputs or the machine: said as one process says it
    signalled = [(r, p) for r, p in enumerate(ctx.processes) if p.exitcode is not None and p.exitcode < 0 and r not in errors]
    signalled.sort(key=lambda rp: (rp[0] != first, rp[1].exitcode == -signal.SIGTERM))  # the first to end, then a kill from outside
    if signalled:
        r, p = signalled[0]
        return RankFailed(f"lsm rollout --nproc {nproc}: rank {r} of {nproc} (pid {p.pid}) was killed by "
                          f"{signal.Signals(-p.exitcode).name}, and the other ranks were stopped. {resume}")
    r, said = min(errors.items()) if errors else (0, {"kind": "an unknown error", "message": "no rank said why"})
    return RankFailed(f"lsm rollout --nproc {nproc}: rank {r} of {nproc} ended with {said['kind']}: {said['message']}. {resume}")
