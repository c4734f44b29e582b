"""The recovery's figures and their floors: the oracle KL against Monte Carlo, the signed
agreement and the intervention pass rule on hand-made numbers, the decile sender edit, the
influence slopes and their rank order, the CRPS, and the one-tick interventions against runs of
the planted process."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lsm.recovery import metrics as M
from lsm.society import interventions as ab
from lsm.society import stats
from lsm.society.interventions import tables


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(folder, PlantedTrace): a 200-agent world and a planted trace of the vaccine campaign on it."""
    from lsm.config import resolve_config
    from lsm.data_gen.gen import generate
    from lsm.data_gen.make_world import make_world
    from lsm.recovery.truth import PlantedTrace

    d = tmp_path_factory.mktemp("planted_metrics")
    make_world(agents=200, seed=3, out=d / "world.h5", quiet=True)
    generate(d / "world.h5", resolve_config("vaccine_campaign", "scenarios"), resolve_config("planted", "teacher"), 0, d / "p.h5",
             quiet=True)
    return d, PlantedTrace.read(d / "p.h5")


# -- the oracle ------------------------------------------------------------------------------------


def test_oracle_kl_is_the_monte_carlo_expectation_and_the_recorded_floor(planted):
    _, tr = planted
    soc = tr.society
    rng = np.random.default_rng(0)
    for t in (0, 3):
        mean, okl = tr.expected(t)  # (N, A), (N,)
        np.testing.assert_allclose(mean.sum(1), 1.0, atol=1e-12)
        _, draw = tr.last(t)
        base = tr.opinion(t)
        xi = rng.normal(size=(2000, len(base)))  # (M, N)
        p = np.stack([soc.probabilities(soc.logits(base + soc.cfg.noise_sd * x, draw)) for x in xi])  # (M, N, A)
        np.testing.assert_allclose(p.mean(0), mean, atol=5 * p.std(0).max() / np.sqrt(len(xi)) + 1e-9)
        kl = M._kl(p, mean[None]).mean(1)  # (M,) the agents' mean KL, one value per draw
        assert abs(kl.mean() - okl.mean()) < 4 * kl.std() / np.sqrt(len(kl))
    # the recorded distribution is one draw of p_ξ: its KL to p̄ averages to the oracle KL
    rec = np.stack([M._kl(tr.decision_dist[t], tr.expected(t)[0]) for t in range(tr.ticks)]).ravel()
    okl = np.stack([tr.expected(t)[1] for t in range(tr.ticks)]).ravel()
    assert abs(rec.mean() - okl.mean()) < 4 * (rec - okl).std() / np.sqrt(len(rec))
    assert okl.mean() > 0.005  # the noise is real


def test_the_agent_blind_oracle_integrates_the_agent_effect_out_and_scores_worse(planted):
    _, tr = planted
    soc = tr.society
    rng = np.random.default_rng(1)
    t = 3
    mean, _ = tr.expected(t, agent_blind=True)
    _, draw = tr.last(t)
    base = tr.opinion(t) - soc.agent_effect
    r = rng.normal(0, soc.cfg.agent_sd, size=(2000, len(base)))  # fresh agents' effects, and the tick's noise
    xi = rng.normal(size=(2000, len(base)))
    p = np.stack([soc.probabilities(soc.logits(base + a + soc.cfg.noise_sd * x, draw)) for a, x in zip(r, xi)])
    np.testing.assert_allclose(p.mean(0), mean, atol=5 * p.std(0).max() / np.sqrt(len(p)) + 1e-9)
    # knowing each agent's effect is worth something: the oracle's KL is the lower
    blind = np.stack([tr.expected(u, agent_blind=True)[0] for u in range(tr.ticks)])
    oracle = np.stack([tr.expected(u)[0] for u in range(tr.ticks)])
    assert M._kl(tr.decision_dist, oracle).mean() < M._kl(tr.decision_dist, blind).mean()
    T, N = tr.shown.shape[:2]
    edit = M.table_edits()["no_messages"]
    fact = np.stack([tr.probabilities(u) for u in range(T)])
    changed = np.stack([tr.probabilities(u, edit) for u in range(T)])
    floors = M.signed_error_floors(tr, edit, changed - fact, np.broadcast_to(np.arange(N), (T - 1, N)).ravel())
    assert 0 < floors["oracle"] < floors["agent_blind"] < 1


