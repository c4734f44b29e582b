"""Narration's scaffold, its four checks and the battery's arithmetic, on hand-built records.

The records are written by hand, so every fact the scaffold should list is known; the answers
are written by hand, so every verdict is known. The LLM is not needed here except where a
backend is named (`test_the_battery_through_the_embedded_llm` ...).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from lsm.narrate.battery import BATTERY_QUESTIONS, BatteryResult, questions_for
from lsm.narrate.checks import attribution, check, completeness, relevance
from lsm.narrate.narrator import Narration, narrate, tidy
from lsm.narrate.scaffold import QUESTION_KINDS, route, scaffold
from lsm.probes.readout import AgentReadout, TickReadout, trace_readout
from lsm.society.store import TraceFile

ACTIONS = ["vaccinate", "wait", "refuse"]


def _tick(t, decision, p, trust, risk, attention, events=(), salience=0.2, reasoning="", memory=""):
    probs = {a: (p if a == decision else (1 - p) / 2) for a in ACTIONS}
    return TickReadout(t, decision, probs, {"trust_institutions": trust, "perceived_risk": risk}, [e[0] for e in events],
                       attention, [0.5, 0.5], 0, salience, 0.1, [(e[1], e[2]) for e in events], reasoning, memory)


def _student_record() -> AgentReadout:
    """Maria waits in ticks 0 and 1, then vaccinates in tick 2: her trust rose, she attended to
    Ann (a friend who vaccinated) and saw the health department's announcement."""
    ann = lambda w, d: {"agent": 5, "name": "Ann Berg", "tie": "friend", "weight": w, "their_decision": d, "their_stance": 0.3}  # noqa: E731
    tom = lambda w, d: {"agent": 8, "name": "Tom Ruiz", "tie": "household", "weight": w, "their_decision": d, "their_stance": -0.2}  # noqa: E731
    me = lambda w: {"agent": 2, "name": "Maria Lopez", "tie": "self", "weight": w, "their_decision": None, "their_stance": None}  # noqa: E731
    announcement = ("The State Department of Health says the vaccine is safe and free for everyone over 12.",
                    "State Department of Health", 0.8)
    rumour = ("A post claims the shots cause fatigue.", "Online forum", 0.2)
    ticks = [_tick(0, "wait", 0.6, 0.3, 0.6, [me(0.5), tom(0.3, None), ann(0.2, None)], [announcement, rumour]),
             _tick(1, "wait", 0.55, 0.4, 0.5, [ann(0.5, "vaccinate"), tom(0.3, "wait"), me(0.2)]),
             _tick(2, "vaccinate", 0.7, 0.7, 0.3, [ann(0.6, "vaccinate"), me(0.25), tom(0.15, "wait")], [announcement], salience=0.8)]
    return AgentReadout(2, "Maria Lopez", {"name": "Maria Lopez", "age": 41.0}, ACTIONS, ticks)


def _teacher_record() -> AgentReadout:
    """The same agent as a teacher trace writes it: shown neighbours without weights, and the
    teacher's own reasoning and memory."""
    rec = _student_record()
    for t in rec.ticks:
        t.attention = [dict(a, weight=None) for a in t.attention if a["tie"] != "self"]
    rec.ticks[2].reasoning = "Ann got the shot and was fine, and the health department is credible."
    rec.ticks[2].memory_text = "Ann vaccinated without problems."
    rec.kind = "teacher_trace"
    return rec


@pytest.mark.parametrize("question, kind", [
    ("Why did you vaccinate in tick 2?", "why"), ("Why did you decide as you did in the last tick?", "why"),
    ("What changed your mind?", "change"), ("Who influenced you most?", "influence"),
    ("What did you hear or see in week 1?", "heard"), ("How do you feel about the risk?", "feel"),
    ("What would make you change your decision?", "would_change"), ("Trust in institutions?", "feel"),
    ("Did you vaccinate?", "why"), ("What is your favourite food?", "unknown"),
])
def test_questions_are_routed_to_their_kind(question, kind):
    assert route(question, _student_record()) == kind


def _texts(sc):
    return [f.text for f in sc.facts]


