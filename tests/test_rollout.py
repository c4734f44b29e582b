"""Student rollouts, reports, counterfactuals and sweeps on real (tiny) worlds and checkpoints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lsm.config import CONFIG_ROOT
from lsm.society.scenario import load_scenario
from lsm.society.store import TraceFile
from lsm.society.world.graph import EDGE_TYPES
from lsm.infer.rollout import Rollout, RolloutConfig
from lsm.model.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data_gen/corpus/n20"


def _rollout(ckpt, world, scenario="vaccine_campaign", seed=0, **kw):
    from lsm.society.world import load_world

    sc_path = CONFIG_ROOT / f"scenarios/{scenario}.yaml"
    return Rollout(load_checkpoint(ckpt), load_world(world), load_scenario(sc_path), RolloutConfig(seed=seed, **kw)), sc_path


def test_rollout_is_deterministic_and_the_streamed_file_equals_memory(trained):
    tmp, ckpt, world = trained
    r, sc_path = _rollout(ckpt, world)
    a = r.run(tmp / "a.h5", world, sc_path.read_text(), keep=True)
    b = _rollout(ckpt, world)[0].run(tmp / "b.h5", world, sc_path.read_text())
    assert a["decision_shares"] == b["decision_shares"]
    with TraceFile(tmp / "a.h5") as fa, TraceFile(tmp / "b.h5") as fb:
        assert fa.kind == "student_rollout" and fa.n_ticks == r.n_ticks == len(a["ticks_data"])
        for name in fa.fields:
            np.testing.assert_array_equal(fa.array(name), fb.array(name), err_msg=name)
            np.testing.assert_array_equal(fa.array(name), np.stack([t.data[name] for t in a["ticks_data"]]), err_msg=name)
        shown = fa.array("shown_neighbors")
        assert (shown[0] == -1).all() and (shown[1] >= 0).any()  # tick 0: nobody has spoken yet
        assert len(fa.events()) >= 1
    c = _rollout(ckpt, world, seed=1)[0].run(None)
    assert c["decision_shares"] != a["decision_shares"]  # the seed matters


def test_each_of_the_students_random_draws_follows_the_rollout_seed(trained, world_file, tmp_path):
    """Tick 0 of a scenario without events (nobody has spoken yet): the loop draws nothing that
    depends on the seed, so whatever differs between two seeds is the student's own draws. Each
    is checked apart: the agent noise moves the decision distribution; with the agent noise
    copied from one seed to the other the distributions are equal to the bit, yet the drawn
    decisions, stances and reported channels differ, and each seed's decision counts lie within
    4 standard errors of the distribution's; the tick noise (a student that has some) differs too.
    The same seed twice gives the same tick."""
    import dataclasses

    import yaml

    from lsm.society.world import load_world

    _, ckpt, _ = trained
    data = yaml.safe_load((CONFIG_ROOT / "scenarios/vaccine_campaign.yaml").read_text())
    data["events"], data["triggers"] = [], []
    (tmp_path / "quiet.yaml").write_text(yaml.safe_dump(data))
    student, world, sc = load_checkpoint(ckpt), load_world(world_file), load_scenario(tmp_path / "quiet.yaml")

    def tick0(seed: int, agent_noise: torch.Tensor | None = None):
        r = Rollout(student, world, sc, RolloutConfig(seed=seed))
        if agent_noise is not None:
            r.policy.state.agent_noise = agent_noise.clone()
        return r, r.loop.step(0).data

    r0, a = tick0(0)
    _, again = tick0(0)
    assert all(np.array_equal(a[k], again[k]) for k in a)
    _, b = tick0(1)
    assert not np.array_equal(a["decision_dist"], b["decision_dist"])  # the agent noise follows the seed
    _, c = tick0(1, agent_noise=r0.policy.fresh_state().agent_noise)
    assert np.array_equal(a["decision_dist"], c["decision_dist"])  # nothing else moves the distribution
    p = a["decision_dist"].astype(np.float64)  # (N, A)
    expected_changed = float((1 - (p**2).sum(1)).sum())  # agents whose two independent draws differ, on average
    assert expected_changed > 50
    assert (a["decision"] != c["decision"]).sum() > expected_changed / 2  # the decision's uniforms follow the seed
    assert (a["stance"] != c["stance"]).mean() > 0.5  # the stance's noise
    assert (a["channels"] != c["channels"]).mean() > 0.5  # the reported channels' noise
    for d in (a, c):  # and each seed's draws are draws from the distribution
        counts = np.bincount(d["decision"].astype(np.int64), minlength=p.shape[1])
        assert np.all(np.abs(counts - p.sum(0)) <= 4 * np.sqrt((p * (1 - p)).sum(0)) + 1), (counts, p.sum(0))
    model = r0.policy.model
    plain = model.cfg
    try:  # the tick noise, for a student that has one
        model.cfg = dataclasses.replace(plain, tick_noise=3)
        noise = [Rollout(student, world, sc, RolloutConfig(seed=s)).policy.inputs(r0.loop.perceive(0)).tick_noise for s in (0, 0, 1)]
    finally:
        model.cfg = plain
    assert noise[0].shape == (world.n, 3) and torch.equal(noise[0], noise[1]) and not torch.equal(noise[0], noise[2])


def test_rollout_evaluates_triggers_on_the_students_state(trained):
    tmp, ckpt, world = trained
    r, sc_path = _rollout(ckpt, world, scenario="guessing_game")
    r.run(tmp / "gg.h5", world, sc_path.read_text())
    with TraceFile(tmp / "gg.h5") as f:
        events = f.events()
        values = f.array("decision_value")
        valid = f.array("valid")
    announced = [e for e in events if e["origin"].startswith("trigger:")]
    assert len(announced) == r.n_ticks - 1  # the guessing game announces after every round but the last
    for t, event in enumerate(announced):  # each round's sentence, from that round's own guesses (float64, as the trigger sums)
        mean = values[t][valid[t]].astype(np.float64).mean()
        assert event["text"] == (f"Round {t + 1} result: the average guess was {mean:.1f}, so the winning number "
                                 f"(2/3 of the average) was {mean * 0.6666667:.1f}."), (t, event["text"], mean)


def test_report_counterfactual_and_sweep_via_the_cli(trained, tmp_path):
    from lsm.cli import main

    _, ckpt, world = trained
    edited = tmp_path / "edited.yaml"
    edited.write_text((CONFIG_ROOT / "scenarios/vaccine_campaign.yaml").read_text())
    out = tmp_path / "r.h5"
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", str(edited), "--out", str(out),
                 "--quiet", "true", "--counterfactual", str(edited), "--sweep", "events.0.exposure.fraction=0.1:0.9:3",
                 "--sweep2", "events.0.credibility=0.2,0.8"]) == 0
    rep = tmp_path / "r_report"
    for name in ("summary.md", "decision_shares.csv", "decision_shares.png", "channels.png", "clusters.png", "clusters.csv"):
        assert (rep / name).is_file(), name
    assert list(rep.glob("decision_shares_by_*.csv")) and list(rep.glob("channel_means_by_*.csv"))
    # an identical counterfactual changes nobody
    agents = (rep / "counterfactual/counterfactual_agents.csv").read_text().splitlines()
    header = agents[0].split(",")
    rows = [r.split(",") for r in agents[1:]]
    assert len(rows) == 60 and all(r[header.index("flipped")] == "0" for r in rows)
    assert all(float(v) == 0.0 for r in rows for h, v in zip(header, r) if h.startswith("delta_"))
    # the sweep grid has the requested shape; exposure grows with the exposed fraction
    import json

    grid = json.loads((rep / "sweep/sweep.json").read_text())
    assert np.asarray(grid["final_shares"]).shape == (3, 2, 3)
    exposed = np.asarray(grid["exposed_share"], dtype=float)
    assert (np.diff(exposed, axis=0) > 0).all() and (exposed[:, 0] == exposed[:, 1]).all()
    assert (rep / "sweep/sweep.png").is_file() and grid["plotted_action"] == grid["actions"][0]  # no --sweep_action: the first


def test_a_counterfactual_intervention_is_recorded_in_its_file(trained, tmp_path, capsys):
    """`--counterfactual` given as an intervention (typed): the counterfactual's file holds the
    edited scenario and world (friends severed), records the edits, and `lsm info` shows them; an
    unknown event is exit 2 before any work."""
    from lsm.cli import main
    from lsm.society.interventions import from_data, parse
    from lsm.society.store import read_configs
    from lsm.society.world import load_world

    _, ckpt, world = trained
    out = tmp_path / "r.h5"
    spec = "events[0].credibility*=0.5; sever=friend"
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out", str(out),
                 "--quiet", "true", "--ticks", "2", "--clusters", "2", "--counterfactual", spec]) == 0
    cf = tmp_path / "r_cf.h5"
    with TraceFile(out) as fa, TraceFile(cf) as fb:
        assert fb.scenario.events[0].credibility == fa.scenario.events[0].credibility / 2
        assert "interventions" not in read_configs(fa.f) and from_data(read_configs(fb.f)["interventions"]) == parse(spec)
    assert not (load_world(cf).graph.edge_type == EDGE_TYPES.index("friend")).any()
    assert (load_world(out).graph.edge_type == EDGE_TYPES.index("friend")).any()
    capsys.readouterr()
    assert main(["info", str(cf)]) == 0
    assert f"interventions: {parse(spec)}" in capsys.readouterr().out
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out",
                 str(tmp_path / "x.h5"), "--quiet", "true", "--counterfactual", "events[7].valence=0"]) == 2
    assert "events[7]" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


def test_a_real_counterfactual_edit_changes_decisions_and_narrate_picks_the_flipped(recovered, tmp_path, capsys):
    """Event 0 turned into a hostile, low-credibility message: with the same seed the exposures are
    the same, so every difference is the edit's; the per-agent table equals the two files'
    final ticks, and `lsm narrate --flipped/--cluster` chooses exactly those agents. The student is
    the known-answer one (`recovered`): the 1-epoch `trained` student barely hears events (no agent
    flips under this edit)."""
    import csv

    import yaml

    from lsm.cli import main

    rec = recovered[0] / "rec"
    ckpt, world = rec / "students/student_n1500/last.ckpt", rec / "worlds/held_out_n400.h5"
    data = yaml.safe_load((CONFIG_ROOT / "scenarios/vaccine_campaign.yaml").read_text())
    data["events"][0].update(valence=-0.9, credibility=0.1, framing="fear", source_type="influencer",
                             text="The new vaccine is dangerous and untested. Do not take it.")
    edited = tmp_path / "hostile.yaml"
    edited.write_text(yaml.safe_dump(data))
    out = tmp_path / "r.h5"
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out", str(out),
                 "--quiet", "true", "--counterfactual", str(edited)]) == 0
    with TraceFile(out) as fa, TraceFile(tmp_path / "r_cf.h5") as fb:
        np.testing.assert_array_equal(fa.array("exposed_events")[0] >= 0, fb.array("exposed_events")[0] >= 0)
        d0, d1, channels = fa.array("decision")[-1], fb.array("decision")[-1], fa.array("channels")
        delta = fb.array("channels")[-1].astype(np.float64) - fa.array("channels")[-1]
        assert not np.array_equal(fa.array("decision_dist")[0], fb.array("decision_dist")[0])  # the edit reaches tick 0
    with open(tmp_path / "r_report/counterfactual/counterfactual_agents.csv") as fh:
        rows = list(csv.DictReader(fh))
    flipped = [int(r["agent"]) for r in rows if r["flipped"] == "1"]
    assert flipped == np.nonzero(d0 != d1)[0].tolist() and len(flipped) >= 1
    deltas = np.array([[float(r[k]) for k in r if k.startswith("delta_")] for r in rows])
    np.testing.assert_allclose(deltas, delta, atol=1e-3)
    assert np.abs(deltas).max() > 0
    # each channel is the channel of its name: per-channel means match the planted truth's on this world
    # (they differ by up to 0.13 between channels, so swapping two that differ by > 0.06 fails)
    with TraceFile(rec / "traces/held_out_planted_s0.h5") as truth:
        want = truth.array("channels").mean((0, 1))
    assert np.abs(channels.mean((0, 1)) - want).max() < 0.03 and np.ptp(want) > 0.1
    capsys.readouterr()
    assert main(["narrate", "--rollout", str(out), "--flipped", str(tmp_path / "r_cf.h5"), "--limit", "1", "--ticks", "1:1",
                 "--teacher", "debug", "--attempts", "1"]) == 0
    assert f"(agent {flipped[0]})" in capsys.readouterr().out
    from lsm.narrate.run import choose_agents  # --cluster K: the report folder beside the rollout is found by default

    cluster = int(rows[-1]["cluster"])
    members = [int(r["agent"]) for r in rows if int(r["cluster"]) == cluster]
    assert choose_agents(out, cluster=cluster, limit=2) == members[:2]


def test_rollout_seed_from_the_cli(trained, tmp_path):
    """`lsm rollout --seed S`: the same seed gives the same file, another seed other draws."""
    from lsm.cli import main

    _, ckpt, world = trained
    decisions = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 1)):
        out = tmp_path / f"{name}.h5"
        assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out", str(out),
                     "--quiet", "true", "--seed", str(seed), "--ticks", "3", "--clusters", "2"]) == 0
        with TraceFile(out) as f:
            decisions[name] = (f.array("decision"), f.array("shown_neighbors"))
    np.testing.assert_array_equal(decisions["a"][0], decisions["c"][0])
    np.testing.assert_array_equal(decisions["a"][1], decisions["c"][1])
    assert (decisions["a"][0] != decisions["b"][0]).any() and (decisions["a"][1] != decisions["b"][1]).any()


def test_rollout_errors_name_the_problem(trained, tmp_path, capsys):
    from lsm.cli import main

    _, ckpt, world = trained
    assert main(["rollout", "--world", str(world)]) == 2
    assert "needs --ckpt" in capsys.readouterr().err
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out",
                 str(tmp_path / "x.h5"), "--quiet", "true", "--sweep", "events.9.credibility=0.1,0.2"]) == 2
    err = capsys.readouterr().err
    assert "field 'events[9]' = 9: expected one of the scenario's scheduled events 0..3" in err, err
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out",
                 str(tmp_path / "x.h5"), "--quiet", "true", "--counterfactual", "product_adoption"]) == 2
    assert "must keep the action space" in capsys.readouterr().err


BENCH_NEIGHBORS = 20
"""In-edges per agent of `lsm bench`'s synthetic populations (`infer.bench.time_student`'s default)."""


def _bench(args: list[str], tmp_path, capsys) -> tuple[dict, str, float]:
    """`lsm bench ARGS --teacher none --json`: (the JSON, the printed text, the command's wall seconds)."""
    import json
    import time

    from lsm.cli import main

    t0 = time.perf_counter()
    assert main(["bench", *args, "--teacher", "none", "--json", str(tmp_path / "b.json")]) == 0
    wall = time.perf_counter() - t0
    return json.loads((tmp_path / "b.json").read_text()), capsys.readouterr().out, wall


def _check_bench(res: dict, text: str, wall: float, sizes: list[int], ticks: int, model: torch.nn.Module) -> None:
    """The bench's figures against each other, the command's own wall time and the model timed:
    edges = agents x 20; agent-ticks/s = agents / (s per tick); the timed ticks of every size fit
    in the wall time; peak RSS between what torch alone takes and the machine's memory; the
    parameter count and FLOPs those of `model` (counted afresh); the best speed under the
    compute-bound ceiling; the printed table and ceiling line are the JSON's numbers."""
    import os

    from lsm.infer.bench import flops_per_agent_tick

    rows = res["student"]
    assert [r["agents"] for r in rows] == sizes and not any("error" in r for r in rows), rows
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    for r in rows:
        assert r["edges"] == r["agents"] * BENCH_NEIGHBORS
        assert r["agent_ticks_per_s"] == pytest.approx(r["agents"] / r["seconds_per_tick"], rel=1e-12)
        assert 0.1 < r["peak_rss_gb"] < ram_gb and r["peak_gpu_gb"] is None
        assert f"| {r['agents']:,} | {r['edges']:,} | {r['seconds_per_tick']:.3f} | {r['agent_ticks_per_s']:,.0f} | " \
               f"{r['peak_rss_gb']:.2f} | – | – |" in text.splitlines()
    assert 0 < sum(r["seconds_per_tick"] for r in rows) * ticks < wall
    assert res["student_params"] == sum(p.numel() for p in model.parameters())
    fl, gf = res["flops_per_agent_tick"], res["matmul_gflops"]
    assert fl == flops_per_agent_tick(model)
    best = max(r["agent_ticks_per_s"] for r in rows)
    assert best < gf * 1e9 / fl  # below the compute-bound ceiling it prints (measured: under 2 % of it)
    assert f"student: {res['student_params']:,} parameters, {fl / 1e6:.2f} MFLOP per agent-tick (matmuls); matmul " \
           f"throughput {gf:.0f} GFLOP/s -> at most {gf * 1e9 / fl:,.0f} agent-ticks/s if compute-bound; measured " \
           f"best {best:,.0f} ({best * fl / (gf * 1e9):.0%} of it)" in text.splitlines()


def test_bench_runs_at_tiny_sizes(trained, tmp_path, capsys):
    """`lsm bench --ckpt` times the checkpoint's student (its parameters and FLOPs) at each size."""
    _, ckpt, _ = trained
    res, text, wall = _bench(["--agents", "200,1e3", "--ckpt", str(ckpt), "--ticks", "1"], tmp_path, capsys)
    _check_bench(res, text, wall, [200, 1000], 1, load_checkpoint(ckpt).model)


def test_bench_figures_agree_without_a_checkpoint(tmp_path, capsys):
    """The same checks on the untrained default student (no training needed): two ticks of 300 agents."""
    from lsm.infer.bench import default_student

    res, text, wall = _bench(["--agents", "300", "--ticks", "2"], tmp_path, capsys)
    _check_bench(res, text, wall, [300], 2, default_student())


def test_persona_features_embed_backstories_only_each_distinct_text_once(tmp_path, monkeypatch):
    """The student's persona input: zeros for templated personas, without loading the encoder
    (10^6 of them cost nothing); the backstory's embedding otherwise, each distinct text encoded
    once, stored with the world and read back bit for bit."""
    from lsm.config import shipped
    from lsm.society import embed
    from lsm.society.world import build_world, load_world, save_world

    w = build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=6, seed=2)
    real = embed.shared_encoder()
    monkeypatch.setattr(embed, "shared_encoder", lambda: (_ for _ in ()).throw(AssertionError("encoder loaded")))
    assert not embed.persona_features(w.population).any()  # templated: zeros, encoder never asked
    calls: list[list[str]] = []

    class Counting:
        def encode(self, texts, desc=None):
            calls.append(list(texts))
            return real.encode(texts)

    monkeypatch.setattr(embed, "shared_encoder", lambda: Counting())
    texts = ["I teach maths and worry about my mother.", "", "I teach maths and worry about my mother.",
             "Weekends are for the garden.", "", "I drive a bus at night."]
    w.population.backstory = texts
    feats = embed.persona_features(w.population)  # (6, 384)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(set(texts) - {""})  # distinct texts, once each
    assert not feats[[1, 4]].any() and (feats[0] == feats[2]).all()
    for i in (0, 3, 5):
        np.testing.assert_allclose(feats[i].astype(np.float32), real.encode([texts[i]])[0].astype(np.float32), atol=2e-3)
    w.population.backstory_emb = feats
    save_world(w, tmp_path / "w.h5")
    calls.clear()
    back = load_world(tmp_path / "w.h5").population
    assert back.backstory == texts
    np.testing.assert_array_equal(embed.persona_features(back), feats)  # stored: read, not recomputed
    assert calls == []