def test_decision_kl_normalises_between_the_oracle_and_the_identity_model(planted):
    _, tr = planted
    mean = np.stack([tr.expected(t)[0] for t in range(tr.ticks)])
    flat = np.full_like(mean, 1 / mean.shape[-1])
    r = M.decision_kl(mean, flat, tr)
    assert r["student_kl_expected"] == pytest.approx(0, abs=1e-9)
    assert abs(r["kl_oracle_normalised"]) < 0.1  # p̄ scores the oracle KL up to the one draw per agent-tick
    assert M.decision_kl(flat, flat, tr)["kl_oracle_normalised"] == pytest.approx(1.0)


# -- signed agreement, intervention pass, tails ---------------------------------------------------


def test_signed_error_and_slope_on_hand_made_changes():
    rng = np.random.default_rng(1)
    dt = rng.normal(size=(300, 3))
    dt -= dt.mean(1, keepdims=True)  # a change of a distribution sums to 0
    agents = np.repeat(np.arange(100), 3)
    cases = {1.0: (0.0, 1.0), 0.5: (0.5, 0.5), 0.0: (1.0, 0.0), -1.0: (2.0, -1.0)}
    for k, (err, slope) in cases.items():
        r = M.signed_agreement(k * dt, dt, agents)
        assert r["signed_error"]["value"] == pytest.approx(err) and r["slope"]["value"] == pytest.approx(slope)
    noisy = M.signed_agreement(dt + rng.normal(scale=0.3, size=dt.shape), dt, agents)
    assert noisy["signed_error"]["low"] < noisy["signed_error"]["value"] < noisy["signed_error"]["high"]
    assert 0.8 < noisy["slope"]["value"] < 1.2


def test_intervention_pass_rule_on_hand_made_numbers():
    truth = np.array([[0.10, -0.10], [0.12, -0.12], [0.08, -0.08], [0.10, -0.10]])  # mean ±0.10, SE 0.0082
    r = M.intervention_pass(truth, truth)
    assert r["pass"] and r["rel_error"] == 0
    assert r["truth_se"][0] == pytest.approx(np.std([0.10, 0.12, 0.08, 0.10], ddof=1) / 2)
    # within 20 % of the truth's change (0.018 < 0.02) although beyond 2 SE of the seeds
    assert M.intervention_pass(truth + [0.018, -0.018], truth)["pass"]
    # beyond 20 % and beyond 2 SE (SE combined: √2 · 0.0082 = 0.0115; 2 SE 0.023) on one action
    r = M.intervention_pass(truth + [0.03, 0.0], truth)
    assert r["pass_by_action"] == [False, True] and not r["pass"]
    assert r["rel_error"] == pytest.approx(0.03 / 0.2)
    # beyond 20 % of a small change, but the seeds cannot tell them apart: within 2 SE
    small = np.array([[0.01], [-0.01], [0.03], [-0.03]])
    assert M.intervention_pass(small + 0.02, small)["pass"]
    assert not M.intervention_pass(small + 0.06, small)["pass"]


def test_tail_survival_is_two_sided():
    truth = np.array([[0.70, 0.25, 0.05], [0.70, 0.25, 0.05]])
    for ratio, ok in ((1.0, True), (1.05, True), (0.95, True), (1.2, False), (0.8, False)):
        student = truth * [1, 1, ratio]
        t = M.tail_survival(student, truth, ["a", "b", "rare"])
        assert list(t) == ["rare"] and t["rare"]["ok"] is ok
        assert t["rare"]["value"] == pytest.approx(np.log(ratio))


# -- influence by tie type -------------------------------------------------------------------------


@dataclasses.dataclass
class Inp:
    """The part of a tick's inputs a shown-table edit changes."""

    neighbors: torch.Tensor
    neighbor_type: torch.Tensor


def test_decile_sender_picks_the_right_deciles_and_keeps_slot_types():
    rng = np.random.default_rng(2)
    n, K = 200, 4
    stance = rng.uniform(-1, 1, n)
    shown = np.where(rng.random((n, K)) < 0.7, rng.integers(0, n, (n, K)), -1)
    types = rng.integers(0, 3, (n, K))
    order = np.argsort(stance)
    for top, pool in ((True, set(order[-20:].tolist())), (False, set(order[:20].tolist()))):
        edit = tables.decile_sender(1, top)
        out = edit(3, shown, types, stance)
        slot = tables.first_slot(shown, types, 1)
        rows = np.nonzero(slot >= 0)[0]
        assert len(rows) > 50 and set(out[rows, slot[rows]].tolist()) <= pool
        assert len(set(out[rows, slot[rows]].tolist())) > 5  # random senders, not one extreme
        other = np.ones_like(shown, bool)
        other[rows, slot[rows]] = False
        assert (out[other] == shown[other]).all()  # every other slot, and rows without the type, unchanged
        np.testing.assert_array_equal(out, edit(3, shown, types, stance))  # seeded
        assert not np.array_equal(out, edit(4, shown, types, stance))  # per tick
        # through a replay edit: the senders change, the slot types do not
        replay_edit = ab.as_edit(edit, torch.from_numpy(np.stack([stance] * 4).astype(np.float32)))
        new, _ = replay_edit(3, Inp(torch.from_numpy(shown), torch.from_numpy(types)), None)
        np.testing.assert_array_equal(new.neighbors.numpy(), out)
        np.testing.assert_array_equal(new.neighbor_type.numpy(), types)
    sever = tables.without_ties((1, 2))(0, shown, types, stance)
    assert (sever[np.isin(types, (1, 2))] == -1).all() and (sever[types == 0] == shown[types == 0]).all()


