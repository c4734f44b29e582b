"""The known-answer experiment: ablation arithmetic on hand-made cases, the planted truth
re-evaluated exactly, seeded feedback of drawn decisions, and a small recovery end to end."""
from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from lsm.society import interventions as ab, stats
from lsm.society.world.graph import WEAK_TIE

# -- ablation arithmetic on hand-made cases ------------------------------------------------------


def test_paired_tv_on_hand_made_distributions():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    q = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]])
    np.testing.assert_allclose(stats.paired_tv(p, q), [0.0, 1.0, 0.1])


def test_bootstrap_resamples_agents_and_brackets_the_ratio():
    agents = np.repeat(np.arange(50), 4)  # 4 rows per agent
    const = np.full(200, 0.3)
    est, lo, hi = stats.bootstrap(const, agents)
    assert est == pytest.approx(0.3) and lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, 200)
    est, lo, hi = stats.bootstrap(2 * x, agents, other=x)
    assert est == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)  # a ratio fixed per row
    y = rng.normal(1.0, 0.5, 200)
    est, lo, hi = stats.bootstrap(x, agents, other=y)
    assert est == pytest.approx(x.mean() / y.mean()) and lo < est < hi


def test_table_edits():
    shown = np.array([[1, 2, -1], [0, -1, -1], [-1, -1, -1], [0, 1, 2]])
    types = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    stance = np.array([0.9, -0.5, 0.1, -0.85])
    assert (ab.no_messages(0, shown, types, stance) == -1).all()
    sh = ab.shuffled_senders(3)(1, shown, types, stance)
    assert ((sh >= 0) == (shown >= 0)).all()
    opp = ab.opposite_stance(1, shown, types, stance)
    # sender 1 (-0.5) -> closest to +0.5: agents 2 (0.1) and 0 (0.9) tie at 0.4, the lower stance wins;
    # sender 2 (0.1) -> closest to -0.1: itself; sender 0 (0.9) -> closest to -0.9: agent 3 (-0.85)
    assert opp[0].tolist() == [2, 2, -1] and opp[1].tolist() == [3, -1, -1] and opp[3].tolist() == [3, 2, 2]
    strong = ab.strong_neighbor(1, +1)(1, shown, types, stance)
    assert strong.tolist() == [[1, 0, -1], [0, -1, -1], [-1, -1, -1], [0, 1, 2]]  # row 3's first type-1 slot already holds agent 0
    assert ab.rows_with_type(shown, types, 1).tolist() == [True, True, False, True]


# -- the planted truth, re-evaluated ---------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_pair(tmp_path_factory):
    """A 150-agent world with a planted trace and its null variant."""
    from lsm.config import resolve_config
    from lsm.data_gen.gen import generate
    from lsm.data_gen.make_world import make_world
    from lsm.recovery.experiment import planted_variant

    d = tmp_path_factory.mktemp("planted")
    world = d / "world.h5"
    make_world(agents=150, seed=3, out=world)
    planted = resolve_config("planted", "teacher")
    null = planted_variant(planted, d / "null.yaml", dose=0.0)
    sc = resolve_config("vaccine_campaign", "scenarios")
    generate(world, sc, planted, 0, d / "p.h5", quiet=True)
    generate(world, sc, null, 0, d / "n.h5", quiet=True)
    return d


def test_truth_reproduces_the_trace_and_ablations_of_the_null_are_zero(planted_pair):
    from lsm.recovery.truth import PlantedTrace

    tr = PlantedTrace.read(planted_pair / "p.h5")
    for t in range(tr.ticks):
        np.testing.assert_allclose(tr.probabilities(t), tr.decision_dist[t], atol=1e-6)
    removed = np.mean([stats.paired_tv(tr.probabilities(t), tr.probabilities(t, ab.no_messages)).mean() for t in range(1, tr.ticks)])
    assert removed > 0.02  # the planted influence is real
    nul = PlantedTrace.read(planted_pair / "n.h5")
    for t in range(nul.ticks):
        assert stats.paired_tv(nul.probabilities(t), nul.probabilities(t, ab.no_messages)).max() == 0.0
    forgot = stats.paired_tv(tr.probabilities(2), tr.probabilities(2, forget_draw=True))
    assert forgot.min() > 0  # persistence acts on every agent with a last draw
    # the influence term by hand, from the file's own tables (h5py) and the process's documented rule
    # (conformity_i · Σ_k β[tie(k→i)] · stance_{t-1}(k) / K): removing the messages moves the log-odds of
    # action a against action 0 by exactly scale · influence · (lean_a - lean_0)
    with h5py.File(planted_pair / "p.h5", "r") as f:
        shown, stance = f["shown_neighbors"][()].astype(np.int64), f["stance"][()].astype(np.float64)  # (T, N, K), (T, N)
        src, dst = f["graph/edge_index"][()]
        tie: dict[tuple[int, int], int] = {}
        for j, i, ty in zip(src.tolist(), dst.tolist(), f["graph/edge_type"][()].tolist()):
            tie[(j, i)] = min(ty, tie.get((j, i), ty))  # several ties: the closest (smallest code) counts
    soc, K = tr.society, tr.society.cfg.neighbors.k
    checked = 0
    for t in range(1, tr.ticks):
        p, q = np.log(tr.probabilities(t)), np.log(tr.probabilities(t, ab.no_messages))
        for i in range(0, shown.shape[1], 7):
            js = [int(j) for j in shown[t, i] if j >= 0]
            term = soc.conformity[i] * sum(soc.beta[tie.get((j, i), WEAK_TIE)] * stance[t - 1, j] for j in js) / K
            want = soc.cfg.scale * term * (soc.lean - soc.lean[0])
            np.testing.assert_allclose((p[i] - p[i, 0]) - (q[i] - q[i, 0]), want, atol=1e-9)
            checked += bool(js) and abs(term) > 1e-3
    assert checked > 20


