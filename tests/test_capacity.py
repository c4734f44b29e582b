"""`lsm capacity`: the text pathway's known-answer check on real messages, and the paired-effects
experiment (`recovery.paired`), on the shipped 20-agent corpus."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lsm.recovery.capacity import CapacityConfig, hidden_direction, planted_targets, run_capacity
from lsm.society.contrasts import CONTRASTS
from lsm.train.datamodule import TraceDataModule

ROOT = Path(__file__).resolve().parents[1]
TRACES = [str(ROOT / f"data_gen/corpus/n20/vaccine_campaign_s{s}.h5") for s in (0, 1)]


@pytest.fixture(scope="module")
def episode():
    dm = TraceDataModule(TRACES[:1])
    dm.setup()
    return dm.train_episodes[0]


def test_the_hidden_direction_has_unit_spread_and_ignores_stance():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(500, 32)) @ rng.normal(size=(32, 64))  # messages in a 32-dim subspace of 64
    stance = emb[:, :3].sum(1) + 0.1 * rng.normal(size=500)  # stance is readable from the embedding
    w = hidden_direction(emb, stance, seed=0)
    proj = emb @ w
    assert proj.std() == pytest.approx(1.0, abs=1e-6)
    z = emb - emb.mean(0)
    basis = np.linalg.svd(z, full_matrices=False)[2][:8]
    fit = np.linalg.lstsq(z @ basis.T, stance - stance.mean(), rcond=None)[0] @ basis  # the stance direction in those components
    assert abs(np.corrcoef(proj, emb @ fit)[0, 1]) < 1e-6  # orthogonal to it
    assert not np.allclose(hidden_direction(emb, stance, seed=1), w)  # seeded


def test_planted_targets_follow_the_rule_by_hand(episode):
    ep = episode
    rng = np.random.default_rng(1)
    w = rng.normal(size=ep.targets["expression_emb"].shape[-1])
    sampled = torch.zeros(ep.ticks, ep.n, dtype=torch.bool)
    sampled[3, :4] = True
    tg = planted_targets(ep, w, beta=2.0, sampled=sampled, seed=0)
    t, i = 3, int(torch.nonzero((ep.shown[3] >= 0).sum(1) >= 2)[0])
    e = torch.nn.functional.normalize(ep.targets["expression_emb"][t - 1], dim=-1).numpy()
    js = [int(j) for j in ep.shown[t, i] if j >= 0]
    s = sum(float(e[j] @ w) * bool(ep.targets["valid"][t - 1, j]) for j in js) / np.sqrt(len(js))
    A = tg["decision_dist"].shape[-1]
    logits = np.zeros(A)
    logits[0], logits[-1] = 2.0 * s, -2.0 * s
    np.testing.assert_allclose(tg["decision_dist"][t, i].numpy(), np.exp(logits) / np.exp(logits).sum(), atol=1e-5)
    q = tg["contrast_dist"]
    assert torch.isnan(q[2]).all() and torch.isfinite(q[3, :4]).all() and torch.isnan(q[3, 4:]).all()
    np.testing.assert_allclose(q[3, :4, CONTRASTS.index("no_messages")].numpy(), np.full((4, A), 1.0 / A), atol=1e-6)
    np.testing.assert_allclose(q[3, :4, 0].numpy(), tg["decision_dist"][3, :4].numpy(), atol=1e-6)


def test_lsm_capacity_runs_end_to_end_on_a_tiny_budget(tmp_path):
    r = run_capacity(CapacityConfig(TRACES, sizes=[5], held_out=8, steps=2), say=lambda _: None)
    assert [row["paired_loss"] for row in r["rows"]] == [False, True]
    assert all(row["agent_ticks"] == 5 * 8 * 2 and row["truth_tv"] > 0.05 and row["r"] is not None for row in r["rows"])
    assert r["held_out_agent_ticks"] == 8 * 8 * 2 and abs(r["stance_correlation_of_w"]) < 0.2
