"""Held-out evaluation: metrics on known answers, every baseline present, the CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lsm.config import CONFIG_ROOT
from lsm.train.data import load_episode
from lsm.train.evaluate import _metrics, evaluate
from lsm.model.society import StudentConfig
from lsm.train.module import DistillModule

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data_gen/corpus/n20"


@pytest.fixture(scope="module")
def episodes():
    return {name: load_episode(CORPUS / f"{name}.h5") for name in ("vaccine_campaign_s0", "vaccine_campaign_s1", "product_adoption_s0")}


def test_metrics_of_the_teacher_against_itself(episodes):
    ep = episodes["vaccine_campaign_s1"]
    t = ep.targets
    m = _metrics(t["decision_dist"], t["channels"], t["expression_emb"], ep)
    assert m["decision_kl"] == pytest.approx(0.0, abs=1e-5)
    assert m["channel_mae"] == 0.0 and m["expression_cos"] == pytest.approx(1.0, abs=1e-4)
    sampled_is_argmax = (t["decision_dist"].argmax(-1) == t["decision"])[t["valid"]].float().mean()
    assert m["decision_acc"] == pytest.approx(float(sampled_is_argmax))
    uniform = torch.full_like(t["decision_dist"], 1 / 3)
    kl_uniform = _metrics(uniform, None, None, ep)["decision_kl"]
    p = t["decision_dist"][t["valid"]]
    assert kl_uniform == pytest.approx(float((p * torch.log(p.clamp_min(1e-8) * 3)).sum(-1).mean()), rel=1e-4)


def _raw(name):
    """valid (T, N), decision (T, N), decision_dist (T, N, A), channels (T, N, C) straight from the trace file."""
    with h5py.File(CORPUS / f"{name}.h5", "r") as f:
        return (f["valid"][:].astype(bool), f["decision"][:].astype(np.int64), f["decision_dist"][:].astype(np.float64),
                np.nan_to_num(f["channels"][:].astype(np.float64)))


def _row_by_hand(q, q_ch, held_out):
    """decision KL(p || q), accuracy of argmax q, channel MAE over the valid teacher agent-ticks of `held_out`."""
    v, d, p, ch = _raw(held_out)
    p, q = p[v], np.broadcast_to(q, p.shape)[v]
    return {"decision_kl": float((p * np.log(p / q)).sum(-1).mean()),  # no zeros in p on valid ticks
            "decision_acc": float((q.argmax(-1) == d[v]).mean()),
            "channel_mae": float(np.abs(np.broadcast_to(q_ch, ch.shape)[v] - ch[v]).mean())}


def _previous(fallback, fallback_ch, held_out):
    """Each agent's own teacher distribution and channels of t-1; at tick 0 or after an invalid t-1, the fallback's of tick t."""
    v, _, p, ch = _raw(held_out)
    prev, prev_ch = np.repeat(fallback, v.shape[1], 1), np.repeat(fallback_ch, v.shape[1], 1)  # (T, N, ·)
    for t in range(1, len(v)):
        for i in np.nonzero(v[t - 1])[0]:
            prev[t, i], prev_ch[t, i] = p[t - 1, i], ch[t - 1, i]
    return prev, prev_ch


def _assert_row(row, want):
    for k, x in want.items():
        assert row[k] == pytest.approx(x, rel=1e-5, abs=1e-7), k


def test_every_baseline_is_reported(episodes):
    ep0 = episodes["vaccine_campaign_s0"]
    sizes = {"categorical_sizes": [int(c) + 1 for c in ep0.identity_cat.max(0).values],
             "numeric_dim": ep0.identity_num.shape[1]}
    torch.manual_seed(0)
    module = DistillModule(StudentConfig(dim=16, heads=2, layers=1, **sizes))
    model = module.model.eval()
    # the real identity-only baseline (configs/train/overlay/no_graph.yaml: student.graph false), trained a few steps
    no_graph = DistillModule(StudentConfig(dim=16, heads=2, layers=1, graph=False, **sizes), teacher_forcing_epochs=0)
    assert not no_graph.model.cfg.graph and all(b.graph is None for b in no_graph.model.blocks)
    opt = torch.optim.Adam(no_graph.parameters(), lr=3e-3)

    def step(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.manual_seed(0)
    first = no_graph.unroll(ep0, False)["loss"].item()
    for _ in range(15):
        no_graph.unroll(ep0, False, step)
    assert no_graph.unroll(ep0, False)["loss"].item() < first  # trained
    mlp = no_graph.model.eval()

    seen = evaluate(model, [ep0], [episodes["vaccine_campaign_s1"]], mlp=mlp)
    assert set(seen) == {"student", "student, senders shuffled", "identity MLP (no graph)", "marginal per tick",
                         "repeat previous (teacher t-1)"}
    # the no-graph row is that model's own evaluation; it never hears anyone, so shuffling the senders changes nothing
    alone = evaluate(mlp, [ep0], [episodes["vaccine_campaign_s1"]])
    assert seen["identity MLP (no graph)"] == alone["student"] == alone["student, senders shuffled"]
    assert seen["identity MLP (no graph)"] != seen["student"]
    assert seen["student"] != seen["student, senders shuffled"]  # the graph student does hear its senders

    # marginal per tick: the training file's mean decision distribution and channels over its valid agents at each tick
    v0, _, p0, ch0 = _raw("vaccine_campaign_s0")
    marg = np.stack([p0[t][v0[t]].mean(0) for t in range(len(v0))])[:, None]  # (T, 1, A)
    marg_ch = np.stack([ch0[t][v0[t]].mean(0) for t in range(len(v0))])[:, None]  # (T, 1, C)
    _assert_row(seen["marginal per tick"], _row_by_hand(marg, marg_ch, "vaccine_campaign_s1"))
    # repeat previous: each agent's own teacher distribution and channels of t-1; tick 0 or invalid t-1: the marginal
    prev = _previous(marg, marg_ch, "vaccine_campaign_s1")
    _assert_row(seen["repeat previous (teacher t-1)"], _row_by_hand(*prev, "vaccine_campaign_s1"))

    # a scenario left out of training: uniform decisions (KL(p || uniform) = Σ p log(p A)) and the training channels' mean
    left_out = evaluate(model, [ep0], [episodes["product_adoption_s0"]])
    assert set(left_out) == {"student", "student, senders shuffled", "uniform (no training marginal)",
                             "repeat previous (teacher t-1)"}
    A = p0.shape[-1]
    uniform = np.full((len(v0), 1, A), 1 / A)
    _assert_row(left_out["uniform (no training marginal)"], _row_by_hand(uniform, marg_ch, "product_adoption_s0"))
    prev = _previous(uniform, marg_ch, "product_adoption_s0")
    _assert_row(left_out["repeat previous (teacher t-1)"], _row_by_hand(*prev, "product_adoption_s0"))
    v2, _, p2, _ = _raw("product_adoption_s0")
    assert left_out["uniform (no training marginal)"]["decision_kl"] == pytest.approx(
        float((p2[v2] * np.log(p2[v2] * A)).sum(-1).mean()), rel=1e-5)


def test_lsm_evaluate_end_to_end(tmp_path, monkeypatch, capsys):
    from lsm.cli import main

    monkeypatch.chdir(tmp_path)
    train, val = str(CORPUS / "vaccine_campaign_s0.h5"), str(CORPUS / "vaccine_campaign_s1.h5")
    assert main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"), "--trainer.max_epochs", "1",
                 "--data.train_files", f"[{train}]", "--data.val_files", f"[{val}]"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", "runs/debug/checkpoints", "--held_out", val]) == 0
    out = capsys.readouterr().out
    assert "| student |" in out and "| marginal per tick |" in out and "| repeat previous (teacher t-1) |" in out
    assert "| messages removed |" in out and "| opposite stances |" in out
    # the teacher's own effect (an `lsm sensitivity --json` result) beside the student's, same agents and tick
    sens = tmp_path / "sens.json"
    sens.write_text(json.dumps({"trace": val, "tick": 3, "agent_ids": [0, 4, 7], "variants": {
        "no_messages": {"mean_tv": 0.25}, "opposite_messages": {"mean_tv": 0.17}}}))
    assert main(["evaluate", "--ckpt", "runs/debug/checkpoints", "--held_out", val, "--sensitivity", str(sens)]) == 0
    out = capsys.readouterr().out
    assert "| no messages | 0.2500 |" in out and "| opposite messages | 0.1700 |" in out and "tick 3, 3 agents" in out
    assert main(["evaluate", "--ckpt", "runs/debug/checkpoints", "--held_out", str(tmp_path / "missing_*.h5")]) == 2
    assert "no trace file matches" in capsys.readouterr().err