def test_drawn_decisions_feed_back_seeded_and_deterministic(planted_pair):
    from lsm.society.scenario import load_scenario
    from lsm.society.world import load_world
    from lsm.config import resolve_config
    from lsm.infer.rollout import Rollout, RolloutConfig
    from lsm.society.loop.neighbors import NeighborRule
    from lsm.model.checkpoint import Student
    from lsm.model.society import SocietyModel, StudentConfig
    from lsm.society.world.population import IdentityVocab

    w = load_world(planted_pair / "p.h5")
    vocab = IdentityVocab.of(w.population)
    torch.manual_seed(0)
    model = SocietyModel(StudentConfig(dim=16, heads=2, layers=1, categorical_sizes=vocab.cardinalities, numeric_dim=len(vocab.numeric),
                                       channels=8))
    student = Student(model.eval(), model.cfg, vocab, [], "untrained")
    sc = load_scenario(resolve_config("vaccine_campaign", "scenarios"))
    persona = torch.zeros(w.n, 384)

    def run(seed):
        r = Rollout(student, w, sc, RolloutConfig(seed=seed, neighbors=NeighborRule()), persona)
        ticks = list(r.ticks())
        return ticks, r.policy.state

    a, state_a = run(4)
    b, _ = run(4)
    c, _ = run(5)
    # the student reads the scenario's context: an edited context changes every agent's distribution
    edited = dataclasses.replace(sc, context="A rumour says the vaccine was rushed and nobody trusts the clinics.")
    e = list(Rollout(student, w, edited, RolloutConfig(seed=4, neighbors=NeighborRule()), persona).ticks())
    assert not np.allclose(e[0].data["decision_dist"], a[0].data["decision_dist"])
    assert all(np.array_equal(x.data["decision"], y.data["decision"]) for x, y in zip(a, b))
    assert not all(np.array_equal(x.data["decision"], y.data["decision"]) for x, y in zip(a, c))
    last = a[-1].data["decision"].astype(np.int64)
    assert torch.equal(state_a.drawn.argmax(1), torch.from_numpy(last)) and torch.all(state_a.drawn.sum(1) == 1)


# -- a small recovery case, end to end -----------------------------------------------------------


