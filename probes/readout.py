"""Readouts for one agent of a rollout or a teacher trace: what it saw, whom it heard or
attended to, what it remembered.

A student rollout is replayed from its own file (same checkpoint, world, scenario, seed:
rollouts are deterministic) with attention and memory captured; the replay is checked against
the file's decisions before anything is reported (`agent_readout`). A teacher trace is read as
written: its agents' recorded reasoning and salient memory, with no attention (`trace_readout`).

Legend: N agents | T ticks | K shown neighbours | E events per agent-tick | H heads | S memory slots.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

from lsm.infer.rollout import rollout_from_file
from lsm.society.store import TraceFile
from lsm.society.world.graph import EDGE_TYPES

SELF = "self"


class FileTies:
    """Edge types by (sender, receiver) of one file's graph: edges sorted by receiver, CSR offsets."""

    def __init__(self, path: Path):
        with h5py.File(path, "r") as f:
            ei, et = f["graph/edge_index"][()], f["graph/edge_type"][()]  # (2, E), (E,)
            n = int(f["population"].attrs["n"])
        order = np.argsort(ei[1], kind="stable")
        self.src, self.typ = ei[0, order], et[order]
        self.start = np.searchsorted(ei[1, order], np.arange(n + 1))  # (N + 1,)

    def tie(self, sender: int, receiver: int) -> str:
        """The closest tie from `sender` to `receiver` (the lowest edge-type code), or "none"."""
        s = slice(self.start[receiver], self.start[receiver + 1])
        hit = np.nonzero(self.src[s] == sender)[0]
        return EDGE_TYPES[int(self.typ[s][hit].min())] if len(hit) else "none"

    def degree_by_type(self, receiver: int) -> dict[str, int]:
        s = slice(self.start[receiver], self.start[receiver + 1])
        counts = np.bincount(self.typ[s], minlength=len(EDGE_TYPES))
        return {t: int(c) for t, c in zip(EDGE_TYPES, counts)}


_ties_lock = threading.Lock()


@lru_cache(maxsize=4)
def _ties_cached(path: str, key: float) -> FileTies:
    return FileTies(Path(path))


