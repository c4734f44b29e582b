"""Sharded rollouts (`lsm rollout --nproc P`, and under torchrun): the partition, a shard's
perception, bitwise equality with one process, a rank killed mid-run, a rank refused at the start."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from lsm.society.store import TraceFile
from lsm.society.world import load_world
from lsm.society.world.partition import partition
from tests.conftest import like_a_terminal


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_content(a: Path, b: Path) -> None:
    """Every dataset of the two files equal bit for bit, and their recorded content checksums."""
    x, y = _datasets(a), _datasets(b)
    assert sorted(x) == sorted(y)
    for name in x:
        assert x[name].dtype == y[name].dtype and x[name].shape == y[name].shape, name
        if x[name].dtype == object:  # strings
            assert x[name].tolist() == y[name].tolist(), name
        else:
            assert x[name].tobytes() == y[name].tobytes(), name
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        assert f.attrs["content_checksum"] == g.attrs["content_checksum"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_partition_covers_every_agent_once_keeps_households_whole_and_cuts_fewer_ties_than_chance(anes_world):
    g = anes_world.graph
    n = g.n
    biggest = np.bincount(g.household).max()
    rng = np.random.default_rng(0)
    for shards in (1, 2, 3, 7):
        part = partition(g.household, shards)
        members = [part.members(r) for r in range(shards)]
        assert np.array_equal(np.sort(np.concatenate(members)), np.arange(n))  # each agent once
        assert all(np.all(np.diff(m) > 0) for m in members)  # ascending ids: the order of a shard's rows
        assert part.sizes().sum() == n and np.abs(part.sizes() - n / shards).max() <= biggest
        for r, m in enumerate(members):  # no household is split
            assert np.isin(g.household[m], g.household[part.owner != r], invert=True).all()
        if shards > 1:
            chance = rng.integers(0, shards, n)
            random_cut = np.mean(chance[g.edge_index[0]] != chance[g.edge_index[1]])
            assert part.edge_cut(g.edge_index) < random_cut - 0.05, (shards, part.edge_cut(g.edge_index), random_cut)
    assert partition(g.household, 1).edge_cut(g.edge_index) == 0.0


def test_sharded_rollouts_on_2_and_3_ranks_equal_one_process_bit_for_bit(trained, world_file, tmp_path, capsys):
    """The same command with --nproc 1, 2 and 3, and under torchrun with 2 ranks, writes the same
    datasets (and content checksum); the sharded runs say how they were split and leave no journal
    or lock behind."""
    from lsm.cli import main

    _, ckpt, _ = trained
    args = ["rollout", "--ckpt", str(ckpt), "--world", str(world_file), "--scenario", "vaccine_campaign", "--seed", "5",
            "--quiet", "true", "--clusters", "2"]
    ref = tmp_path / "one.h5"
    assert main([*args, "--out", str(ref)]) == 0
    capsys.readouterr()
    for ranks in (2, 3):
        out = tmp_path / f"ranks{ranks}.h5"
        assert main([*args, "--out", str(out), "--nproc", str(ranks)]) == 0
        printed = capsys.readouterr().out
        assert f"sharded over {ranks} ranks" in printed and "halo" in printed, printed
        assert_same_content(ref, out)
        with h5py.File(out, "r") as f:
            summary = json.loads(f.attrs["summary"])
        assert summary["ranks"] == ranks and sum(summary["rank_agents"]) == 3000
        assert summary["halo_bytes_per_tick"] > 0  # neighbours across the cut were heard
        assert not list(tmp_path.glob(f"ranks{ranks}.h5.*")), list(tmp_path.glob(f"ranks{ranks}.h5.*"))  # no .shards, no .lock
    # the same command under torchrun: its ranks are torchrun's, rank 0 writes the file and the report
    port = _free_port()
    out = tmp_path / "torchrun.h5"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
                        "-m", "lsm", *args, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("sharded over 2 ranks") == 1 and (tmp_path / "torchrun_report" / "summary.md").is_file()
    assert_same_content(ref, out)
    with TraceFile(ref) as f:  # not vacuous: a tenth of what agents heard came from the other shard
        shown = f.array("shown_neighbors")[1:]  # (T - 1, N, K)
        owner = partition(load_world(world_file).graph.household, 2).owner
        _, receiver, slot = np.nonzero(shown >= 0)
        assert (owner[shown[shown >= 0]] != owner[receiver]).mean() > 0.1


def test_a_rank_refused_at_the_start_ends_every_rank_with_one_paragraph(trained, world_file, tmp_path, capsys):
    """Another process writes the output: rank 0 cannot lock it; the command says so (exit 2, no
    traceback) and the other rank is stopped, nothing written."""
    from lsm.cli import main
    from lsm.society.loop.journal import OutputLock

    _, ckpt, _ = trained
    out = tmp_path / "locked.h5"
    lock = OutputLock(out)
    try:
        code = main(["rollout", "--ckpt", str(ckpt), "--world", str(world_file), "--scenario", "vaccine_campaign",
                     "--quiet", "true", "--out", str(out), "--nproc", "2"])
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert code == 2 and f"another lsm process (pid {os.getpid()}) is writing it" in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_rank_killed_mid_run_stops_the_others_and_the_same_command_resumes_to_the_same_file(rollout_20k, tmp_path):
    """Ctrl-C once tick 0 is journaled: exit 130, saying how to resume. Resumed, kill -9 of rank 1
    once it has journaled tick 1: the command ends (exit 2) with one paragraph naming the rank,
    the signal and the tick it resumes from; run again, it finishes from there and the file
    equals an uninterrupted one-process run's."""
    lsm = [sys.executable, "-m", "lsm"]
    args, ref = rollout_20k
    cut = tmp_path / "cut.h5"
    shards = Path(str(cut) + ".shards")

    def start_and_wait_for(tick: int) -> subprocess.Popen:
        proc = subprocess.Popen(lsm + args + ["--out", str(cut), "--nproc", "2"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, preexec_fn=like_a_terminal)
        deadline = time.time() + 300
        while not ((shards / "rank1of2.journal" / f"state_{tick:04d}.json").exists() and (shards / "rank1of2.lock").exists()) \
                and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        return proc

    # Ctrl-C to the launcher: every rank journals what it has; exit 130 and how to resume
    proc = start_and_wait_for(0)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and not cut.exists(), err
    assert "journaled in" in err and "resume from tick" in err and "Traceback" not in err, err
    # kill -9 of one rank, later in the resumed run
    kept = max(len(list((shards / f"rank{r}of2.journal").glob("state_*.json"))) for r in range(2))
    proc = start_and_wait_for(kept + 1)
    assert proc.poll() is None, "the run finished before a rank could be killed"
    pid = int((shards / "rank1of2.lock").read_text())
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and not cut.exists(), err
    assert "rank 1 of 2" in err and "killed by SIGKILL" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one paragraph
    done = int(err.split("resume from tick ")[1].split(",")[0])
    assert done >= 1
    r = subprocess.run(lsm + args + ["--out", str(cut), "--nproc", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not shards.exists()
    with h5py.File(cut, "r") as f:
        assert json.loads(f.attrs["summary"])["resumed_from_tick"] == done
    assert_same_content(ref, cut)


@pytest.mark.parametrize("nproc, says", [("0", "expected at least 1 rank"), ("-1", "expected at least 1 rank"),
                                         ("5000", "households, and a shard holds whole households")])
def test_a_rank_count_that_cannot_be_used_is_refused(trained, world_file, tmp_path, capsys, nproc, says):
    """Fewer than 1 rank, or more ranks than the world has households: one paragraph, exit 2, no process started."""
    from lsm.cli import main

    _, ckpt, _ = trained
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world_file), "--scenario", "vaccine_campaign",
                 "--out", str(tmp_path / "x.h5"), "--nproc", nproc]) == 2
    err = capsys.readouterr().err
    assert f"--nproc {nproc}: " in err and says in err, err


