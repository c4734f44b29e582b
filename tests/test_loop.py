"""The society loop: one perception for every policy, resume after kill -9, the planted process
against its written mechanism, and its null variant."""
from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lsm.config import CONFIG_ROOT, load_config, shipped
from lsm.society import seeds
from lsm.society.loop.neighbors import NeighborIndex, NeighborRule
from lsm.society.loop.runner import MAX_EVENTS, Perception, SocietyLoop, capped_exposure
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.policy import PlantedSociety
from lsm.society.scenario import load_scenario, scenario_from_dict
from lsm.society.store import TraceFile
from lsm.society.world import build_world, save_world
from lsm.society.world.graph import EDGE_TYPES
from tests.conftest import like_a_terminal

PLANTED = shipped("teacher", "planted.yaml")
PLANTED_NULL = shipped("teacher", "planted_null.yaml")


def _scenario(ticks: int = 3) -> dict:
    """A vaccine campaign with scheduled events only (triggers depend on each policy's answers),
    more events than the cap at tick 0, and seeded partial exposure."""
    data = yaml.safe_load(shipped("scenarios", "vaccine_campaign.yaml").read_text())
    ev = data["events"][0]
    extra = [{**ev, "text": f"Bulletin {k}.", "exposure": {"fraction": 0.7}} for k in range(MAX_EVENTS + 1)]
    data.update(ticks=ticks, triggers=[], events=extra + [{**e, "tick": 1} for e in data["events"][:2]])
    return data


