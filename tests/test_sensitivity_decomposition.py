"""`lsm sensitivity`'s decomposition of the teacher's reaction to its neighbours' messages: order
noise, presence (placebo), content, additivity and how predictable a message's content effect is
(the shipped n20 corpus, 2 agents, the real embedded SmolLM2; the regression helper without it)."""
from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lsm.data_gen.teacher import prompts as ag
from lsm.society.store import TraceFile

TRACE = Path(__file__).resolve().parents[1] / "data_gen" / "corpus" / "n20" / "vaccine_campaign_s0.h5"
TICK, ORDERS = 7, 2


# --------------------------------------------------------------------------- without the LLM

def test_ridge_cv_r2_is_one_on_a_noiseless_linear_target_and_not_above_zero_on_noise():
    from lsm.data_gen.teacher.sensitivity import cv_r2

    r = np.random.default_rng(0)
    n = 120
    X, groups = r.normal(size=(n, 3)), np.repeat(np.arange(30), 4)  # 4 rows per agent, 5 folds by agent
    Y = X @ r.normal(size=(3, 2)) + 1.0
    est, low, high = cv_r2(X, Y, groups)
    assert est > 0.99 and low <= est <= high
    noise, _, _ = cv_r2(X, r.normal(size=(n, 2)), groups)
    assert noise <= 0.02
    # an embedding whose top principal components carry the target: the PCA (fitted per training fold) finds it
    Z = r.normal(size=(n, 2)) * 5
    emb = Z @ r.normal(size=(2, 384)) + 0.05 * r.normal(size=(n, 384))
    target = Z @ r.normal(size=(2, 3))
    assert cv_r2(X, target, groups)[0] < 0.1
    assert cv_r2(X, target, groups, emb)[0] > 0.95
    assert cv_r2(X, Y, np.zeros(n)) == (None, None, None)  # one agent: no cross-validation


def test_placebo_messages_keep_lengths_slots_and_are_seeded():
    from lsm.data_gen.teacher.sensitivity import TracePrompts, design

    with TraceFile(TRACE) as tf:
        rebuilt = TracePrompts(tf)
        parts = rebuilt.parts(3, TICK)
        d = design(parts, TICK, 3, seed=0, orders=4)
        again, other = design(parts, TICK, 3, seed=0, orders=4), design(parts, TICK, 3, seed=1, orders=4)
        other_agent = design(rebuilt.parts(4, TICK), TICK, 4, seed=0, orders=4)
        user = rebuilt.user(3, TICK, d.placebo[0])
    real = parts.messages
    assert len(real) >= 2
    assert [len(t) for t in d.placebo_texts] == [len(m[2]) for m in real]
    assert d.placebo_texts == again.placebo_texts and d.orders == again.orders  # same seed: same texts and orders
    assert d.placebo_texts != other.placebo_texts and d.placebo_texts != other_agent.placebo_texts
    assert all(t != m[2] for t, m in zip(d.placebo_texts, real))
    # same senders and relation words in the same slots, in every order; the shown order first
    assert d.orders[0] == tuple(range(len(real))) and len(d.orders) == len(set(d.orders)) == 4
    for o, p, q in zip(d.orders, d.real, d.placebo):
        assert [m[:2] for m in p.messages] == [m[:2] for m in q.messages] == [real[k][:2] for k in o]
        assert [m[2] for m in q.messages] == [d.placebo_texts[k] for k in o]
    assert [p.messages for p in d.placebo_alone] == [[(*m[:2], t)] for m, t in zip(real, d.placebo_texts)]
    assert [p.messages for p in d.alone] == [[m] for m in real] and d.none.messages == []
    assert all(f'"{t}"' in user for t in d.placebo_texts) and not any(f'"{m[2]}"' in user for m in real)  # quoted
    # two messages: both orders, the average over them is exact
    two = design(replace(parts, messages=real[:2]), TICK, 3, seed=0, orders=4)
    assert two.orders == [(0, 1), (1, 0)]