def test_rollout_event_inputs_equal_the_training_episodes():
    """The student must see the same event features at rollout as in training (text embedding
    of the event text, same codes), or it runs on inputs it never saw."""
    from lsm.society.loop.events import EventSchedule
    from lsm.infer.rollout import event_rows
    from lsm.train.data import embed_texts, event_tensors, load_episode

    trace = CORPUS / "vaccine_campaign_s0.h5"
    ep = load_episode(trace)
    with TraceFile(trace) as tf:
        pop, graph = tf.world()
        sc = tf.scenario
        seed = tf.seeds["teacher"]  # the scenario seed of `lsm gen --seed`
    events = EventSchedule(sc, pop, graph, seed).events_at(0)
    cat, num, emb = event_tensors(event_rows(events), embed_texts)
    ep_cat, ep_num, ep_emb, _ = ep.events[0]
    torch.testing.assert_close(cat, ep_cat)
    torch.testing.assert_close(num, ep_num)
    torch.testing.assert_close(emb, ep_emb)


def test_a_default_rollout_stores_what_analyses_read_and_asks_for_the_rest(recovered, tmp_path, capsys):
    """By default a rollout stores decisions, distributions, channels, stance, salience and who saw
    what: `lsm validate` works on it; `lsm probe` needs the latent and memory and says how to get
    them; `--store` adds exactly the groups asked for and is checked before any work."""
    from lsm.cli import main

    rec = recovered[0] / "rec"
    ckpt, world = rec / "students/student_n1500/last.ckpt", rec / "worlds/held_out_n400.h5"
    out = tmp_path / "r.h5"
    common = ["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--quiet", "true"]
    assert main(common + ["--out", str(out)]) == 0
    with TraceFile(out) as tf:
        assert set(tf.fields) == {"channels", "decision", "decision_dist", "stance", "salience", "valid", "shown_neighbors",
                                  "exposed_events"}
    capsys.readouterr()
    traces = rec / "traces"
    assert main(["validate", "--reference", str(traces / "held_out_planted_s0.h5"), "--repeat",
                 str(traces / "held_out_planted_s1.h5"), "--student", str(out)]) == 0
    assert "decision_jsd_mean" in capsys.readouterr().out
    assert main(["probe", "--ckpt", str(ckpt), "--rollout", str(out), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "has no latent, memory, which lsm probe needs" in err and "--store latent,memory" in err
    assert not (tmp_path / "p").exists()
    assert main(common + ["--out", str(tmp_path / "x.h5"), "--store", "latent,words"]) == 2
    assert "'words' is not a field group" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()
    full = tmp_path / "full.h5"
    assert main(common + ["--out", str(full), "--ticks", "2", "--store", "all"]) == 0
    with TraceFile(full) as tf, TraceFile(out) as default:
        assert set(tf.fields) - set(default.fields) == {"latent", "memory", "expression_emb", "reasoning_emb"}
        np.testing.assert_array_equal(tf.array("decision"), default.array("decision")[:2])  # extra fields change nothing


def test_a_forward_in_chunks_equals_one_pass(trained):
    """Agents are independent given the previous state (every layer reads the senders' last
    broadcasts), so a rollout in chunks of 7 agents equals one pass over all 60, tick by tick,
    exposures and shown neighbours crossing chunk borders included."""
    _, ckpt, world = trained
    whole = _rollout(ckpt, world, seed=4, agent_chunk=0)[0].run(None, keep=True)["ticks_data"]
    parts = _rollout(ckpt, world, seed=4, agent_chunk=7)[0].run(None, keep=True)["ticks_data"]
    assert len(whole) == len(parts) >= 3
    crossing = 0
    for a, b in zip(whole, parts):
        for name in ("decision_dist", "channels", "stance", "salience"):
            np.testing.assert_allclose(a.data[name], b.data[name], atol=1e-5, err_msg=f"tick {a.tick} {name}")
        np.testing.assert_array_equal(a.data["decision"], b.data["decision"])
        shown = a.data["shown_neighbors"]
        crossing += int(((shown >= 0) & (shown // 7 != np.arange(len(shown))[:, None] // 7)).sum())
    assert crossing > 0  # senders from other chunks were heard
    assert (np.abs(whole[-1].data["decision_dist"] - whole[0].data["decision_dist"]) > 1e-3).any()  # the run moves


def test_report_folder_by_attributes_and_the_sweeps_plotted_action_from_the_cli(trained, tmp_path, capsys):
    """`--report DIR` puts the report there (not beside the output), `--by ATTR` breaks the shares
    down by that attribute (the file's own bincounts; no table for the default attributes), and
    `--sweep_action` names the action the sweep plots; a wrong one of either is one paragraph, exit 2."""
    import csv
    import json

    from lsm.cli import main
    from lsm.society.world import load_world

    _, ckpt, world = trained
    pop = load_world(world).population
    attr = list(pop.categorical)[-1]  # not one of the default two
    out, rep = tmp_path / "r.h5", tmp_path / "elsewhere"
    base = ["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--ticks", "2", "--quiet", "true"]
    assert main([*base, "--out", str(out), "--report", str(rep), "--by", attr, "--sweep", "events.0.credibility=0.2,0.8",
                 "--sweep_action", "refuse"]) == 0
    assert (rep / "summary.md").is_file() and not (tmp_path / "r_report").exists()
    assert [p.name for p in rep.glob("decision_shares_by_*.csv")] == [f"decision_shares_by_{attr}.csv"]
    with TraceFile(out) as tf:
        decision, valid, actions = tf.array("decision"), tf.array("valid"), list(tf.scenario.actions.labels)
    labels = pop.labels(attr)
    rows = list(csv.DictReader((rep / f"decision_shares_by_{attr}.csv").open()))
    assert {(int(r["tick"]), r[attr]) for r in rows} == {(t, g) for t in range(2) for g in set(labels)}
    for r in rows:
        t, members = int(r["tick"]), (labels == r[attr]) & valid[int(r["tick"])]
        want = np.bincount(decision[t][members], minlength=len(actions)) / max(int(members.sum()), 1)
        np.testing.assert_allclose([float(r[a]) for a in actions], want, atol=5e-5)  # the CSV keeps 4 decimals
    assert json.loads((rep / "sweep/sweep.json").read_text())["plotted_action"] == "refuse"
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b.h5"), "--by", "shoe_size"]) == 2
    assert "--by ['shoe_size']: not categorical attributes" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c.h5"), "--sweep", "events.0.credibility=0.2,0.8", "--sweep_action", "dance"]) == 2
    assert "--sweep_action 'dance' is not an action" in capsys.readouterr().err
    assert not (tmp_path / "b.h5").exists() and not (tmp_path / "c.h5").exists()
