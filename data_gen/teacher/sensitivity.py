"""How far the teacher's decisions move with the persona and with the neighbours' messages.

A teacher that ignores its neighbours makes a student that ignores the graph look
perfect, so sensitivity is a measured figure for every trace file, not an assumption. For a
sample of agents at a tick, the agent's exact prompt is rebuilt from the trace (recorded
events, recorded shown neighbours and their messages of the previous tick, memory replayed from
earlier ticks) and its decision distribution is re-scored under variants:

- `no_messages`: the neighbours' messages removed;
- `opposite_messages`: each shown message replaced by the message of the agent with the most
  opposite stance last tick (same count);
- `reordered_messages`: the same messages in reverse order, a control: the student is blind to
  the order of its neighbours, so what order alone moves is prompt noise no student should copy
  (measured over the sampled agents shown two or more messages; the others' prompt is unchanged);
- `other_persona`: the persona of another, randomly drawn agent.

Reported per variant: mean total-variation distance to the unchanged prompt with a 95 %
bootstrap interval over the sampled agents, each agent's own TV, and the mean change of each
action's probability. Scoring uses the decision continuation without the
agent's reasoning (which already reflects the unchanged prompt).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lsm.config import from_dict
from lsm.data_gen.teacher import prompts as ag
from lsm.data_gen.teacher.config import TeacherConfig, make_backend
from lsm.society import seeds
from lsm.society.loop.neighbors import EdgeTyper
from lsm.society.stats import bootstrap, paired_tv
from lsm.society.store import TraceFile

VARIANTS = ("unchanged", "no_messages", "opposite_messages", "reordered_messages", "other_persona")


def _memory_at(tf: TraceFile, sc, i: int, tick: int, capacity: int) -> ag.Memory:
    """Replay agent i's memory writes of ticks < tick (as the teacher did)."""
    m = ag.Memory()
    labels = sc.actions.labels
    for t in range(tick):
        if not tf.f["valid"][t, i]:
            m.record_tick(sc, t, None)
            continue
        d = f"{tf.f['decision_value'][t, i]:g}" if sc.actions.type == "numeric" else labels[int(tf.f["decision"][t, i])]
        mem = tf.f["salient_memory"][t, i]
        mem = mem.decode() if isinstance(mem, bytes) else mem
        m.record_tick(sc, t, d, float(tf.f["stance"][t, i]), mem, float(tf.f["salience"][t, i]), capacity)
    return m


@dataclass
class RecordedPrompt:
    """What agent i's user prompt at a tick was built from, read back from the trace."""
    persona: str
    memory: ag.Memory
    events: list[str]
    messages: list[tuple[str, str, str]]
    """(neighbour name, relation word, message text) of the shown neighbours, in order."""
    shown: list[int]


class TracePrompts:
    """Rebuilds the teacher's prompts from a trace alone (recorded events, shown neighbours and
    their messages of the previous tick, memory replayed from earlier ticks); the tests check the
    rebuilt prompt re-scores to the recorded decision distribution."""

    def __init__(self, tf: TraceFile):

        self.tf, self.sc = tf, tf.scenario
        self.cfg = from_dict(TeacherConfig, tf.configs["teacher"], source=f"{tf.path}:config.teacher")
        self.mode = str(tf.f.attrs.get("answer_mode", "texts"))
        self.pop, graph = tf.world()
        self.rel = EdgeTyper(graph)
        self.events = {e["uid"]: e for e in tf.events()}
        self.system = ag.system_prompt(self.sc, self.mode)
        self.expression = tf.array("expression")

    def parts(self, i: int, tick: int) -> RecordedPrompt:
        tf, pop = self.tf, self.pop
        seen = [self.events[int(u)] for u in tf.f["exposed_events"][tick, i] if u >= 0]
        js = [int(j) for j in tf.f["shown_neighbors"][tick, i] if j >= 0]
        msgs = [(pop.names[j], ag.relation_words(self.rel.relation(int(i), j)), self.expression[tick - 1][j]) for j in js]
        return RecordedPrompt(pop.persona[i], _memory_at(tf, self.sc, int(i), tick, self.cfg.memory_capacity),
                              [ag.event_line(e["source"], e["text"]) for e in seen], msgs, js)

    def user(self, i: int, tick: int, parts: RecordedPrompt | None = None) -> str:
        p = parts or self.parts(i, tick)
        return ag.user_prompt(self.sc, tick, self.pop.names[i], p.persona, p.memory, self.cfg.memories, p.events, p.messages)


