"""The planted process's exact answer under a change, re-evaluated from its own trace.

A planted trace records everything the process used: the shown table, the events each agent saw,
last tick's stances and draws, and (from the recorded seeds) the process's noise. So the decision
distribution of any agent-tick can be recomputed exactly -- and recomputed under an edit of the
shown table (`train.ablations`) or without the last draw, with the same noise: the truth each
student ablation is compared with.

Notation: T ticks | N agents | K shown | A actions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsm.config import from_dict
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.policy import PlantedSociety
from lsm.society.interventions import TableEdit
from lsm.society.store import TraceFile


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
            push = {int(r["uid"]): society.push(r, str(r["source_type"]), str(r["framing"]))
                    for r in tf.events()}
            exposed = tf.array("exposed_events")  # (T, N, E) uids, -1 padded
            lut_keys = np.array(sorted(push), dtype=np.int64)
            lut = np.array([push[k] for k in lut_keys]) if len(lut_keys) else np.zeros(0)
            pos = np.clip(np.searchsorted(lut_keys, exposed), 0, max(len(lut_keys) - 1, 0))
            events = np.where(exposed >= 0, lut[pos] if len(lut) else 0.0, 0.0).sum(-1)  # (T, N)
            shown = tf.array("shown_neighbors").astype(np.int64)
            types = np.stack([society.typer.table(shown[t]) for t in range(len(shown))])
            return cls(society, shown, types, events, tf.array("stance").astype(np.float64),
                       tf.array("decision").astype(np.int64), tf.array("decision_dist").astype(np.float64))

    @property
    def ticks(self) -> int:
        return len(self.shown)

    def last(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Last tick's stances (N,) and drawn decisions (N,) (zeros and -1 at tick 0)."""
        n = self.shown.shape[1]
        if t == 0:
            return np.zeros(n), np.full(n, -1, np.int64)
        return self.stance[t - 1], self.decision[t - 1]

    def probabilities(self, t: int, edit: TableEdit | None = None, forget_draw: bool = False) -> np.ndarray:
        """(N, A) the process's decision distribution at tick t, with the shown table edited
        (slot types kept) and/or without the last draw, under the tick's own noise."""
        soc = self.society
        stance, draw = self.last(t)
        shown = self.shown[t] if edit is None else edit(t, self.shown[t], self.types[t], stance)
        noise = soc.noise(t)
        opinion = (soc.identity + soc.influence(shown, stance, self.types[t]) + self.events[t] + soc.agent_effect
                   + soc.cfg.noise_sd * noise.opinion)
        return soc.probabilities(soc.logits(opinion, np.full_like(draw, -1) if forget_draw else draw))
