"""Probes recover planted signals and not noise; the grounding checker; narration with the real LLM."""
from __future__ import annotations

import numpy as np
import pytest

from lsm.narrate.grounding import check_grounding
from lsm.probes.features import label_texts
from lsm.probes.linear import fit_probe
from lsm.probes.readout import AgentReadout, TickReadout


def _planted(seed=0, n_agents=60, ticks=4, dim=12):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_agents * ticks, dim))
    agents = np.tile(np.arange(n_agents), ticks)
    w = np.zeros(dim)
    w[[2, 7]] = [1.5, -1.0]  # the signal lives on dimensions 2 and 7
    return x, agents, w, rng


def test_probes_recover_a_planted_linear_signal():
    x, agents, w, rng = _planted()
    y = x @ w + 0.1 * rng.normal(size=len(x))
    r = fit_probe(x, y, agents, "regression", "planted", "latent")
    assert r.score > 0.9 and r.shuffled < 0.2
    assert {d for d, _ in r.top_dims[:2]} == {2, 7}
    c = fit_probe(x, (x @ w > 0).astype(int), agents, "classification", "planted_class", "latent")
    assert c.score > 0.85 and c.score - max(c.shuffled, c.chance) > 0.2


def test_probes_stay_at_chance_on_unrelated_labels():
    x, agents, _, rng = _planted(seed=1)
    y = rng.normal(size=len(x))
    r = fit_probe(x, y, agents, "regression", "noise", "latent")
    assert r.score < 0.1
    c = fit_probe(x, rng.integers(0, 2, len(x)), agents, "classification", "noise", "latent")
    assert abs(c.score - 0.5) < 0.15


def test_text_features_follow_the_documented_rules():
    labels = label_texts(np.array(["I trust the health officials", "It costs too much money", "", "My neighbors did it"]))
    assert labels["mentions_trust"].tolist() == [True, False, False, False]
    assert labels["mentions_cost"].tolist() == [False, True, False, False]
    assert labels["mentions_others"].tolist() == [False, False, False, True]


def _record():
    ticks = [TickReadout(t, d, {"vaccinate": pv, "wait": 1 - pv - 0.1, "refuse": 0.1},
                         {"trust_institutions": 0.3, "perceived_risk": 0.62}, ["Health officials recommend the vaccine."],
                         [{"agent": 5, "name": "Ann B.", "tie": "friend", "weight": 0.7, "their_decision": "wait", "their_stance": 0.1},
                          {"agent": 2, "name": "self", "tie": "self", "weight": 0.3, "their_decision": None, "their_stance": None}],
                         [0.5, 0.5], 0, 0.4, 0.2)
             for t, d, pv in ((0, "wait", 0.2), (1, "wait", 0.35), (2, "vaccinate", 0.7))]
    return AgentReadout(2, "Maria L.", {"name": "Maria L.", "age": 41.0, "party": "democrat"}, ["vaccinate", "wait", "refuse"], ticks)


def test_grounding_passes_a_faithful_narrative():
    text = ("In tick 0, I decided to wait because the officials had not convinced me. In tick 1, I still waited, "
            "as my friend Ann did. In tick 2, I decided to vaccinate; I was 70% sure, and my sense of risk was 6 out of 10. "
            "At 41, I did not want to refuse.")
    assert check_grounding(text, _record()) == []


@pytest.mark.parametrize("wrong, kind", [
    ("In tick 1, I decided to vaccinate because I trusted the officials.", "decision"),  # wrong decision
    ("In tick 5, I decided to wait.", "tick"),  # a tick outside the record
    ("In tick 2, I decided to vaccinate and I was 93% sure.", "number"),  # an invented number
])
def test_grounding_catches_wrong_narratives(wrong, kind):
    issues = check_grounding(wrong, _record())
    assert [i.kind for i in issues] == [kind], issues


def test_narration_and_interview_with_the_embedded_llm(trained, tmp_path, capsys):
    from lsm.cli import main

    tmp, ckpt, world = trained
    out = tmp_path / "r.h5"
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out", str(out),
                 "--ticks", "2", "--quiet", "true"]) == 0
    capsys.readouterr()
    assert main(["narrate", "--rollout", str(out), "--agent", "4", "--teacher", "debug", "--out", str(tmp_path / "n.md")]) == 0
    text = (tmp_path / "n.md").read_text()
    assert "agent 4" in text and "In tick 0, I decided to" in text and "In tick 1, I decided to" in text
    assert "Grounding: passed" in text or "Grounding: FAILED" in text  # checked either way, never silent
    assert main(["narrate", "--rollout", str(out), "--agent", "4", "--teacher", "debug", "--ticks", "1:1",
                 "--ask", "Who did you listen to?"]) == 0
    assert "asked: *Who did you listen to?*" in capsys.readouterr().out
    assert main(["narrate", "--rollout", str(out), "--agent", "99"]) == 2
    assert "agents 0..59" in capsys.readouterr().err