def test_influence_slopes_and_the_rank_order_judged_on_distinguishable_pairs():
    rng = np.random.default_rng(3)
    beta = {"household": 0.10, "friend": 0.06, "weak_tie": 0.02, "media": 0.0202}
    agent_of, dx, truth = {}, {}, {}
    for k, b in beta.items():
        agent_of[k] = rng.integers(0, 300, 2000)
        dx[k] = rng.uniform(1.2, 1.9, 2000)
        truth[k] = b * dx[k] + rng.normal(scale=0.05, size=2000)
    same = M.slopes_by_type(agent_of, {"student": truth, "truth": truth}, dx)
    assert same["slope"] == pytest.approx(1.0) and same["rank_ok"]
    judged = {tuple(p["pair"]) for p in same["rank_pairs"]}
    assert ("household", "friend") in judged and ("weak_tie", "media") not in judged  # 0.02 vs 0.0202: not told apart
    for k, b in beta.items():
        lo, hi = same["by_type"][k]["truth_interval"]
        assert lo < same["by_type"][k]["truth"] < hi and abs(same["by_type"][k]["truth"] - b) < 0.003
    half = M.slopes_by_type(agent_of, {"student": {k: 0.5 * v for k, v in truth.items()}, "truth": truth}, dx)
    assert half["slope"] == pytest.approx(0.5) and half["rank_ok"]
    swapped = dict(truth, household=truth["friend"], friend=truth["household"])
    assert not M.slopes_by_type(agent_of, {"student": swapped, "truth": truth}, dx)["rank_ok"]
    # a student wrong only on the pair the truth cannot tell apart is not judged on it
    flipped = dict(truth, weak_tie=truth["media"] * 1.05, media=truth["weak_tie"] * 0.95)
    assert M.slopes_by_type(agent_of, {"student": flipped, "truth": truth}, dx)["rank_ok"]


# -- channels ------------------------------------------------------------------------------------


def test_crps_of_level_distributions_and_point_forecasts():
    levels = np.arange(11) / 10
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(11), 6)
    y = rng.random(6)
    grid = np.linspace(-0.5, 1.5, 40001)
    cdf = (p[:, None, :] * (levels <= grid[:, None])).sum(-1)  # (6, G)
    integral = ((cdf - (grid >= y[:, None])) ** 2).sum(1) * (grid[1] - grid[0])
    np.testing.assert_allclose(stats.crps(levels, p, y), integral, atol=1e-4)
    onehot = np.eye(11)[[3]]
    assert stats.crps(levels, onehot, np.array([0.3]))[0] == pytest.approx(0)
    x = rng.random(6)
    np.testing.assert_allclose(stats.crps(x[:, None], np.ones((6, 1)), y), np.abs(x - y))


# -- one-tick interventions --------------------------------------------------------------------------