def test_the_scaffold_of_each_question_kind_lists_exactly_the_expected_facts():
    rec = _student_record()
    assert _texts(scaffold(rec, "Why did you vaccinate in tick 2?")) == [
        "In tick 2, I decided to vaccinate (70% likely).",
        "In tick 2, I paid attention to Ann Berg, my friend, who had decided to vaccinate (60% of my attention).",
        "In tick 2, I paid attention to Tom Ruiz, someone in my household, who had decided to wait (15% of my attention).",
        'In tick 2, I saw "The State Department of Health says the vaccine is safe and free for everyone over 12" '
        "from State Department of Health (credibility 8/10).",
        "In tick 2, I marked what happened as worth remembering (strength 8/10).",
        "In tick 2, my trust in institutions was 7/10, up from 4/10 in tick 1."]
    assert _texts(scaffold(rec, "What changed your mind?"))[0] == \
        "In tick 2, I changed my mind: after I decided to wait in tick 1, I decided to vaccinate (70% likely)."
    # "who": the people attended to, most attended first; self first where it drew the most attention
    assert _texts(scaffold(rec, "Who influenced you in tick 0?"))[:3] == [
        "In tick 0, I paid most attention to my own earlier view (50% of my attention).",
        "In tick 0, I paid attention to Tom Ruiz, someone in my household, who had not decided yet (30% of my attention).",
        "In tick 0, I paid attention to Ann Berg, my friend, who had not decided yet (20% of my attention)."]
    assert _texts(scaffold(rec, "What did you hear in tick 0?"))[:2] == [
        'In tick 0, I saw "The State Department of Health says the vaccine is safe and free for everyone over 12" '
        "from State Department of Health (credibility 8/10).",
        'In tick 0, I saw "A post claims the shots cause fatigue" from Online forum (credibility 2/10).']
    assert _texts(scaffold(rec, "How do you feel about the risk now?")) == [
        "In tick 2, my perceived risk was 3/10, down from 5/10 in tick 1.", "In tick 2, I decided to vaccinate (70% likely)."]
    assert _texts(scaffold(rec, "What would make you change?"))[0] == \
        "In tick 2, I was 70% likely to vaccinate, and my next most likely choice was to wait (15%)."
    assert _texts(scaffold(rec, "What is your favourite food?")) == [
        "My record does not say: it holds what I decided, what I saw and heard, and how I felt, tick by tick."]
    assert _texts(scaffold(rec, "Why did you wait in tick 7?")) == ["My record does not say: it holds ticks 0 to 2."]
    change_none = scaffold(AgentReadout(2, "M", {}, ACTIONS, rec.ticks[:2]), "Did you change your mind?")
    assert change_none.facts[0].text == "I did not change my mind: from tick 0 to tick 1, I decided to wait every time."


def test_a_teacher_traces_scaffold_quotes_its_recorded_reasoning_and_memory_and_claims_no_attention():
    sc = scaffold(_teacher_record(), "Why did you vaccinate in tick 2?")
    texts = _texts(sc)
    assert texts[:2] == ["In tick 2, I decided to vaccinate (70% likely).",
                         'In tick 2, my reasoning was: "Ann got the shot and was fine, and the health department is credible".']
    assert 'In tick 2, I noted for myself: "Ann vaccinated without problems".' in texts
    assert "In tick 2, I heard from Ann Berg, my friend, who had decided to vaccinate." in texts
    assert not any("attention" in t for t in texts)


@pytest.mark.parametrize("record", [_student_record, _teacher_record])
@pytest.mark.parametrize("question", [q for _, q in BATTERY_QUESTIONS] + ["Why did you wait in tick 0?", "Why in tick 9?"])
def test_the_plain_fallback_passes_every_check_by_construction(record, question):
    rec = record()
    sc = scaffold(rec, question)
    q = question.format(tick=1, decision="wait", channel="perceived risk") if question else None
    sc = scaffold(rec, q)
    verdict = check(sc.plain(), rec, sc)
    assert verdict.passed, verdict.problems


WHY = "Why did you vaccinate in tick 2?"


