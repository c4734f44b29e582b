"""A battery of interview questions over agents of a rollout or teacher trace, and the rate at
which the answers pass each check.

Agents are drawn across final decisions and groups (`battery_agents`); each is asked one
question of every kind (`BATTERY_QUESTIONS`, filled in from its record) and narrated once. The
table counts, over all answers: grounded, relevant, attributed, complete, all four, and the
answers the LLM failed so that the plain scaffold stood in (`fallback`); with the median and
90th-percentile seconds per answer and every failure listed. The rates are recounted from the
answers themselves (`BatteryResult.rates`), so the printed table and the printed answers agree.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from lsm.narrate.checks import CHECKS
from lsm.narrate.narrator import Narration, narrate
from lsm.narrate.scaffold import readable
from lsm.society.store import TraceFile

BATTERY_QUESTIONS = (
    ("why", "Why did you decide to {decision} in tick {tick}?"),
    ("change", "What changed your mind?"),
    ("influence", "Who influenced you most in tick {tick}?"),
    ("heard", "What did you hear or see in tick {tick}?"),
    ("feel", "How do you feel about {channel} now?"),
    ("would_change", "What would make you change your decision?"),
    ("unknown", "What is your favourite food?"),
    ("story", None),
)
"""(the kind the question should be routed to, its template); story: the narrative, no question."""


@dataclass
class BatteryResult:
    source: str
    agents: list[int]
    answers: list[Narration] = field(default_factory=list)
    expected_kinds: list[str] = field(default_factory=list)
    """The kind each answer's question was written as (`BATTERY_QUESTIONS`)."""

    def rates(self) -> dict[str, float]:
        """Share of answers passing each check, all four, falling back; the routing's accuracy."""
        n = max(1, len(self.answers))
        out = {c: sum(a.checks[c] for a in self.answers) / n for c in CHECKS}
        out["all four"] = sum(a.passed for a in self.answers) / n
        out["LLM passed"] = sum(a.passed and not a.fallback for a in self.answers) / n
        out["fallback"] = sum(a.fallback for a in self.answers) / n
        out["routed"] = sum(a.kind == k for a, k in zip(self.answers, self.expected_kinds)) / n
        return out

    def seconds(self) -> tuple[float, float]:
        s = [a.seconds for a in self.answers] or [0.0]
        return float(np.median(s)), float(np.percentile(s, 90))

    def table(self) -> str:
        r = self.rates()
        med, p90 = self.seconds()
        lines = [f"Battery: {len(self.answers)} answers of {len(self.agents)} agents of {self.source}", "",
                 "| check | passed |", "|---|---|"]
        lines += [f"| {k} | {v:.1%} ({round(v * len(self.answers))}/{len(self.answers)}) |" for k, v in r.items()]
        lines += ["", f"Seconds per answer: median {med:.1f}, 90th percentile {p90:.1f}."]
        return "\n".join(lines)

    def failures(self) -> str:
        """Every answer the LLM did not get through all four checks, with why."""
        rows = [a for a in self.answers if a.fallback or not a.passed]
        if not rows:
            return "No failures."
        out = [f"Failures ({len(rows)}):"]
        for a in rows:
            asked = a.question or "(narrative)"
            llm = a.llm_text or a.text
            out.append(f"- agent {a.agent}, {a.kind}: {asked}\n  LLM: {llm!r}\n  why: {'; '.join(a.problems[:4])}")
        return "\n".join(out)

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "agents": self.agents, "rates": self.rates(),
                           "seconds_median_p90": self.seconds(),
                           "answers": [{"agent": a.agent, "kind": a.kind, "expected": k, "question": a.question, "text": a.text,
                                        "checks": a.checks, "fallback": a.fallback, "llm_text": a.llm_text,
                                        "problems": a.problems, "attempts": a.attempts, "seconds": round(a.seconds, 3)}
                                       for a, k in zip(self.answers, self.expected_kinds)]}, indent=1)


def battery_agents(path, n: int, seed: int = 0) -> list[int]:
    """`n` agents (all, if fewer) drawn across strata of (final decision, first categorical
    attribute), one stratum after another in turn, at random within each (seeded)."""
    with TraceFile(path) as tf:
        final = tf.array("decision")[-1].astype(np.int64)  # (N,)
        cats = tf.f["population/categorical"]
        group = np.asarray(cats[sorted(cats)[0]][()], dtype=np.int64) if len(cats) else np.zeros_like(final)
    rng = np.random.default_rng(seed)
    strata: dict[tuple[int, int], list[int]] = {}
    for i in rng.permutation(len(final)):
        strata.setdefault((int(final[i]), int(group[i])), []).append(int(i))
    order = [strata[k] for k in sorted(strata)]
    chosen: list[int] = []
    while len(chosen) < min(n, len(final)):
        for s in order:
            if s and len(chosen) < n:
                chosen.append(s.pop())
    return sorted(chosen)


def questions_for(record, rng: np.random.Generator) -> list[tuple[str, str | None]]:
    """(expected kind, question) of every `BATTERY_QUESTIONS` entry, filled in from the record: a
    tick drawn from its ticks, the decision taken then, a channel drawn from its channels."""
    out: list[tuple[str, str | None]] = []
    for kind, template in BATTERY_QUESTIONS:
        if template is None:
            out.append((kind, None))
            continue
        t = record.ticks[int(rng.integers(len(record.ticks)))]
        channel = readable(list(t.channels)[int(rng.integers(len(t.channels)))]) if t.channels else "it"
        out.append((kind, template.format(tick=t.tick, decision=t.decision.replace("_", " "), channel=channel)))
    return out


def run_battery(path, records, backend, attempts: int = 3, seed: int = 0, narrator=narrate, echo=None) -> BatteryResult:
    """Every battery question put to each agent's record (an iterable of `AgentReadout`)."""
    result = BatteryResult(str(path), [])
    rng = np.random.default_rng(seed)
    for record in records:
        result.agents.append(record.agent)
        for kind, q in questions_for(record, rng):
            nar = narrator(record, backend, question=q, attempts=attempts, seed=seed)
            result.answers.append(nar)
            result.expected_kinds.append(kind)
            if echo is not None:
                echo(f"agent {record.agent} [{nar.kind}{' fallback' if nar.fallback else ''}"
                     f"{'' if nar.passed else ' FAILED'}] {q or '(narrative)'} -> {nar.text} ({nar.seconds:.1f} s)")
    return result