def measure(trace: str, tick: int | None = None, agents: int = 16, seed: int = 0, backend=None) -> dict[str, Any]:

    with TraceFile(trace) as tf:
        rebuilt = TracePrompts(tf)
        sc, pop, cfg = rebuilt.sc, rebuilt.pop, rebuilt.cfg
        tick = tf.n_ticks - 1 if tick is None else tick
        if not 1 <= tick < tf.n_ticks:
            raise ValueError(f"tick must be in 1..{tf.n_ticks - 1} (tick 0 has no neighbour messages)")
        valid = tf.array("valid")
        shown = tf.array("shown_neighbors")[tick]
        prev_msg = rebuilt.expression[tick - 1]
        prev_stance = tf.array("stance")[tick - 1]
        prev_valid = valid[tick - 1]
        rng = seeds.rng(seed, seeds.Stream.SENSITIVITY_SAMPLE, tick)
        candidates = np.nonzero(valid[tick] & ((shown >= 0).sum(1) > 0))[0]
        sample = rng.choice(candidates, size=min(agents, len(candidates)), replace=False) if len(candidates) else candidates
        backend = backend or make_backend(cfg)
        convs, opts = [], []
        dec_opts = ag.decision_options(sc)
        prefix = ('{"decision": ' if sc.actions.type == "numeric" else '{"decision": "')
        shown_count = []
        for i in sample:
            parts = rebuilt.parts(int(i), tick)
            shown_count.append(len(parts.messages))
            js = parts.shown
            stance_i = float(np.nanmean([prev_stance[j] for j in js])) if js else 0.0
            stance_i = stance_i if np.isfinite(stance_i) else 0.0
            pool = np.nonzero(prev_valid)[0]
            opposite = pool[np.argsort(prev_stance[pool] * np.sign(stance_i or 1.0))][: len(js)]  # most opposite first
            opp_msgs = [(pop.names[j], ag.relation_words(rebuilt.rel.relation(int(i), int(j))) if j in js else "an acquaintance",
                         prev_msg[j]) for j in opposite]
            other = int(rng.choice([k for k in range(pop.n) if k != i]))
            variants = {
                "unchanged": parts, "no_messages": replace(parts, messages=[]),
                "opposite_messages": replace(parts, messages=opp_msgs),
                "reordered_messages": replace(parts, messages=parts.messages[::-1]),
                "other_persona": replace(parts, persona=pop.persona[other]),
            }
            for v in VARIANTS:
                convs.append(ag.conversation(rebuilt.system, rebuilt.user(int(i), tick, variants[v])) +
                             [{"role": "assistant", "content": prefix}])
                opts.append(dec_opts)
    probs = backend.score_options(convs, opts) if convs else []
    A = sc.actions.n
    if sc.actions.type == "numeric":
        bins = sc.actions.bin_of(np.arange(int(sc.actions.min), int(sc.actions.max) + 1))
        probs = [np.bincount(bins, weights=p, minlength=A) for p in probs]
    P = np.array(probs).reshape(len(sample), len(VARIANTS), A) if len(sample) else np.zeros((0, len(VARIANTS), A))
    out: dict[str, Any] = {"trace": str(trace), "tick": tick, "agents": int(len(sample)), "agent_ids": [int(i) for i in sample],
                           "labels": sc.actions.labels, "variants": {}}
    for k, v in enumerate(VARIANTS[1:], start=1):
        rows = np.arange(len(sample)) if v != "reordered_messages" else np.nonzero(np.array(shown_count) >= 2)[0]
        tv = paired_tv(P[rows, k], P[rows, 0])  # (agents,)
        mean, low, high = bootstrap(tv, np.arange(len(tv))) if len(tv) else (None, None, None)  # JSON null, not NaN
        out["variants"][v] = {"mean_tv": mean, "low": low, "high": high, "agents": int(len(rows)),
                              "agent_ids": [int(sample[r]) for r in rows], "tv": np.round(tv, 5).tolist(),
                              "mean_shift": dict(zip(sc.actions.labels, np.round((P[rows, k] - P[rows, 0]).mean(0)
                                                                                  if len(rows) else np.zeros(A), 4).tolist()))}
    out["unchanged_mean"] = dict(zip(sc.actions.labels, np.round(P[:, 0].mean(0), 4).tolist())) if len(sample) else {}
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = [f"Sensitivity of {r['trace']} at tick {r['tick']} ({r['agents']} agents; decision distribution re-scored; "
             "95 % bootstrap interval over agents):",
             "  unchanged prompt, mean: " + "  ".join(f"{k} {v:.3f}" for k, v in r["unchanged_mean"].items())]
    for v, s in r["variants"].items():
        top = sorted(s["mean_shift"].items(), key=lambda kv: -abs(kv[1]))[:3]
        n = f" ({s['agents']} agents)" if s.get("agents", r["agents"]) != r["agents"] else ""
        if s["mean_tv"] is None:
            lines.append(f"  {v:<18} no sampled agent{n}")
            continue
        lines.append(f"  {v:<18} mean TV {s['mean_tv']:.3f} [{s['low']:.3f}, {s['high']:.3f}]{n}   largest mean shifts: " + ", ".join(f"{k} {d:+.3f}" for k, d in top))
    return "\n".join(lines)
