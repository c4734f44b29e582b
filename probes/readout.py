"""Readouts for one agent of a rollout: what it saw, whom it attended to, what it remembered.

The rollout is replayed from its own file (same checkpoint, world, scenario, seed: rollouts are
deterministic) with attention and memory captured; the replay is checked against the file's
decisions before anything is reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsm.infer.rollout import rollout_from_file
from lsm.society.store import TraceFile
from lsm.society.world.graph import EDGE_TYPES

SELF = "self"


@dataclass
class TickReadout:
    tick: int
    decision: str
    decision_probs: dict[str, float]
    channels: dict[str, float]
    events: list[str]
    """Texts of the events the agent was exposed to."""
    attention: list[dict]
    """Shown neighbours and self, last layer, mean over heads: {agent, name, tie, weight, their
    decision and stance last tick}; sorted by weight."""
    memory_read: list[float]
    """Read weights over the episodic slots (before this tick's write)."""
    write_slot: int
    salience: float
    """Gate of this tick's write (0: nothing written)."""
    stance: float


@dataclass
class AgentReadout:
    agent: int
    name: str
    identity: dict
    actions: list[str]
    ticks: list[TickReadout] = field(default_factory=list)

    def markdown(self, top: int = 3) -> str:
        lines = [f"## Agent {self.agent}: {self.name}", "",
                 "Identity: " + ", ".join(f"{k} {v}" for k, v in self.identity.items()), "",
                 "| tick | decision (p) | top attention (tie, weight) | events | memory write (salience) |", "|---|---|---|---|---|"]
        for t in self.ticks:
            att = "; ".join(f"{a['name']} ({a['tie']}, {a['weight']:.2f})" for a in t.attention[:top]) or "–"
            ev = " / ".join(e[:60] for e in t.events) or "–"
            lines.append(f"| {t.tick} | {t.decision} ({t.decision_probs[t.decision]:.2f}) | {att} | {ev} | slot {t.write_slot} ({t.salience:.2f}) |")
        return "\n".join(lines)


def agent_readout(student, rollout_path: str | Path, agent: int, ticks: range | None = None) -> AgentReadout:

    r = rollout_from_file(student, rollout_path)
    if not 0 <= agent < r.n:
        raise ValueError(f"agent {agent} is not in {rollout_path} (0..{r.n - 1})")
    with TraceFile(rollout_path) as tf:
        recorded = tf.array("decision")
        events = {e["uid"]: e for e in tf.events()}
    pop, typer, sc = r.world.population, r.typer, r.sc
    labels = sc.actions.labels
    out = AgentReadout(agent, pop.names[agent], pop.record(agent), labels)
    prev = None
    for res in r.ticks(capture=True):
        t = res.tick
        if not np.array_equal(res.data["decision"], recorded[t]):
            raise RuntimeError(f"replaying {rollout_path} did not reproduce tick {t}: was it written by another checkpoint?")
        if ticks is None or t in ticks:
            d = res.data
            att_last = res.capture["attention"][-1][agent] if res.capture["attention"] else None  # (K + 1, H)
            rows = []
            if att_last is not None:
                cols = list(d["shown_neighbors"][agent]) + [agent]
                w = att_last.mean(-1)
                for c, j in enumerate(cols):
                    if j < 0:
                        continue
                    is_self = c == len(cols) - 1
                    tie = SELF if is_self else EDGE_TYPES[int(typer(np.array([j]), np.array([agent]))[0])]
                    rows.append({"agent": int(j), "name": pop.names[int(j)], "tie": tie, "weight": float(w[c]),
                                 "their_decision": labels[int(prev["decision"][j])] if prev is not None else None,
                                 "their_stance": float(prev["stance"][j]) if prev is not None else None})
            rows.sort(key=lambda a: -a["weight"])
            ev = [events[int(u)]["text"] for u in d["exposed_events"][agent] if u >= 0 and int(u) in events]
            probs = {a: float(p) for a, p in zip(labels, d["decision_dist"][agent])}
            out.ticks.append(TickReadout(t, labels[int(d["decision"][agent])], probs,
                                         {c: float(v) for c, v in zip(sc.channel_names, d["channels"][agent])}, ev, rows,
                                         [float(x) for x in res.capture["memory_read"][agent]],
                                         int(res.capture["write_slot"][agent]), float(d["salience"][agent]),
                                         float(d["stance"][agent])))
        prev = res.data
    return out