def test_small_recovery_finds_the_planted_influence_and_not_the_null(recovered):
    out, text = recovered
    # killed once the student was trained, the same command resumed: that step and those before it were kept whole
    from tests.conftest import RECOVERY_KILLED
    import hashlib

    student = out / "rec/students/student_n1500"
    assert hashlib.sha256((student / "last.ckpt").read_bytes()).hexdigest() == (out / RECOVERY_KILLED).read_text()
    assert f"[skip] train student (≤ 240 steps): {student / 'last.ckpt'} exists" in text and "[skip] training world" in text
    assert "    student: " in text and "s/step" in text  # its training figures, kept beside it, are reported
    assert "train identity_mlp (≤ 240 steps):" in text and not (student.parent / "identity_mlp_n1500/last.ckpt.partial").exists()
    assert "| ablation_tv_ratio |" in text and "| intervention |" in text
    r = json.loads((out / "r.json").read_text())
    removed = r["ablations"]["no_messages"]
    assert removed["student_tv"]["value"] >= 0.5 * removed["truth_tv"]["value"] > 0
    assert r["null_ablation_tv"] < 0.02
    for key in ("ablation_tv_ratio", "influence_slope", "decision_jsd_final_ratio", "channel_w1_ratio", "identity_mlp_kl",
                "student_kl", "truth_kl"):
        assert np.isfinite(r[key]), key
    assert r["student_kl"] < r["identity_mlp_kl"]  # the graph pays on a society with planted influence
    # the headline figures, recomputed from the run's own files with h5py and their documented definitions
    by_hand = _headline_by_hand(out / "rec", r)
    assert r["interventions"].keys() == by_hand["rel_error"].keys() == {"remove_event_0", "halve_credibility_event_2",
                                                                          "sever_household"}
    for name, rel in by_hand["rel_error"].items():
        assert r["interventions"][name]["rel_error"] == pytest.approx(rel, rel=1e-9), name
    assert r["intervention_rel_error_max"] == pytest.approx(max(by_hand["rel_error"].values()), rel=1e-9)
    assert r["tail_survival_min"] == pytest.approx(by_hand["tail_survival_min"], rel=1e-9)
    assert r["channel_sd_ratio"] == pytest.approx(by_hand["channel_sd_ratio"], rel=1e-6)
    assert r["influence_rank_ok"] is by_hand["influence_rank_ok"] and len(r["influence_rank_pairs"]) >= 1
    types = r["influence_by_type"]
    s, t = np.array([v["student"] for v in types.values()]), np.array([v["truth"] for v in types.values()])
    assert r["influence_slope"] == pytest.approx(float((s * t).sum() / (t * t).sum()), rel=1e-9)  # through the origin


def _headline_by_hand(rec, r: dict) -> dict:
    """The recovery's headline figures from its files (h5py, numpy) and their definitions in
    docs/recovery.md: an intervention's relative error ‖Δs - Δt‖₁ / ‖Δt‖₁ of the changes of the
    expected shares (the decision distribution averaged over valid agent-ticks), averaged over the
    common seeds; tail survival min over the reference's actions with overall share in (0, 0.1) of
    min(1, student share / reference share); the channels' spread ratio, the mean over ticks ≥ 1 and
    channels of the across-agent SD of the student's channels over the reference's; the rank order
    of the tie types, every judged pair's student difference of the truth's sign."""
    runs = next((rec / "rollouts").iterdir())
    reference = rec / "traces/held_out_planted_s0.h5"

    def read(path, *names):
        with h5py.File(path, "r") as f:
            return [f[n][()] for n in names]

    def expected(path):
        dist, valid = read(path, "decision_dist", "valid")
        return dist.astype(np.float64)[valid.astype(bool)].mean(0)  # (A,)

    seeds = r["expected_shares"]["seeds"]
    sfx = [""] + [f"_s{k}" for k in range(1, seeds)]
    base_s = np.stack([expected(runs / f"student_base{x}.h5") for x in sfx])  # (K, A)
    base_t = np.stack([expected(reference if not x else runs / f"planted_base{x}.h5") for x in sfx])
    rel_error = {}
    for name in r["interventions"]:
        ds = (np.stack([expected(runs / f"student_{name}{x}.h5") for x in sfx]) - base_s).mean(0)
        dt = (np.stack([expected(runs / f"planted_{name}{x}.h5") for x in sfx]) - base_t).mean(0)
        rel_error[name] = float(np.abs(ds - dt).sum() / np.abs(dt).sum())
    (d_ref, v_ref, c_ref), (d_stu, v_stu, c_stu) = (read(p, "decision", "valid", "channels") for p in (reference, runs / "student_base.h5"))
    A = base_s.shape[1]
    share_ref, share_stu = (np.bincount(d[v.astype(bool)], minlength=A) / v.sum() for d, v in ((d_ref, v_ref), (d_stu, v_stu)))
    rare = (share_ref > 0) & (share_ref < 0.10)
    assert rare.any(), share_ref  # the planted society keeps a rare action (refuse): the figure is not NaN
    spread = lambda c: np.nan_to_num(c.astype(np.float32))[1:].std(1)  # noqa: E731  (T-1, C) across agents
    pairs = []
    for p in r["influence_rank_pairs"]:
        a, b = (r["influence_by_type"][k] for k in p["pair"])
        assert p["truth_difference"][0] == pytest.approx(a["truth"] - b["truth"]) and (p["truth_difference"][1] > 0 or p["truth_difference"][2] < 0)
        pairs.append(np.sign(a["student"] - b["student"]) == np.sign(a["truth"] - b["truth"]))
    return {"rel_error": rel_error, "tail_survival_min": float(np.minimum(1, share_stu[rare] / share_ref[rare]).min()),
            "channel_sd_ratio": float((spread(c_stu) / np.maximum(spread(c_ref), 1e-9)).mean()),
            "influence_rank_ok": bool(pairs) and all(pairs)}