def test_a_shard_is_shown_whom_its_agents_are_shown_in_one_process(anes_world, monkeypatch):
    """The shard's `NeighborIndex` (its receivers' in-edges, their keys picked from the whole
    Gumbel stream drawn in blocks) and `EdgeTyper` (its receivers' ties) give its rows of the
    population's tables, for every tick, seed and shard."""
    import lsm.society.loop.neighbors as nb
    from lsm.society.loop.neighbors import EdgeTyper, NeighborIndex, NeighborRule

    monkeypatch.setattr(nb, "GUMBEL_BLOCK", 4096)  # several blocks, one cut inside a receiver's edges
    g, rule = anes_world.graph, NeighborRule()
    whole, typer = NeighborIndex.of(g, rule.weights), EdgeTyper(g)
    spoke = np.random.default_rng(1).random(g.n) < 0.7
    part = partition(g.household, 3)
    for seed, tick in ((4, 2), (9, 0)):
        shown = whole.shown(rule, spoke, seed, tick)
        assert (shown >= 0).any()
        for r in range(3):
            m = part.members(r)
            mine = NeighborIndex.of(g, rule.weights, receivers=m).shown(rule, spoke, seed, tick)
            assert np.array_equal(mine, shown[m])
            assert np.array_equal(EdgeTyper(g, receivers=m).table(mine, m), typer.table(shown[m], m))