class Recorder:
    """Wraps a policy and keeps every perception it receives."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def act(self, p, progress=None, capture=False):
        self.seen.append(p)
        return self.inner.act(p, progress, capture)


def test_capped_exposure_keeps_the_first_events_in_schedule_order():
    class E:
        def __init__(self, uid):
            self.uid = uid

    exposed = np.array([[1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=bool)
    seen, ids = capped_exposure(exposed, [E(10 + k) for k in range(6)])
    assert ids.tolist() == [[10, 11, 12, 13], [11, 13, -1, -1], [-1, -1, -1, -1]]
    assert seen.sum(1).tolist() == [4, 2, 0] and not seen[0, 4:].any()


def test_varied_neighbour_counts_are_seeded_and_span_0_to_k(anes_world):
    idx = NeighborIndex.of(anes_world.graph, NeighborRule().weights)
    spoke = np.ones(anes_world.n, dtype=bool)
    rule = NeighborRule(k=4, vary=True)
    a = idx.shown(rule, spoke, seed=5, tick=2)
    assert np.array_equal(a, idx.shown(rule, spoke, seed=5, tick=2))
    counts = (a >= 0).sum(1)
    assert set(counts.tolist()) == {0, 1, 2, 3, 4}
    fixed = idx.shown(NeighborRule(k=4), spoke, seed=5, tick=2)
    kept = a >= 0  # a varied row is a prefix of the fixed row: the same draw, truncated
    assert np.array_equal(a[kept], fixed[kept])
    assert not np.array_equal(idx.shown(rule, spoke, seed=6, tick=2), a)


def test_teacher_planted_and_student_perceive_the_same_society(tmp_path, trained, embedded):
    """One loop, three policies: for the same world, scenario and seed, the LLM teacher, the
    planted society and the student are exposed to the same events and shown the same
    neighbours (wherever the same senders spoke last tick)."""
    import torch

    from lsm.society.embed import SentenceEncoder
    from lsm.data_gen.teacher.config import TeacherConfig
    from lsm.data_gen.teacher.llm import Teacher
    from lsm.infer.rollout import RolloutConfig, StudentPolicy
    from lsm.model.checkpoint import load_checkpoint

    _, ckpt, _ = trained
    world = build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=5, seed=3)
    sc = scenario_from_dict(_scenario(ticks=2))
    rule, seed = NeighborRule(k=3, vary=True), 11
    tcfg = load_config(TeacherConfig, shipped("teacher", "debug.yaml"))
    llm = Teacher(tcfg, embedded, sc, world.population, world.graph, seed,
                  SentenceEncoder())
    student = StudentPolicy(load_checkpoint(ckpt), world, sc, RolloutConfig(seed=seed),
                            persona_emb=torch.zeros(world.n, 384))
    planted = PlantedSociety(load_config(PlantedConfig, PLANTED), sc, world.population, world.graph, seed)
    runs = {}
    for name, policy in (("teacher", llm), ("student", student), ("planted", planted)):
        rec = Recorder(policy)
        data = [r.data for r in SocietyLoop(rec, sc, world.population, world.graph, seed, rule).ticks()]
        runs[name] = (rec.seen, data)
    ref_p, ref_d = runs["planted"]
    ins = [set(world.graph.edge_index[0][world.graph.edge_index[1] == i].tolist()) for i in range(world.n)]
    compared = 0
    for name in ("teacher", "student"):
        seen, data = runs[name]
        for t in range(2):
            p, q = seen[t], ref_p[t]
            assert [e.uid for e in p.events] == [e.uid for e in q.events]
            np.testing.assert_array_equal(p.seen, q.seen)
            np.testing.assert_array_equal(data[t]["exposed_events"], ref_d[t]["exposed_events"])
            for i in range(world.n):  # same senders spoke -> same neighbours shown
                if all(p.spoke[j] == q.spoke[j] for j in ins[i]):
                    np.testing.assert_array_equal(data[t]["shown_neighbors"][i], ref_d[t]["shown_neighbors"][i])
                    compared += t
    assert compared >= world.n  # tick 1 was compared for most agents of both policies
    assert (ref_d[0]["shown_neighbors"] == -1).all() and (ref_d[1]["shown_neighbors"] >= 0).any()
    assert (ref_d[0]["exposed_events"] >= 0).sum(1).max() == MAX_EVENTS


def _world(tmp: Path, n: int, seed: int = 0) -> Path:
    path = tmp / f"w{n}.h5"
    if not path.exists():
        save_world(build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), n, seed), path)
    return path


def test_planted_tick_matches_its_written_mechanism(tmp_path):
    """Recompute one tick's opinions and logits agent by agent from the config's formula, the
    perception and the previous tick, independently of the vectorised code."""
    from lsm.data_gen.gen import generate

    world_path = _world(tmp_path, 300)
    sc_path = tmp_path / "sc.yaml"
    sc_path.write_text(yaml.safe_dump(_scenario(ticks=3)))
    out = tmp_path / "p.h5"
    generate(world_path, sc_path, PLANTED, seed=2, out=out, quiet=True, llm_seed=9)
    cfg = load_config(PlantedConfig, PLANTED)
    with TraceFile(out) as tf:
        pop, graph = tf.world()
        sc = tf.scenario
        shown, exposed = tf.array("shown_neighbors"), tf.array("exposed_events")
        stance, decision, dist = tf.array("stance"), tf.array("decision"), tf.array("decision_dist")
        channel_dist = tf.array("channel_dist").astype(np.float64)
        events = {e["uid"]: e for e in tf.events()}
        assert tf.f.attrs["teacher_backend"] == "planted:planted"
    society = PlantedSociety(cfg, sc, pop, graph, seed=2, llm_seed=9)
    t = 2
    noise = society.noise(t)
    r = seeds.rng(2, seeds.Stream.PLANTED_EFFECTS).normal(0.0, cfg.agent_sd, pop.n)
    labels = sc.actions.labels
    even = np.linspace(1, -1, len(labels))
    lean = [cfg.action_lean.get(a, even[k]) for k, a in enumerate(labels)]
    for i in range(pop.n):
        o = 0.0
        for attr, eff in cfg.identity.items():
            o += eff.get(pop.categories[attr][pop.categorical[attr][i]], 0.0)
        for attr, coef in cfg.identity_numeric.items():
            lo, hi = pop.numeric_range[attr]
            o += coef * (2 * (pop.numeric[attr][i] - lo) / (hi - lo) - 1)
        m = cfg.conformity.get(pop.categories[cfg.conformity_attribute][pop.categorical[cfg.conformity_attribute][i]], 1.0)
        for j in shown[t, i][shown[t, i] >= 0]:
            types = graph.edge_type[(graph.edge_index[0] == j) & (graph.edge_index[1] == i)]
            etype = EDGE_TYPES[types.min()] if len(types) else "weak_tie"
            o += cfg.dose * m * cfg.influence[etype] * stance[t - 1, j] / cfg.neighbors.k
        for uid in exposed[t, i][exposed[t, i] >= 0]:
            e = events[int(uid)]
            o += (cfg.events.valence_credibility * e["valence"] * e["credibility"]
                  + cfg.events.source_type.get(e["source_type"], 0.0) + cfg.events.framing.get(e["framing"], 0.0))
        o += r[i] + cfg.noise_sd * noise.opinion[i]
        u = np.array([cfg.action_bias.get(a, 0.0) + cfg.scale * lean[k] * o for k, a in enumerate(labels)])
        u[decision[t - 1, i]] += cfg.persistence
        p = np.exp(u - u.max())
        np.testing.assert_allclose(dist[t, i], p / p.sum(), rtol=2e-5, atol=1e-6, err_msg=f"agent {i}")
        assert stance[t, i] == pytest.approx(np.clip(np.tanh(o) + cfg.stance_sd * noise.stance[i], -1, 1), abs=1e-5)
        for c, name in enumerate(sc.channel_names):  # loadings and biases looked up by the channel's name
            z = (cfg.channel_bias.get(name, 0.0) + cfg.channel_loading.get(name, cfg.default_loading) * o
                 + society.channel_effect[i, c] + cfg.channel_noise_sd * noise.channels[i, c])
            q = np.exp(-((np.arange(11) - 10 / (1 + np.exp(-z))) ** 2) / (2 * cfg.channel_spread**2))
            np.testing.assert_allclose(channel_dist[t, i, c], q / q.sum(), atol=1e-3, err_msg=f"agent {i}, {name}")
    # the decision is the seeded draw from that distribution
    draw = np.minimum((dist[t].astype(np.float64).cumsum(1) < noise.draw[:, None]).sum(1), len(labels) - 1)
    assert (draw == decision[t]).mean() > 0.99


def test_null_variant_decisions_do_not_depend_on_neighbours(tmp_path):
    """dose 0: decisions and distributions are identical whether agents hear 4 neighbours or
    none; with the planted influence they are not."""
    world = build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), 400, 1)
    sc = scenario_from_dict(_scenario(ticks=4))
    out = {}
    for name, path in (("null", PLANTED_NULL), ("planted", PLANTED)):
        cfg = load_config(PlantedConfig, path)
        for k in (0, 4):
            policy = PlantedSociety(cfg, sc, world.population, world.graph, seed=3, llm_seed=4)
            ticks = list(SocietyLoop(policy, sc, world.population, world.graph, 3, NeighborRule(k=k, vary=True)).ticks())
            out[name, k] = np.stack([r.data["decision_dist"] for r in ticks]), np.stack([r.data["decision"] for r in ticks])
    np.testing.assert_array_equal(out["null", 0][0], out["null", 4][0])
    np.testing.assert_array_equal(out["null", 0][1], out["null", 4][1])
    assert np.abs(out["planted", 0][0] - out["planted", 4][0]).sum(-1).mean() > 0.05  # influence moves distributions


def test_planted_society_has_a_rare_action_and_is_deterministic(tmp_path):
    from lsm.data_gen.gen import generate

    w = _world(tmp_path, 1000, 4)
    sc = shipped("scenarios", "vaccine_campaign.yaml")
    a = generate(w, sc, PLANTED, seed=1, out=tmp_path / "a.h5", quiet=True)
    b = generate(w, sc, PLANTED, seed=1, out=tmp_path / "b.h5", quiet=True)
    assert a["decision_shares"] == b["decision_shares"]
    refuse = [s["refuse"] for s in a["decision_shares"]]
    assert 0 < min(refuse) and max(refuse) < 0.08 and np.mean(refuse) < 0.05
    with TraceFile(tmp_path / "a.h5") as f, TraceFile(tmp_path / "b.h5") as g:
        for name in f.fields:
            x, y = f.array(name), g.array(name)
            assert (x == y).all() if x.dtype == object else np.array_equal(x, y, equal_nan=True), name
        dist = f.array("channel_dist").astype(np.float32)
        np.testing.assert_allclose(f.array("channels"), (dist * np.arange(11)).sum(-1) / 10, atol=1e-6)
        counts = (f.array("shown_neighbors")[1:] >= 0).sum(-1)
        assert set(np.unique(counts).tolist()) == {0, 1, 2, 3, 4}  # varied neighbourhoods


def test_student_rollout_interrupted_and_killed_mid_run_resumes_to_an_identical_file(rollout_20k, tmp_path, kill_after_tick,
                                                                                    capsys):
    """A second writer of the same output is refused; Ctrl-C, then kill -9, `lsm rollout` once it
    has journaled a tick; the same command finishes the run and the file equals an uninterrupted run's."""
    lsm = [sys.executable, "-m", "lsm"]
    args, ref = rollout_20k  # a 20,000-agent world with templated personas: nothing to embed
    cut = tmp_path / "cut.h5"
    assert not Path(str(ref) + ".lock").exists()  # a finished run leaves no lock file
    # another process writing the same output: refused at once, nothing changed
    from lsm.cli import main
    from lsm.society.loop.journal import OutputLock

    lock = OutputLock(cut)
    try:
        assert main([*args, "--out", str(cut)]) == 2
    finally:
        lock.release()
    assert f"another lsm process (pid {os.getpid()}) is writing it" in capsys.readouterr().err
    assert not cut.exists() and not Path(str(cut) + ".journal").exists()
    # Ctrl-C once a tick is journaled: exit 130, the output not written, the message says how to resume
    proc = subprocess.Popen(lsm + args + ["--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=like_a_terminal)
    journal = Path(str(cut) + ".journal")
    while not (journal / "state_0000.json").exists() and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    kept = len(list(journal.glob("state_*.json")))
    assert proc.returncode == 130 and not cut.exists(), err
    assert f"{kept} of 8 ticks are journaled" in err and "Run the same command again to resume" in err and "Traceback" not in err, err
    # then kill -9 later in the resumed run: the same command still finishes it
    journal = kill_after_tick(args, cut, tick=kept + 1, timeout=300)
    assert not cut.exists() and (journal / f"state_{kept + 1:04d}.json").exists()
    done = len(list(journal.glob("state_*.json")))
    assert done < load_scenario(shipped("scenarios", "vaccine_campaign.yaml")).ticks
    fresh = tmp_path / "fresh.h5"  # the same partial journal, for `--restart true` below
    shutil.copytree(journal, str(fresh) + ".journal")
    r = subprocess.run(lsm + args + ["--out", str(cut)], check=True, capture_output=True, text=True)
    assert not journal.exists()
    with TraceFile(ref) as a, TraceFile(cut) as b:
        assert a.fields == b.fields and a.events() == b.events()
        assert b.f.attrs["complete"] and '"resumed_from_tick": %d' % done in b.f.attrs["summary"]
        assert a.f.attrs["content_checksum"] == b.f.attrs["content_checksum"]  # the summary differs; content does not
        for name in a.fields:
            np.testing.assert_array_equal(a.array(name), b.array(name), err_msg=name)
    assert "rollout:" in r.stdout
    # --restart true discards a journal of this very run: it starts at tick 0 and ends the same
    assert main([*args, "--out", str(fresh), "--restart", "true"]) == 0
    with TraceFile(ref) as a, TraceFile(fresh) as b:
        assert json.loads(b.f.attrs["summary"])["resumed_from_tick"] == 0
        for name in a.fields:
            np.testing.assert_array_equal(a.array(name), b.array(name), err_msg=name)


def test_a_journal_from_other_inputs_is_refused_and_gen_restart_discards_it(tmp_path, capsys):
    """`lsm gen` refuses a foreign journal (exit 2, the flag named); `--restart true` discards it
    and the run equals one that never met a journal."""
    from lsm.cli import main
    from lsm.data_gen.gen import generate

    w = _world(tmp_path, 200)
    sc = shipped("scenarios", "vaccine_campaign.yaml")
    generate(w, sc, PLANTED, seed=0, out=tmp_path / "ref.h5", quiet=True)
    journal = tmp_path / "o.h5.journal"
    journal.mkdir()
    (journal / "run.json").write_text('{"fingerprint": "someone-else"}')
    (journal / "tick_0000.npz").write_bytes(b"not a tick of this run")
    args = ["gen", "--world", str(w), "--scenario", str(sc), "--teacher", str(PLANTED), "--seed", "0", "--quiet", "true",
            "--out", str(tmp_path / "o.h5")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--restart true" in err and "Traceback" not in err and (journal / "tick_0000.npz").exists()
    assert main([*args, "--restart", "true"]) == 0
    assert not journal.exists()
    with TraceFile(tmp_path / "ref.h5") as a, TraceFile(tmp_path / "o.h5") as b:
        assert b.n_ticks == 8 and json.loads(b.f.attrs["summary"])["resumed_from_tick"] == 0
        for name in a.fields:
            np.testing.assert_array_equal(a.array(name), b.array(name), err_msg=name)


def test_planted_config_refuses_unknown_world_attributes(anes_world):
    cfg = load_config(PlantedConfig, PLANTED)
    cfg.identity = {"shoe_size": {"big": 1.0}}
    sc = load_scenario(CONFIG_ROOT / "scenarios/vaccine_campaign.yaml")
    with pytest.raises(ValueError, match="shoe_size"):
        PlantedSociety(cfg, sc, anes_world.population, anes_world.graph, 0)


def test_perception_lists_events_per_agent():
    class E:
        def __init__(self, uid):
            self.uid = uid

    evs = [E(3), E(4)]
    p = Perception(0, evs, np.array([[True, False], [True, True]]), np.array([[3, -1], [3, 4]]),
                   np.full((2, 1), -1), np.zeros(2, bool))
    assert [e.uid for e in p.events_of(1)] == [3, 4] and [e.uid for e in p.events_of(0)] == [3]


def test_a_lock_file_removed_by_its_last_holder_is_not_trusted(tmp_path, monkeypatch):
    """A writer that opened `<out>.lock` just before the run holding it removed it would lock a
    file no longer at the path: it notices (the path names another file, or none) and locks the
    file at the path instead, so a third writer cannot hold the lock beside it."""
    import lsm.society.loop.journal as journal_mod
    from lsm.society.loop.journal import OutputLock, OutputLocked

    out = tmp_path / "r.h5"
    first = OutputLock(out)
    stale = open(first.path, "a+")  # opened while the first run still held the lock
    first.release()
    assert not first.path.exists()  # released: the lock file is gone
    handles = iter([stale])
    real_open = open
    monkeypatch.setattr(journal_mod, "open", lambda *a, **k: next(handles, None) or real_open(*a, **k), raising=False)
    second = OutputLock(out)  # its first open returns the removed file; it must not settle for it
    assert stale.closed and second.path.exists()
    assert second.path.read_text() == str(os.getpid())
    monkeypatch.undo()
    with pytest.raises(OutputLocked):
        OutputLock(out)
    second.release()
    assert not second.path.exists()


def _limited(limit: int):
    """preexec_fn: the child may write files of at most `limit` bytes (RLIMIT_FSIZE; EFBIG past it)."""
    import resource

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return set_limit


def test_a_world_too_big_for_the_room_left_is_refused_in_one_paragraph(tmp_path):
    """`lsm world` where a file may hold 2 MB (ulimit -f): refused before a byte is written (HDF5
    crashes on a write that fails half way), one paragraph, exit 2, nothing at the final name."""
    out = tmp_path / "w.h5"
    proc = subprocess.run([sys.executable, "-m", "lsm", "world", "--population", "anes96", "--graph", "default", "--agents",
                           "20000", "--seed", "1", "--out", str(out)], capture_output=True, text=True, preexec_fn=_limited(2_000_000))
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "ulimit -f" in err and "Nothing was written" in err, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_a_rollout_without_room_for_its_file_keeps_its_journal_and_resumes(trained, tmp_path):
    """The ticks fit (each journaled), the assembled file would not: one paragraph saying the
    journal is kept, exit 2, no file; the same command with room writes the file from the journal."""
    _, ckpt, world = trained
    out = tmp_path / "r.h5"
    args = [sys.executable, "-m", "lsm", "rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign",
            "--ticks", "3", "--seed", "1", "--quiet", "true", "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, preexec_fn=_limited(600_000))
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert "ulimit -f" in err and "kept in" in err and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    journal = Path(str(out) + ".journal")
    assert not out.exists() and len(list(journal.glob("state_*.json"))) == 3
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file() and not journal.exists() and not Path(str(out) + ".lock").exists()


def test_a_rollout_journals_its_state_every_few_ticks_and_a_resume_replays_the_rest(trained, tmp_path):
    """The student's agent state is journaled every `journal_every` (4) ticks, each tick's outputs
    every tick. Stopped after tick 5, the journal holds the state of tick 3 only; resumed, the run
    replays ticks 4 and 5 from it and ends with the file an uninterrupted run writes."""
    from lsm.config import Interrupted
    from lsm.infer.rollout import Rollout, RolloutConfig, StudentPolicy
    from lsm.model.checkpoint import load_checkpoint
    from lsm.society.scenario import load_scenario
    from lsm.society.store import TraceFile
    from lsm.society.world import load_world

    _, ckpt, world_file = trained
    student, world = load_checkpoint(ckpt), load_world(world_file)
    sc = load_scenario("configs/scenarios/vaccine_campaign.yaml")
    assert StudentPolicy.journal_every == 4 and sc.ticks == 8

    def run(out, on_tick=None):
        r = Rollout(student, world, sc, RolloutConfig(seed=4))
        return r.run(out, world_file=world_file, progress=on_tick)

    run(tmp_path / "ref.h5")

    def stop_after_5(t: int) -> None:
        if t == 5:
            raise KeyboardInterrupt

    cut = tmp_path / "cut.h5"
    with pytest.raises(Interrupted):
        run(cut, stop_after_5)
    journal = Path(str(cut) + ".journal")
    assert sorted(p.name for p in journal.glob("arrays_*.npz")) == ["arrays_0003.npz"]
    assert len(list(journal.glob("tick_*.npz"))) == 6
    summary = run(cut)
    assert summary["resumed_from_tick"] == 6
    with TraceFile(tmp_path / "ref.h5") as a, TraceFile(cut) as b:
        for name in ("decision", "decision_dist", "channels", "stance"):
            np.testing.assert_array_equal(a.array(name), b.array(name))
