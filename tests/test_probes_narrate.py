"""Probes recover planted signals and not noise; the grounding checker; narration with the real LLM."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lsm.cli import main
from lsm.model.checkpoint import load_checkpoint
from lsm.narrate.checks import check
from lsm.narrate.grounding import check_grounding
from lsm.narrate.scaffold import scaffold
from lsm.probes.features import label_texts
from lsm.probes.linear import fit_probe
from lsm.probes.readout import AgentReadout, TickReadout, agent_readout
from lsm.society.store import TraceFile


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
    """Labels unrelated to the state: the probe and its shuffled-label twin score at chance (the
    held-out majority share; R² = 0) within a tolerance set by the 360 test rows, and on a real
    signal the shuffled twin still scores R² = 0."""
    x, agents, w, rng = _planted(seed=1, n_agents=300)  # 1,200 rows; 90 held-out agents = 360 test rows
    c = fit_probe(x, (rng.random(len(x)) < 0.7).astype(int), agents, "classification", "noise", "latent")
    tol = 3 * np.sqrt(0.7 * 0.3 / c.n_test)  # three standard errors of an accuracy near 0.7: 0.072
    assert c.n_test == 360 and abs(c.chance - 0.7) < tol  # chance: the training majority's share of the test rows
    assert abs(c.score - c.chance) < tol and abs(c.shuffled - c.chance) < tol
    # an unrelated ridge loses about p / n_train + 1 / n_test = 12 / 840 + 1 / 360 ≈ 0.02 of R²
    r = fit_probe(x, rng.normal(size=len(x)), agents, "regression", "noise", "latent")
    assert abs(r.score) < 0.05 and abs(r.shuffled) < 0.05
    # on a planted signal, a shuffled-label ridge points in a random direction of the 12 dims:
    # its chance alignment with the signal is of order 1 / 12 of R² before cross-validated shrinkage
    s = fit_probe(x, x @ w + 0.1 * rng.normal(size=len(x)), agents, "regression", "planted", "latent")
    assert s.score > 0.99 and abs(s.shuffled) < 0.08


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


@pytest.mark.parametrize("negated, plain", [
    ("In tick 1, I decided not to vaccinate.", "In tick 1, I decided to vaccinate."),  # waited at tick 1
    ("In tick 0, I did not vaccinate.", "In tick 0, I vaccinated."),  # waited at tick 0
    ("In tick 2, I never refused.", "In tick 2, I refused."),  # vaccinated at tick 2
    ("In tick 0, I held off instead of vaccinating.", "In tick 0, I held off by vaccinating."),
])
def test_grounding_exempts_negated_actions_from_the_decision_check(negated, plain):
    """A negation ("not", "never", "instead of") says the named action was *not* taken, so it need
    not be the decision; the same sentence without it contradicts the record."""
    assert check_grounding(negated, _record()) == []
    assert [i.kind for i in check_grounding(plain, _record())] == ["decision"]


@pytest.mark.parametrize("negated, kind", [
    ("In tick 5, I did not vaccinate.", "tick"),  # negated, yet the tick is outside the record
    ("In tick 2, I did not refuse, and I was 93% sure.", "number"),  # negated, yet the number is invented
])
def test_negated_sentences_still_have_their_ticks_and_numbers_checked(negated, kind):
    assert [i.kind for i in check_grounding(negated, _record())] == [kind]


def test_grounding_reads_contractions_as_negations():
    """"didn't" is a negation like "did not" (waited at tick 0)."""
    assert check_grounding("In tick 0, I didn't vaccinate.", _record()) == check_grounding(
        "In tick 0, I did not vaccinate.", _record()) == []


@pytest.mark.parametrize("negated", ["In tick 2, I did not vaccinate.", "In tick 1, I decided not to wait.",
                                     "In tick 1, I didn't wait.", "In tick 1, I refused rather than wait."])
def test_grounding_flags_a_negated_claim_that_denies_the_recorded_decision(negated):
    """Vaccinated at tick 2 and waited at tick 1: denying either, or asserting another action
    beside a negation, contradicts the record."""
    assert [i.kind for i in check_grounding(negated, _record())] == ["decision"]


def test_a_negation_reaches_only_its_own_clause():
    """"not" in the reason does not deny the decision stated before it (waited at tick 1)."""
    assert check_grounding("In tick 1, I decided to wait because I was not sure I should vaccinate.", _record()) == []
    assert check_grounding("In tick 1, I was not sure, so I waited.", _record()) == []


def test_narration_and_interview_with_the_embedded_llm(trained, tmp_path, capsys):

    tmp, ckpt, world = trained
    out = tmp_path / "r.h5"
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out", str(out),
                 "--ticks", "2", "--quiet", "true"]) == 0
    capsys.readouterr()
    assert main(["narrate", "--rollout", str(out), "--agent", "4", "--teacher", "debug", "--out", str(tmp_path / "n.md")]) == 0
    text = (tmp_path / "n.md").read_text()

    record = agent_readout(load_checkpoint(ckpt), out, 4, range(2))
    with TraceFile(out) as tf:
        labels, decided = tf.scenario.actions.labels, tf.array("decision")[:, 4]
    assert [t.decision for t in record.ticks] == [labels[decided[0]], labels[decided[1]]]
    # the printed verdict is the checks' verdict on the printed narrative, which passes them all
    body = text.split("\n\n")[1]
    verdict = check(body, record, scaffold(record, None))
    assert verdict.passed, verdict.problems
    assert "*Checks: grounded ✓, relevant ✓, attributed ✓, complete ✓" in text
    assert main(["narrate", "--rollout", str(out), "--agent", "4", "--teacher", "debug", "--ticks", "1:1",
                 "--ask", "Who did you listen to?"]) == 0
    assert "asked: *Who did you listen to?*" in capsys.readouterr().out
    assert main(["narrate", "--rollout", str(out), "--agent", "99"]) == 2
    assert "agents 0..59" in capsys.readouterr().err


def test_the_battery_from_the_cli_prints_rates_that_recount_its_answers(trained, tmp_path, capsys):
    """`lsm narrate --battery 2`: every answer printed, then the table; the table's counts equal a
    recount of the printed answers, and each answer's stored checks equal the checks run again on
    its text against the agent's record."""


    tmp, ckpt, world = trained
    out = tmp_path / "r.h5"
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--out", str(out),
                 "--ticks", "2", "--quiet", "true"]) == 0
    capsys.readouterr()
    assert main(["narrate", "--rollout", str(out), "--battery", "2", "--teacher", "debug", "--attempts", "1",
                 "--out", str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    lines = [ln for ln in printed.splitlines() if ln.startswith("agent ")]
    saved = json.loads((tmp_path / "b.json").read_text())
    n = len(saved["answers"])
    assert n == len(lines) == 2 * 8
    fallback = sum(" fallback" in ln.split("]")[0] for ln in lines)
    failed = sum(" FAILED" in ln.split("]")[0] for ln in lines)
    assert f"| fallback | {fallback / n:.1%} ({fallback}/{n}) |" in printed
    assert f"| all four | {(n - failed) / n:.1%} ({n - failed}/{n}) |" in printed
    student = load_checkpoint(ckpt)
    records = {i: agent_readout(student, out, i) for i in saved["agents"]}
    for a in saved["answers"]:
        verdict = check(a["text"], records[a["agent"]], scaffold(records[a["agent"]], a["question"]))
        assert verdict.as_dict() == a["checks"], (a, verdict.problems)