# --------------------------------------------------------------------------- with the embedded LLM

@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """`lsm sensitivity` on the shipped corpus: 2 agents, 2 orders (its printed report and JSON)."""
    from lsm.cli import main

    js = tmp_path_factory.mktemp("sens") / "s.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sensitivity", str(TRACE), "--agents", "2", "--orders", str(ORDERS), "--json", str(js)]) == 0
    return json.loads(js.read_text()), out.getvalue()


def test_decomposition_keys_are_finite_and_printed(result):
    from lsm.data_gen.teacher.sensitivity import DECOMPOSITION, VARIANTS

    r, text = result
    assert r["tick"] == TICK and r["agents"] == 2 and set(r["variants"]) == set(VARIANTS[1:])
    assert all(r["variants"][v]["mean_tv"] is not None for v in VARIANTS[1:])  # the old consumers' keys
    d = r["decomposition"]
    assert d["orders"] == ORDERS and set(DECOMPOSITION) <= set(d)
    for k in DECOMPOSITION:
        assert all(isinstance(d[k][x], float) and math.isfinite(d[k][x]) for x in ("mean", "low", "high")), k
        assert d[k]["low"] <= d[k]["mean"] + 1e-9 and d[k]["mean"] <= d[k]["high"] + 1e-9, k
        assert d[k]["agents"] == 2, k  # every agent of this tick is shown four messages
    for k in ("order_noise", "presence", "content", "total_social"):
        assert 0 <= d[k]["mean"] <= 1
    assert d["r2_stance_tie"]["pairs"] == sum(d["per_agent"]["messages"])
    assert d["content_share"]["mean"] == pytest.approx(d["content"]["mean"] / d["total_social"]["mean"], rel=1e-6)
    for row in ("order noise", "presence", "content", "total social", "additivity", "CV R2", "no_messages"):
        assert row in text
    assert "Content beyond placebo is" in text and "order noise is" in text


def test_order_average_is_the_mean_of_the_per_order_scores(result, embedded):
    """Score the orders' prompts by hand: their mean is the reported real distribution, and the
    totals follow from the reported per-agent distributions."""
    from lsm.data_gen.teacher.sensitivity import TracePrompts, design
    from lsm.society.stats import paired_tv

    r, _ = result
    pa = r["decomposition"]["per_agent"]
    with TraceFile(TRACE) as tf:
        rebuilt, sc = TracePrompts(tf), tf.scenario
        designs = {i: design(rebuilt.parts(i, TICK), TICK, i, 0, ORDERS) for i in pa["agent_ids"]}
        users = {i: [rebuilt.user(i, TICK, p) for p in [*d.real, d.none]] for i, d in designs.items()}
    assert all(len(d.orders) == ORDERS for d in designs.values())
    backend = embedded
    prefix = [{"role": "assistant", "content": '{"decision": "'}]
    flat = [u for i in pa["agent_ids"] for u in users[i]]
    scores = np.array(backend.score_options([ag.conversation(rebuilt.system, u) + prefix for u in flat],
                                            [ag.decision_options(sc)] * len(flat))).reshape(len(users), ORDERS + 1, -1)
    orders, none = scores[:, :ORDERS], scores[:, ORDERS]
    np.testing.assert_allclose(pa["real"], orders.mean(1), atol=2e-3)
    np.testing.assert_allclose(pa["none"], none, atol=2e-3)
    assert not np.allclose(orders[:, 0], orders[:, 1], atol=1e-4)  # the orders do differ: the average is not one order
    d = r["decomposition"]
    np.testing.assert_allclose(d["total_social"]["values"], paired_tv(orders.mean(1), none), atol=2e-3)
    np.testing.assert_allclose(d["order_noise"]["values"], paired_tv(orders, orders.mean(1, keepdims=True)).mean(1), atol=2e-3)
    # the old variant is the shown order (the first) against no messages, as before
    np.testing.assert_allclose(r["variants"]["no_messages"]["tv"], paired_tv(orders[:, 0], none), atol=2e-3)
