"""Held-out evaluation: metrics on known answers, every baseline present, the CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lsm.config import CONFIG_ROOT
from lsm.train.data import load_episode
from lsm.train.evaluate import _metrics, evaluate
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


def test_every_baseline_is_reported(episodes):
    ep0 = episodes["vaccine_campaign_s0"]
    torch.manual_seed(0)
    module = DistillModule(dim=16, heads=2, layers=1, categorical_sizes=[int(c) + 1 for c in ep0.identity_cat.max(0).values],
                           numeric_dim=ep0.identity_num.shape[1])
    model = module.model.eval()
    seen = evaluate(model, [ep0], [episodes["vaccine_campaign_s1"]], mlp=model)
    assert set(seen) == {"student", "student, senders shuffled", "identity MLP (no graph)", "marginal per tick",
                         "repeat previous (teacher t-1)"}
    left_out = evaluate(model, [ep0], [episodes["product_adoption_s0"]])
    assert "uniform (no training marginal)" in left_out and "marginal per tick" not in left_out
    for row in (*seen.values(), *left_out.values()):
        assert row["decision_kl"] >= 0 and 0 <= row["decision_acc"] <= 1


def test_lsm_evaluate_end_to_end(tmp_path, monkeypatch, capsys):
    from lsm.cli import main

    monkeypatch.chdir(tmp_path)
    train, val = str(CORPUS / "vaccine_campaign_s0.h5"), str(CORPUS / "vaccine_campaign_s1.h5")
    assert main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"), "--trainer.max_epochs", "1",
                 "--data.train_files", f"[{train}]", "--data.val_files", f"[{val}]"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "runs/debug/checkpoints", val]) == 0
    out = capsys.readouterr().out
    assert "| student |" in out and "| marginal per tick |" in out and "| repeat previous (teacher t-1) |" in out
    assert "| messages removed |" in out and "| opposite stances |" in out
    # the teacher's own effect (an `lsm sensitivity --json` result) beside the student's, same agents and tick
    sens = tmp_path / "sens.json"
    sens.write_text(json.dumps({"trace": val, "tick": 3, "agent_ids": [0, 4, 7], "variants": {
        "no_messages": {"mean_tv": 0.25}, "opposite_messages": {"mean_tv": 0.17}}}))
    assert main(["evaluate", "runs/debug/checkpoints", val, "--sensitivity", str(sens)]) == 0
    out = capsys.readouterr().out
    assert "| no messages | 0.2500 |" in out and "| opposite messages | 0.1700 |" in out and "tick 3, 3 agents" in out
    assert main(["evaluate", "runs/debug/checkpoints", str(tmp_path / "missing_*.h5")]) == 2
    assert "no trace file matches" in capsys.readouterr().err
