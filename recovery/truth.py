"""The planted process's exact answer under a change, re-evaluated from its own trace.

A planted trace records everything the process used: the shown table, the events each agent saw,
last tick's stances and draws, and (from the recorded seeds) the process's noise. So the decision
distribution of any agent-tick can be recomputed exactly -- and recomputed under an edit of the
shown table (`society.interventions.tables`), with events removed or their features changed
(`EventChanges`), or without the last draw, with the same noise: the truth each student ablation
is compared with.

Everything in the opinion but the per-tick noise ξ is known from the trace (identity, influence,
events, the agent effect r_i), so the process's own irreducible uncertainty is exact too:
`expected` integrates ξ ~ N(0, 1) out by Gauss–Hermite quadrature (the oracle: the best any
predictor that does not see ξ can do).

Notation: T ticks | N agents | K shown | E events seen | A actions | Q quadrature nodes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from lsm.config import from_dict
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.policy import PlantedSociety
from lsm.society.interventions import TableEdit
from lsm.society.store import TraceFile

EventChanges = dict[int, "dict | None"]
"""uid -> the event's new row (its `events/` columns: the numeric features by name, `source_type`,
`framing`), or None: the event is removed (nobody sees it). Events not listed are unchanged."""

QUADRATURE_NODES = 40
"""Gauss–Hermite nodes over ξ (exact for the smooth softmax well below any figure's precision)."""


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(..., A) two distributions per row -> (...) KL(p ‖ q) in nats (q floored at 1e-8)."""
    p, q = np.asarray(p, np.float64), np.clip(np.asarray(q, np.float64), 1e-8, None)
    return (p * (np.log(np.clip(p, 1e-8, None)) - np.log(q))).sum(-1)


@dataclass
class PlantedTrace:
    """A planted trace, ready to be re-evaluated tick by tick."""

    society: PlantedSociety
    shown: np.ndarray  # (T, N, K)
    types: np.ndarray  # (T, N, K) tie type of each shown slot
    events: np.ndarray  # (T, N) the events term of every agent-tick
    stance: np.ndarray  # (T, N)
    decision: np.ndarray  # (T, N)
    decision_dist: np.ndarray  # (T, N, A) as recorded
    exposed: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.int64))  # (T, N, E) uids seen, -1 padded
    event_rows: list[dict] = field(default_factory=list)
    """The trace's `events/` rows, in file order (uid, numeric features by name, source_type, framing, ...)."""

    @classmethod
    def read(cls, path: str | Path) -> "PlantedTrace":
        with TraceFile(path) as tf:
            configs = tf.configs
            if tf.f.attrs.get("answer_mode") != "planted":
                raise ValueError(f"{path} is not a planted trace (answer_mode {tf.f.attrs.get('answer_mode')!r})")
            raw = configs["teacher"]
            cfg = from_dict(PlantedConfig, json.loads(raw) if isinstance(raw, str) else raw, source=path, kind="planted society config")
            pop, graph = tf.world()
            seeds = tf.seeds
            society = PlantedSociety(cfg, tf.scenario, pop, graph, int(seeds["teacher"]), int(seeds["llm"]))
            rows = tf.events()
            exposed = tf.array("exposed_events").astype(np.int64)  # (T, N, E) uids, -1 padded
            shown = tf.array("shown_neighbors").astype(np.int64)
            types = np.stack([society.typer.table(shown[t]) for t in range(len(shown))])
            tr = cls(society, shown, types, np.zeros(exposed.shape[:2]), tf.array("stance").astype(np.float64),
                     tf.array("decision").astype(np.int64), tf.array("decision_dist").astype(np.float64), exposed, rows)
        tr.events = np.stack([tr.events_term(t) for t in range(tr.ticks)]) if tr.ticks else tr.events
        return tr

    @property
    def ticks(self) -> int:
        return len(self.shown)

    def last(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Last tick's stances (N,) and drawn decisions (N,) (zeros and -1 at tick 0)."""
        n = self.shown.shape[1]
        if t == 0:
            return np.zeros(n), np.full(n, -1, np.int64)
        return self.stance[t - 1], self.decision[t - 1]

    # -- events ----------------------------------------------------------------------------
    def push(self, row: dict) -> float:
        """One event's push on the opinion of an agent who sees it (the process's rule), from its row."""
        return self.society.push(row, str(row["source_type"]), str(row["framing"]))

    def events_term(self, t: int, changes: EventChanges | None = None) -> np.ndarray:
        """(N,) the events term at tick t: Σ over the events each agent saw of their push, with
        `changes` applied (a removed event pushes nothing)."""
        changes = changes or {}
        uids = np.array([int(r["uid"]) for r in self.event_rows], np.int64)  # (Ev,)
        push = np.array([0.0 if int(r["uid"]) in changes and changes[int(r["uid"])] is None
                         else self.push(changes.get(int(r["uid"])) or r) for r in self.event_rows])  # (Ev,)
        ex = self.exposed[t]  # (N, E)
        if not len(uids):
            return np.zeros(ex.shape[0])
        order = np.argsort(uids)
        pos = order[np.clip(np.searchsorted(uids[order], ex), 0, len(uids) - 1)]  # (N, E) row of each uid seen
        return np.where(ex >= 0, push[pos], 0.0).sum(-1)

    def tick_uids(self, t: int) -> np.ndarray:
        """(Ev_t,) uids of the events seen at tick t, in the order of a replay's event rows
        (`train.data.load_episode`: the rows of the trace's `events/` table seen that tick, ascending)."""
        row_of = {int(r["uid"]): k for k, r in enumerate(self.event_rows)}
        seen = self.exposed[t][self.exposed[t] >= 0]
        used = np.unique(np.array([row_of[int(u)] for u in seen], np.int64))
        return np.array([int(self.event_rows[k]["uid"]) for k in used], np.int64)

    # -- the process -----------------------------------------------------------------------
    def opinion(self, t: int, edit: TableEdit | None = None, events: EventChanges | None = None) -> np.ndarray:
        """(N,) the opinion's known part at tick t (every term but the noise σ·ξ): identity,
        influence from the (edited) shown table (slot types kept), events (changed), agent effect."""
        soc = self.society
        stance, _ = self.last(t)
        shown = self.shown[t] if edit is None else edit(t, self.shown[t], self.types[t], stance)
        ev = self.events[t] if events is None else self.events_term(t, events)
        return soc.identity + soc.influence(shown, stance, self.types[t]) + ev + soc.agent_effect

    def probabilities(self, t: int, edit: TableEdit | None = None, forget_draw: bool = False,
                      events: EventChanges | None = None) -> np.ndarray:
        """(N, A) the process's decision distribution at tick t, with the shown table edited
        (slot types kept), events changed and/or without the last draw, under the tick's own noise."""
        soc = self.society
        _, draw = self.last(t)
        opinion = self.opinion(t, edit, events) + soc.cfg.noise_sd * soc.noise(t).opinion
        return soc.probabilities(soc.logits(opinion, np.full_like(draw, -1) if forget_draw else draw))

    def expected(self, t: int, nodes: int = QUADRATURE_NODES, edit: TableEdit | None = None,
                 events: EventChanges | None = None, agent_blind: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The oracle at tick t: ((N, A) p̄ = E_ξ softmax(logits(o + σξ)), (N,) E_ξ KL(p_ξ ‖ p̄)),
        ξ ~ N(0, 1) integrated out by Gauss–Hermite quadrature; o: the opinion's known part
        (under `edit` / `events`, as `probabilities`). The recorded distribution is p_ξ at the
        realised ξ, so E_ξ KL(recorded ‖ q) = oracle KL + KL(p̄ ‖ q) for any q that does not see
        ξ: the oracle KL is the floor. `agent_blind`: the agent's random effect r_i is integrated
        out too (r_i + σξ ~ N(0, σ_agent² + σ²)): the best prediction of an agent met for the
        first time, whose history has told nothing yet."""
        soc = self.society
        _, draw = self.last(t)
        x, w = hermegauss(nodes)  # (Q,), weights of exp(-x²/2)
        w = w / w.sum()
        base = self.opinion(t, edit, events)  # (N,)
        sd = soc.cfg.noise_sd
        if agent_blind:
            base, sd = base - soc.agent_effect, float(np.hypot(soc.cfg.noise_sd, soc.cfg.agent_sd))
        p = np.stack([soc.probabilities(soc.logits(base + sd * xq, draw)) for xq in x])  # (Q, N, A)
        mean = np.einsum("q,qna->na", w, p)  # (N, A)
        return mean, np.einsum("q,qn->n", w, _kl(p, mean[None]))