def test_training_variants_draw_valences_and_credibilities_seeded(tmp_path):
    from functools import partial

    from lsm.config import resolve_config
    from lsm.society.scenario import load_scenario
    from lsm.recovery.experiment import RecoveryConfig, jitter_events, scenario_variant

    assert RecoveryConfig().train_variants == 8
    base = resolve_config("vaccine_campaign", "scenarios")
    orig = load_scenario(base)
    a, b, c, kept = (load_scenario(scenario_variant(base, tmp_path / f"{name}.yaml", partial(jitter_events, seed=seed, keep_sign=keep)))
                     for name, seed, keep in (("a", 1, False), ("b", 1, False), ("c", 2, False), ("kept", 1, True)))

    def events(s):  # scheduled events, then the triggers' events
        return [*s.events, *(t.event for t in s.triggers)]

    ca, cb, cc = ([e.credibility for e in events(s)] for s in (a, b, c))
    va, vb, vc = ([e.valence for e in events(s)] for s in (a, b, c))
    assert ca == cb and va == vb and ca != cc and va != vc  # seeded
    assert ca != [e.credibility for e in events(orig)] and all(0.1 <= x <= 1.0 for x in ca)
    assert va != [e.valence for e in events(orig)] and all(-1.0 <= x <= 1.0 for x in va)
    flipped = [(v.valence > 0) != (e.valence > 0) for k in range(1, 9) for v, e in zip(events(load_scenario(scenario_variant(
        base, tmp_path / f"v{k}.yaml", partial(jitter_events, seed=k)))), events(orig))]
    assert any(flipped) and not all(flipped)  # the sign is drawn too: a valence's effect is not its event's
    assert [e.credibility for e in events(kept)] == ca  # the credibilities' draws do not depend on the valences'
    assert all((v > 0) == (e.valence > 0) and abs(v) <= 1 for v, e in zip((e.valence for e in events(kept)), events(orig)))
    assert [e.text for e in events(a)] == [e.text for e in events(orig)]  # only valence and credibility change


def test_recovery_refuses_an_unknown_pathway_to_ablate(tmp_path, capsys):
    from lsm.cli import main

    assert main(["recovery", "--out", str(tmp_path / "r"), "--ablations", "social_sum,telepathy"]) == 2
    err = capsys.readouterr().err
    assert "'telepathy' is not a pathway" in err and "channel_effects" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was built


def test_evaluate_with_mlp_adds_the_given_checkpoints_row(recovered, capsys):
    """`lsm evaluate --mlp DIR` adds the identity-only baseline's row, and it is that checkpoint's:
    given the student itself, the row equals the student's; given the recovery's identity MLP, it
    is worse than the student on the planted society (whose influence the MLP cannot see)."""
    from lsm.cli import main

    rec = recovered[0] / "rec"
    args = ["evaluate", "--ckpt", str(next(rec.glob("students/student_n*"))), "--held_out", str(rec / "traces/held_out_planted_s0.h5")]

    def rows(*more: str) -> dict[str, list[str]]:
        assert main([*args, *more]) == 0
        table = capsys.readouterr().out.split("\n\n")[0].splitlines()[3:]  # after the title and the header
        return {cells[1].strip(): [c.strip() for c in cells[2:-1]] for cells in (line.split("|") for line in table)}

    itself, mlp = rows("--mlp", args[2]), rows("--mlp", str(next(rec.glob("students/identity_mlp_n*"))))
    name = "identity MLP (no graph)"
    assert itself["student"] == mlp["student"] and itself[name] == itself["student"]
    assert float(mlp[name][0]) > float(mlp["student"][0])  # decision KL: the graph pays


def test_a_students_checkpoint_appears_only_whole(tmp_path, monkeypatch):
    """`lsm recovery` skips a step whose output exists, so a student's `last.ckpt` must appear only
    once it and its `training.json` are complete: a run killed while writing it (here: training
    that dies after writing half a checkpoint) leaves no `last.ckpt`, and the step runs again."""
    from lsm.recovery import experiment

    out = tmp_path / "students/student_n10/last.ckpt"
    out.parent.mkdir(parents=True)

    def killed_while_writing(files, path, cfg, student, val):
        path.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "train_student", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        experiment.train_step([], out, experiment.RecoveryConfig(), None, tmp_path / "val.h5")
    assert not out.exists() and not (out.parent / "training.json").exists()

    def trained(files, path, cfg, student, val):
        path.write_bytes(b"a whole checkpoint")
        return {"steps": 3}

    monkeypatch.setattr(experiment, "train_student", trained)
    experiment.train_step([], out, experiment.RecoveryConfig(), None, tmp_path / "val.h5")
    assert out.read_bytes() == b"a whole checkpoint" and json.loads((out.parent / "training.json").read_text()) == {"steps": 3}
