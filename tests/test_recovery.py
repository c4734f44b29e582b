"""The known-answer experiment: ablation arithmetic on hand-made cases, the planted truth
re-evaluated exactly, seeded feedback of drawn decisions, and a small recovery end to end."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from lsm.society import interventions as ab, stats

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
    assert "| ablation_tv_ratio |" in text and "| intervention |" in text
    r = json.loads((out / "r.json").read_text())
    removed = r["ablations"]["no_messages"]
    assert removed["student_tv"]["value"] >= 0.5 * removed["truth_tv"]["value"] > 0
    assert r["null_ablation_tv"] < 0.02
    for key in ("ablation_tv_ratio", "null_ablation_tv", "influence_slope", "influence_rank_ok", "intervention_rel_error_max",
                "decision_jsd_final_ratio", "channel_w1_ratio", "channel_sd_ratio", "tail_survival_min", "identity_mlp_kl",
                "student_kl", "truth_kl"):
        assert key in r
    assert r["student_kl"] < r["identity_mlp_kl"]  # the graph pays on a society with planted influence


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