@pytest.mark.parametrize("answer, failed", [
    # correct: the decision, a reason from the record, "because" naming it
    ("In tick 2, I decided to vaccinate because my friend Ann Berg had vaccinated and I trusted the health department.", []),
    ("In tick 2, I chose to vaccinate. I paid the most attention to Ann, who had already decided to vaccinate.", []),
    # evasive: restates the question, no fact
    ("You decided as you did in the last tick.", ["relevant"]),
    ("I am not sure what to tell you about that, it was a hard week.", ["relevant"]),
    ("In tick 2, I decided to vaccinate, as trust is a hard thing.", ["relevant"]),  # "trust" is not "trust in institutions"
    # invented reason: a cause the record does not hold
    ("In tick 2, I decided to vaccinate because my doctor told me the vaccine prevents organ transplant rejection.",
     ["relevant", "attributed"]),  # and it gives none of the record's reasons
    ("In tick 2, I vaccinated because Ann Berg told me about organ transplant rejection and kidney failures.", ["attributed"]),
    # invented content with no "because": more than a quarter of its words are not the record's
    ("In tick 2, I decided to vaccinate, and I paid attention to Ann Berg. Then I listened to a podcast about "
     "a magical kingdom with holograms, teleportation and dragons.", ["attributed"]),
    # truncated sentence
    ("In tick 2, I decided to vaccinate because Ann Berg", ["complete"]),
    ("In tick 2, I decided to vaccinate because Ann B.", ["complete"]),
    # wrong fact
    ("In tick 2, I decided to refuse because Ann Berg had vaccinated.", ["grounded"]),  # Ann's decision is not Maria's
    ("In tick 2, I decided to vaccinate Ann Berg, my friend, who had vaccinated.", ["grounded"]),  # a decision is not done to a person
    ("In tick 2, I decided to vaccinate my own view, and Ann Berg had vaccinated.", ["grounded"]),
])
def test_each_check_on_hand_written_answers(answer, failed):
    rec = _student_record()
    v = check(answer, rec, scaffold(rec, WHY))
    assert [c for c, ok in v.as_dict().items() if not ok] == failed, v.problems


def test_the_checks_name_what_failed():
    rec = _student_record()
    sc = scaffold(rec, WHY)
    assert relevance("I waited.", sc)[0] == "does not state: In tick 2, I decided to vaccinate (70% likely)."
    assert attribution("I vaccinated because of the moon.", sc) == ['cause not in the record: "the moon."'] or \
        attribution("I vaccinated because of the moon.", sc)[0].startswith("cause not in the record")
    assert completeness("") == ["empty"]
    assert completeness("In tick 2, I decided to vaccinate because") == [
        'cut off: "...n tick 2, I decided to vaccinate because"', 'sentence left hanging: "n tick 2, I decided to vaccinate because"']


def test_tidy_drops_a_label_and_a_cut_off_tail():
    assert tidy('Answer: "In tick 2, I decided to vaccinate. Ann had') == "In tick 2, I decided to vaccinate."
    assert tidy("In tick 2,\n I waited.") == "In tick 2, I waited."