def file_ties(path: Path) -> FileTies:
    """The file's `FileTies`, read once per file version (a 10^6-agent file holds 2 x 10^7 edges)."""
    with _ties_lock:
        return _ties_cached(str(path), path.stat().st_mtime)


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
    decision and stance last tick}; sorted by weight. Teacher traces: the shown neighbours in the
    order shown, `weight` None (a teacher has no attention to read)."""
    memory_read: list[float]
    """Read weights over the episodic slots (before this tick's write)."""
    write_slot: int
    salience: float
    """Gate of this tick's write (0: nothing written)."""
    stance: float
    event_sources: list[tuple[str, float]] = field(default_factory=list)
    """(source, credibility 0..1) of each of `events`, in the same order."""
    reasoning: str = ""
    """Teacher traces: the agent's own recorded reasoning (empty for student rollouts)."""
    memory_text: str = ""
    """Teacher traces: the salient memory the agent wrote (empty for student rollouts)."""


@dataclass
class AgentReadout:
    agent: int
    name: str
    identity: dict
    actions: list[str]
    ticks: list[TickReadout] = field(default_factory=list)
    kind: str = "student_rollout"
    """student_rollout (readouts of the student's attention and memory) or teacher_trace."""

    def markdown(self, top: int = 3) -> str:
        lines = [f"## Agent {self.agent}: {self.name}", "",
                 "Identity: " + ", ".join(f"{k} {v}" for k, v in self.identity.items()), "",
                 "| tick | decision (p) | top attention (tie, weight) | events | memory write (salience) |", "|---|---|---|---|---|"]
        for t in self.ticks:
            att = "; ".join(f"{a['name']} ({a['tie']}" + (f", {a['weight']:.2f})" if a["weight"] is not None else ")")
                            for a in t.attention[:top]) or "–"
            ev = " / ".join(e[:60] for e in t.events) or "–"
            lines.append(f"| {t.tick} | {t.decision} ({t.decision_probs[t.decision]:.2f}) | {att} | {ev} | slot {t.write_slot} ({t.salience:.2f}) |")
        return "\n".join(lines)


def agent_readout(student, rollout_path: str | Path, agent: int, ticks: range | None = None) -> AgentReadout:
    """Agent `agent`'s readout of a student rollout, from one replay (`agent_readouts`)."""
    return agent_readouts(student, rollout_path, [agent], ticks)[0]


def agent_readouts(student, rollout_path: str | Path, agents: list[int], ticks: range | None = None) -> list[AgentReadout]:
    """The readouts of several agents of a student rollout, all from one replay of it."""
    r = rollout_from_file(student, rollout_path)
    bad = [a for a in agents if not 0 <= a < r.n]
    if bad:
        raise ValueError(f"agent {bad[0]} is not in {rollout_path} (0..{r.n - 1})")
    with TraceFile(rollout_path) as tf:
        recorded = tf.array("decision")
        events = {e["uid"]: e for e in tf.events()}
    pop, typer, sc = r.world.population, r.typer, r.sc
    labels = sc.actions.labels
    outs = [AgentReadout(agent, pop.names[agent], pop.record(agent), labels) for agent in agents]
    prev = None
    for res in r.ticks(capture=True):
        t = res.tick
        if not np.array_equal(res.data["decision"], recorded[t]):
            raise RuntimeError(f"replaying {rollout_path} did not reproduce tick {t}: was it written by another checkpoint?")
        if ticks is None or t in ticks:
            for agent, out in zip(agents, outs):
                out.ticks.append(_student_tick(res, prev, agent, labels, sc.channel_names, events, pop, typer))
        prev = res.data
    return outs


def _student_tick(res, prev: dict | None, agent: int, labels, channels, events: dict, pop, typer) -> TickReadout:
    """One agent's `TickReadout` of a captured replay tick (`prev`: the tick before's data)."""
    t, d = res.tick, res.data
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
    seen = [events[int(u)] for u in d["exposed_events"][agent] if u >= 0 and int(u) in events]
    probs = {a: float(p) for a, p in zip(labels, d["decision_dist"][agent])}
    return TickReadout(t, labels[int(d["decision"][agent])], probs, {c: float(v) for c, v in zip(channels, d["channels"][agent])},
                       [e["text"] for e in seen], rows, [float(x) for x in res.capture["memory_read"][agent]],
                       int(res.capture["write_slot"][agent]), float(d["salience"][agent]), float(d["stance"][agent]),
                       [(e["source"], float(e["credibility"])) for e in seen])


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def trace_readout(path: str | Path, agent: int, ticks: range | None = None) -> AgentReadout:
    """Agent `agent`'s record in a teacher trace, as written: per tick its decision and the
    distribution the teacher scored, channels, the events it saw, the neighbours shown (tie and
    their decision last tick, in the order shown), its recorded reasoning and salient memory.
    Ticks where its answer was invalid are left out (the file holds no decision for them)."""
    path = Path(path)
    with TraceFile(path) as tf:
        if not 0 <= agent < tf.n_agents:
            raise ValueError(f"agent {agent} is not in {path} (0..{tf.n_agents - 1})")
        sc, f = tf.scenario, tf.f
        labels, channels = list(sc.actions.labels), list(sc.channel_names)
        events = {e["uid"]: e for e in tf.events()}
        names = f["population/names"]
        decision = f["decision"][:, agent]  # (T,)
        pop_name = _text(names[agent])
        out = AgentReadout(agent, pop_name, identity_of(f, agent), labels, kind=tf.kind)
        tw = file_ties(path)
        has = set(tf.fields)
        for t in range(tf.n_ticks):
            if (ticks is not None and t not in ticks) or not 0 <= int(decision[t]) < len(labels):
                continue
            dist = f["decision_dist"][t, agent] if "decision_dist" in has else np.eye(len(labels))[int(decision[t])]
            shown = [int(j) for j in f["shown_neighbors"][t, agent] if j >= 0] if "shown_neighbors" in has else []
            rows = []
            for j in shown:
                theirs = int(f["decision"][t - 1, j]) if t > 0 else -1
                rows.append({"agent": j, "name": _text(names[j]), "tie": tw.tie(j, agent), "weight": None,
                             "their_decision": labels[theirs] if 0 <= theirs < len(labels) else None,
                             "their_stance": float(f["stance"][t - 1, j]) if t > 0 else None})
            seen = [events[int(u)] for u in f["exposed_events"][t, agent] if u >= 0 and int(u) in events]
            out.ticks.append(TickReadout(
                t, labels[int(decision[t])], {a: float(p) for a, p in zip(labels, dist)},
                {c: float(v) for c, v in zip(channels, f["channels"][t, agent])}, [e["text"] for e in seen], rows, [], -1,
                float(f["salience"][t, agent]), float(f["stance"][t, agent]),
                [(e["source"], float(e["credibility"])) for e in seen],
                _text(f["reasoning"][t, agent]) if "reasoning" in has else "",
                _text(f["salient_memory"][t, agent]) if "salient_memory" in has else ""))
    return out


def identity_of(f: h5py.File, i: int) -> dict:
    """Agent i's name and identity attributes, read from the file's population group alone."""
    pop = f["population"]
    vocab = json.loads(pop.attrs["identity_vocab"])
    out: dict = {"name": _text(pop["names"][i])}
    for e in vocab["categorical"]:
        a = e["attribute"]
        out[a] = json.loads(pop["categorical"][a].attrs["categories"])[int(pop["categorical"][a][i])]
    for e in vocab["numeric"]:
        a = e["attribute"]
        out[a] = float(pop["numeric"][a][i])
    return out


def readout(path: str | Path, agent: int, ticks: range | None = None, student=None) -> AgentReadout:
    """The record of `agent` in a student rollout (replayed with `student`) or a teacher trace."""
    return readouts(path, [agent], ticks, student)[0]


def readouts(path: str | Path, agents: list[int], ticks: range | None = None, student=None) -> list[AgentReadout]:
    """The records of `agents` in a student rollout (one replay with `student`) or a teacher trace."""
    with TraceFile(path) as tf:
        kind = tf.kind
    if kind == "teacher_trace":
        return [trace_readout(path, a, ticks) for a in agents]
    if student is None:
        raise ValueError(f"{path} is a student rollout: its readout replays it with the student checkpoint")
    return agent_readouts(student, path, agents, ticks)