def test_one_tick_interventions_reproduce_the_planted_run_and_change_the_students_inputs(planted):
    """Removing event 0 (tick 0) and halving event 2's credibility (tick 2): the one-tick truth
    equals the planted process run on the edited scenario at that tick (same history until then)."""
    from lsm.config import resolve_config
    from lsm.data_gen.gen import generate
    from lsm.society.scenario import load_scenario
    from lsm.society.store import TraceFile
    from lsm.train.data import load_episode

    d, tr = planted
    sc = load_scenario(resolve_config("vaccine_campaign", "scenarios"))
    ep = load_episode(d / "p.h5")
    for name, tick in (("remove_event_0", 0), ("halve_credibility_event_2", 2)):
        spec = M.INTERVENTIONS[name]
        table, events = M.one_tick_change(spec, tr)
        assert table is None and len(events) == 1
        (d / f"{name}.yaml").write_text(ab.apply(ab.parse(spec), scenario=sc).scenario_yaml)
        generate(d / "world.h5", d / f"{name}.yaml", resolve_config("planted", "teacher"), 0, d / f"{name}.h5", quiet=True)
        with TraceFile(d / f"{name}.h5") as tf:
            ran = tf.array("decision_dist")[tick]
        changed = tr.probabilities(tick, table, events=events)
        np.testing.assert_allclose(changed, ran, atol=1e-6)
        assert np.abs(changed - tr.decision_dist[tick]).max() > 0.01
        # the student's inputs of that tick, changed the same way
        inp = ep.inputs(tick)
        new, _ = M.student_change(tr, table, events, ep.targets["stance"])(tick, inp, None)
        uids = tr.tick_uids(tick).tolist()
        q = uids.index(0 if tick == 0 else 2)
        col = list(M.EVENT_FEATURES).index("credibility")
        if tick == 0:
            assert (new.exposure[1] != q).all() and (inp.exposure[1] == q).sum() > 100
        else:
            assert new.exposure.shape == inp.exposure.shape
            assert new.event_num[q, col] == pytest.approx(0.5 * float(inp.event_num[q, col]))
    sever, events = M.one_tick_change(M.INTERVENTIONS["sever_household"], tr)
    assert sever is not None and not events
    with pytest.raises(ValueError, match="not a change of one tick"):
        M.one_tick_change("events[0].tick=3", tr)


# -- the printed table ---------------------------------------------------------------------------


def test_report_prints_every_goal_and_the_new_figures():
    from lsm.recovery.report import GOALS, format_table

    rng = np.random.default_rng(5)
    dt = rng.normal(size=(60, 3))
    agents = np.arange(60)
    ci = {"value": 0.05, "low": 0.04, "high": 0.06}
    ablation = {"student_tv": ci, "truth_tv": ci, "ratio": {"value": 1.0, "low": 0.9, "high": 1.1},
                **M.signed_agreement(0.9 * dt, dt, agents)}
    truth = np.array([[0.10, -0.10], [0.12, -0.12], [0.08, -0.08], [0.10, -0.10]])
    shares = np.array([[0.7, 0.25, 0.05]] * 4)
    row = {"agents": 10000, "ablations": {k: ablation for k in M.SIGNED_ABLATIONS}, "ablation_tv_ratio": 1.0,
           "ablation_signed_error": ablation["signed_error"]["value"], "null_ablation_tv": 0.002, "influence_slope": 0.95,
           "influence_by_type": {"household": {"student": 0.1, "truth": 0.11, "rows": 500, "student_interval": [0.09, 0.11],
                                               "truth_interval": [0.1, 0.12]}},
           "influence_rank_ok": True, "influence_rank_pairs": [],
           "persistence": {"student": 0.1, "truth": 0.1, "ratio": {"value": 1.0, "low": 0.9, "high": 1.1}},
           "interventions": {"remove_event_0": {**M.intervention_pass(truth + [0.03, 0], truth), "replay_signed_error": 0.2}},
           "interventions_pass": False, "intervention_rel_error_max": 0.15, "kl_oracle_normalised": 0.4, "student_kl": 0.05,
           "identity_mlp_kl": 0.1, "oracle_kl": 0.02, "truth_kl": 0.04, "student_kl_expected": 0.03, "identity_mlp_kl_expected": 0.08,
           "channel_sd_ratio": 1.0, "channel_w1_ratio_population_floor": 2.0, "channel_w1_ratio": 3.0, "channel_crps_ratio": 1.2,
           "channel_crps": {"student": 0.036, "floor": 0.03, "ratio": 1.2, "point_student": 0.05, "point_floor_repeat": 0.04},
           "tail_survival": M.tail_survival(shares * [1, 1, 1.05], shares, ["a", "b", "rare"]), "tail_survival_ok": True,
           "tail_log_ratio_max": 0.049, "tail_survival_min": 1.0, "decision_jsd_final_ratio": 1.1,
           "decision_jsd_final_ratio_population_floor": float("nan")}
    text = format_table(row)
    for key in GOALS:
        assert f"| {key} |" in text
    assert "| ablation_signed_error | ≤ 0.3 | 0.100 ✓ |" in text
    assert "| interventions_pass | true | false ✗ |" in text
    assert "| channel_w1_ratio_population_floor | ≤ 1.5 | 2.000 ✗ |" in text
    assert "| remove event 0 |" in text and "| false | 0.200 |" in text and "| rare |" in text
    assert "oracle floor 0.0200" in text