class _Scripted:
    """A backend that answers from a script, in order (the narrator's control flow, without an
    LLM); like an LLM, it continues the assistant's opening words where the conversation ends on them."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0

    def generate(self, conversations, schema=None, temperature=0.7, seed=0, max_tokens=256):
        from lsm.data_gen.teacher.backends.base import Generation

        out = []
        for conv in conversations:
            self.calls += 1
            answer = self.answers.pop(0)
            head = conv[-1]["content"] if conv[-1]["role"] == "assistant" else ""
            out.append(Generation(answer[len(head):] if answer.startswith(head) else answer, 10, 10, 0.0))
        return out


def test_a_failing_llm_is_replaced_by_the_plain_scaffold_and_flagged():
    rec = _student_record()
    bad = "You decided as you did."
    nar = narrate(rec, _Scripted([bad] * 6), question=WHY, attempts=3, candidates=2)
    assert nar.fallback and nar.passed and nar.attempts == 3
    assert nar.llm_text == f"In tick 2, I decided to vaccinate {bad}"  # the LLM goes on from the lead fact's opening words
    assert nar.text == scaffold(rec, WHY).plain()
    assert any(p.startswith("relevant: gives none of the record's reasons") for p in nar.problems)
    good = "In tick 2, I decided to vaccinate because Ann Berg, my friend, had vaccinated."
    script = _Scripted([bad, bad, bad, good, "In tick 2, I decided to vaccinate, and so did Ann Berg."])
    nar = narrate(rec, script, question=WHY, attempts=3, candidates=2)
    assert not nar.fallback and nar.passed and nar.attempts == 2 and nar.text == good and nar.problems == []
    assert script.calls == 4 and len(script.answers) == 1  # the second round's first passing candidate is kept


def test_a_narrative_falls_back_tick_by_tick():
    rec = _student_record()
    good = ["In tick 0, I decided to wait, and I paid most attention to my own earlier view.",
            "In tick 1, I decided to wait, and I paid attention to Ann Berg.",
            "In tick 2, I decided to vaccinate after Ann Berg, my friend, had."]
    nar = narrate(rec, _Scripted([good[0], "Bla.", good[2], "Still nothing."]), attempts=2, candidates=1)
    assert nar.fallback and nar.passed
    assert nar.text == " ".join([good[0], "In tick 1, I decided to wait (55% likely).", scaffold(rec, None).facts[3].text, good[2]])


def _narration(passed_checks, fallback, kind="why"):
    return Narration(0, "A", "x", dict(zip(("grounded", "relevant", "attributed", "complete"), passed_checks)), fallback,
                     kind=kind)


def test_the_battery_rates_equal_a_recount_of_its_answers():
    rng = np.random.default_rng(0)
    answers = [_narration(tuple(bool(x) for x in rng.random(4) < 0.8), bool(rng.random() < 0.3),
                          kind=str(rng.choice(QUESTION_KINDS))) for _ in range(40)]
    res = BatteryResult("x.h5", [0], answers, [str(k) for k in rng.choice(QUESTION_KINDS, 40)])
    r = res.rates()
    assert r["grounded"] == sum(a.checks["grounded"] for a in answers) / 40
    assert r["all four"] == sum(all(a.checks.values()) for a in answers) / 40
    assert r["fallback"] == sum(a.fallback for a in answers) / 40
    assert r["LLM passed"] == sum(all(a.checks.values()) and not a.fallback for a in answers) / 40
    assert r["routed"] == sum(a.kind == k for a, k in zip(answers, res.expected_kinds)) / 40
    table = res.table()
    assert f"| all four | {r['all four']:.1%} ({sum(all(a.checks.values()) for a in answers)}/40) |" in table


def test_the_battery_asks_every_kind_of_a_record():
    rec = _student_record()
    qs = questions_for(rec, np.random.default_rng(0))
    assert [k for k, _ in qs] == [k for k, _ in BATTERY_QUESTIONS]
    for kind, q in qs:
        if q is not None:
            assert route(q, rec) == kind, q


CORPUS_TRACE = Path(__file__).resolve().parents[1] / "data_gen/corpus/n20/vaccine_campaign_s0.h5"


def test_a_teacher_traces_record_is_the_file_as_written():
    """`trace_readout` of a committed LLM teacher trace, against the file read with h5py alone:
    each valid tick's decision, distribution, reasoning, salient memory, shown neighbours (and
    their decision the tick before) and events seen; then its plain answers pass every check."""
    with h5py.File(CORPUS_TRACE, "r") as f:
        decision, valid = f["decision"][()], f["valid"][()]
        agent = int(np.nonzero(valid.all(0))[0][0])
        names = [n.decode() if isinstance(n, bytes) else n for n in f["population/names"][()]]
        texts = {int(u): (t.decode() if isinstance(t, bytes) else t) for u, t in zip(f["events/uid"][()], f["events/text"][()])}
        rows = [(t, int(decision[t, agent]), f["reasoning"][t, agent], f["salient_memory"][t, agent],
                 [int(j) for j in f["shown_neighbors"][t, agent] if j >= 0], [int(u) for u in f["exposed_events"][t, agent] if u >= 0],
                 f["decision_dist"][t, agent]) for t in range(decision.shape[0])]
    rec = trace_readout(CORPUS_TRACE, agent)
    assert rec.kind == "teacher_trace" and rec.name == names[agent] and len(rec.ticks) == len(rows)
    with TraceFile(CORPUS_TRACE) as tf:
        labels = list(tf.scenario.actions.labels)
    assert rec.actions == labels
    for r, (t, d, reasoning, memory, shown, seen, dist) in zip(rec.ticks, rows):
        assert (r.tick, r.decision) == (t, labels[d])
        assert r.reasoning == (reasoning.decode() if isinstance(reasoning, bytes) else reasoning)
        assert r.memory_text == (memory.decode() if isinstance(memory, bytes) else memory)
        assert [a["agent"] for a in r.attention] == shown and all(a["weight"] is None for a in r.attention)
        assert [a["their_decision"] for a in r.attention] == [labels[decision[t - 1, j]] if t > 0 and decision[t - 1, j] >= 0
                                                               else None for j in shown]
        assert r.events == [texts[u] for u in seen]
        assert list(r.decision_probs.values()) == pytest.approx([float(p) for p in dist])
    for kind, q in BATTERY_QUESTIONS:
        sc = scaffold(rec, q.format(tick=rec.ticks[-1].tick, decision=rec.ticks[-1].decision, channel="perceived risk") if q else None)
        assert check(sc.plain(), rec, sc).passed, (kind, sc.plain())
