"""The planted reference society as a policy of the society loop (the process: `config.py`).

`terms()` computes each named term of the opinion from what the agents perceive; `logits()`
turns terms into decision logits. Both are pure functions of the perception and the previous
tick's stances and draws, so an experiment can re-evaluate the exact truth under any change
(messages removed, senders shuffled, an event removed) with the same noise.

Notation: N agents | K shown neighbours | A actions | C channels | D text-embedding width.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsm.data_gen.planted.config import PlantedConfig
from lsm.society import seeds
from lsm.society.embed import (
    TEXT_DIM,
    shared_encoder,
    write_event_embeddings,
)
from lsm.society.groups import logit_offsets
from lsm.society.loop.neighbors import EdgeTyper
from lsm.society.loop.runner import Perception, Progress, TickOutput, decision_shares
from lsm.society.scenario import RATING_LEVELS, Scenario, event_features
from lsm.society.store import TraceWriter
from lsm.society.world.graph import EDGE_TYPES

TERMS = ("identity", "influence", "events", "agent", "noise")
"""The opinion's terms, in the order of the config's docstring."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Noise:
    """The process's random draws for one tick (from `llm_seed`), fixed so that a term can be
    re-evaluated under a change with the same noise."""

    opinion: np.ndarray  # (N,) ξ
    stance: np.ndarray  # (N,) ζ
    salience: np.ndarray  # (N,) ζ'
    channels: np.ndarray  # (N, C) ν
    draw: np.ndarray  # (N,) uniform in [0, 1): inverse-CDF draw of the decision
    within_bin: np.ndarray  # (N,) uniform in [0, 1): the number within a numeric bin
    emb: np.ndarray  # (2, N, D) standard normal: message and reasoning embedding noise


class PlantedSociety:
    """A policy of the society loop whose mechanism is written out in `PlantedConfig`."""

    kind = "teacher_trace"

    def __init__(self, cfg: PlantedConfig, scenario: Scenario, pop, graph, seed: int, llm_seed: int | None = None,
                 world_file: str | Path | None = None):
        self.cfg, self.sc, self.pop, self.graph = cfg, scenario, pop, graph
        self.seed, self.llm_seed = seed, seed if llm_seed is None else llm_seed
        self.world_file = world_file
        n, A, C = pop.n, scenario.actions.n, len(scenario.channel_names)
        self.numeric = scenario.actions.type == "numeric"
        self.typer = EdgeTyper(graph)
        labels = scenario.actions.labels
        even = np.linspace(1.0, -1.0, A)
        self.lean = np.array([cfg.action_lean.get(a, even[k]) for k, a in enumerate(labels)])  # (A,)
        self.bias = np.array([cfg.action_bias.get(a, 0.0) for a in labels])  # (A,)
        offsets = logit_offsets(scenario, pop)
        self.offsets = np.zeros((n, A)) if offsets is None else offsets.astype(np.float64)  # (N, A) the scenario's group leans
        self.beta = np.array([cfg.influence.get(t, 0.0) for t in EDGE_TYPES]) * cfg.dose  # (n_types,)
        self.identity = self._identity(pop)  # (N,)
        self.conformity = np.ones(n)  # (N,) m_i
        if cfg.conformity_attribute:
            if cfg.conformity_attribute not in pop.categorical:
                raise ValueError(f"conformity_attribute {cfg.conformity_attribute!r} is not a categorical attribute of "
                                 f"the world ({', '.join(pop.categorical)})")
            cats = pop.categories[cfg.conformity_attribute]
            m = np.array([cfg.conformity.get(c, 1.0) for c in cats])
            self.conformity = m[pop.categorical[cfg.conformity_attribute].astype(np.int64)]
        rng = seeds.rng(seed, seeds.Stream.PLANTED_EFFECTS)
        self.agent_effect = rng.normal(0.0, cfg.agent_sd, n)  # (N,) r_i
        self.channel_effect = rng.normal(0.0, cfg.channel_agent_sd, (n, C))  # (N, C) η_ic
        chans = scenario.channel_names
        self.loading = np.array([cfg.channel_loading.get(c, cfg.default_loading) for c in chans])  # (C,)
        self.channel_bias = np.array([cfg.channel_bias.get(c, 0.0) for c in chans])  # (C,)
        d = seeds.rng(cfg.embedding_seed, seeds.Stream.PLANTED_DIRECTIONS).normal(size=(2 + A, TEXT_DIM))
        self.directions = d / np.linalg.norm(d, axis=1, keepdims=True)  # (2 + A, D): stance, opinion, actions
        self.last_stance = np.zeros(n)  # (N,) s_j,t-1
        self.last_draw = np.full(n, -1, dtype=np.int64)  # (N,) d_i,t-1 (-1: none yet)

    def _identity(self, pop) -> np.ndarray:
        out = np.zeros(pop.n)
        for attr, effects in self.cfg.identity.items():
            if attr not in pop.categorical:
                raise ValueError(f"identity.{attr}: not a categorical attribute of the world ({', '.join(pop.categorical)})")
            table = np.array([effects.get(c, 0.0) for c in pop.categories[attr]])
            out += table[pop.categorical[attr].astype(np.int64)]
        for attr, coef in self.cfg.identity_numeric.items():
            if attr not in pop.numeric:
                raise ValueError(f"identity_numeric.{attr}: not a numeric attribute of the world ({', '.join(pop.numeric)})")
            lo, hi = pop.numeric_range[attr]
            out += coef * (2 * (pop.numeric[attr] - lo) / max(hi - lo, 1e-9) - 1)
        return out

    # -- the process ------------------------------------------------------------------------
    def noise(self, tick: int) -> Noise:
        n, C = self.pop.n, len(self.sc.channel_names)
        rng = seeds.rng(self.llm_seed, seeds.Stream.PLANTED_NOISE, tick)
        return Noise(rng.normal(size=n), rng.normal(size=n), rng.normal(size=n), rng.normal(size=(n, C)),
                     rng.random(n), rng.random(n), rng.normal(size=(2, n, TEXT_DIM)))

    def push(self, features: dict[str, float], source_type: str, framing: str) -> float:
        """One event's push on the opinion of an agent who sees it; `features`: its numeric
        features by name (`event_features`, or a row of a trace's `events/` table)."""
        ev = self.cfg.events
        return (ev.valence_credibility * features["valence"] * features["credibility"]
                + ev.source_type.get(source_type, 0.0) + ev.framing.get(framing, 0.0))

    def event_push(self, p: Perception) -> np.ndarray:
        """(N,) the events term: Σ over the events each agent sees of its push."""
        push = np.array([self.push(event_features(e.event), e.event.source_type, e.event.framing)
                         for e in p.events])  # (Ev,)
        return p.seen.astype(np.float64) @ push if len(push) else np.zeros(p.n)

    def influence(self, shown: np.ndarray, stance: np.ndarray, types: np.ndarray | None = None) -> np.ndarray:
        """(N,) the social-influence term from the shown table (N, K) and the senders' stances
        (`types`: the tie type of each slot; default: the graph's tie between sender and receiver)."""
        K = max(self.cfg.neighbors.k, 1)
        mask = shown >= 0  # (N, K)
        types = self.typer.table(shown) if types is None else types  # (N, K)
        s = np.where(mask, stance[np.maximum(shown, 0)], 0.0)  # (N, K)
        return self.conformity * (self.beta[types] * s).sum(axis=1) / K

    def terms(self, p: Perception, noise: Noise, last_stance: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each named term of the opinion, (N,) each (sum: the opinion o_it)."""
        stance = self.last_stance if last_stance is None else last_stance
        return {"identity": self.identity, "influence": self.influence(p.shown, stance), "events": self.event_push(p),
                "agent": self.agent_effect, "noise": self.cfg.noise_sd * noise.opinion}

    @staticmethod
    def opinion(terms: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) o_it: the sum of the terms."""
        return np.sum(np.stack(list(terms.values())), axis=0)

    def logits(self, opinion: np.ndarray, last_draw: np.ndarray | None = None) -> np.ndarray:
        """(N, A) decision logits from the opinion and the last drawn decision."""
        last = self.last_draw if last_draw is None else last_draw
        u = self.bias[None, :] + self.cfg.scale * opinion[:, None] * self.lean[None, :] + self.offsets  # (N, A)
        has = last >= 0
        u[np.nonzero(has)[0], last[has]] += self.cfg.persistence
        return u

    @staticmethod
    def probabilities(logits: np.ndarray) -> np.ndarray:
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    # -- the policy's contract -------------------------------------------------------------
    def dims(self) -> dict[str, int]:
        return {}

    def fields(self) -> list[str]:
        f = ["channels", "channel_dist", "decision", "decision_dist", "stance", "expression_emb", "reasoning_emb",
             "salience", "valid", "error", "reasoning", "expression", "salient_memory", "attempts", "tokens_prompt",
             "tokens_completion", "latency_s"]
        return f + (["decision_value"] if self.numeric else [])

    def configs(self) -> dict[str, Any]:
        return {"teacher": json.dumps(asdict(self.cfg))}

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"last_stance": self.last_stance, "last_draw": self.last_draw}

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.last_stance, self.last_draw = arrays["last_stance"].copy(), arrays["last_draw"].copy()

    def finalize(self, writer: TraceWriter) -> None:
        writer.f.attrs["teacher_backend"] = f"planted:{self.cfg.name}"
        writer.f.attrs["answer_mode"] = "planted"
        write_event_embeddings(writer, shared_encoder())

    def act(self, p: Perception, progress: Progress | None = None, capture: bool = False) -> TickOutput:
        t0 = time.perf_counter()
        n, cfg, sc = p.n, self.cfg, self.sc
        noise = self.noise(p.tick)
        terms = self.terms(p, noise)
        opinion = self.opinion(terms)  # (N,)
        probs = self.probabilities(self.logits(opinion))  # (N, A)
        draw = np.minimum((probs.cumsum(axis=1) < noise.draw[:, None]).sum(axis=1), sc.actions.n - 1)  # (N,)
        stance = np.clip(np.tanh(opinion) + cfg.stance_sd * noise.stance, -1, 1)
        mu = _sigmoid(self.channel_bias + self.loading * opinion[:, None] + self.channel_effect
                      + cfg.channel_noise_sd * noise.channels)  # (N, C)
        levels = np.arange(RATING_LEVELS)  # (11,)
        dist = np.exp(-((levels - (RATING_LEVELS - 1) * mu[..., None]) ** 2) / (2 * cfg.channel_spread**2))  # (N, C, 11)
        dist /= dist.sum(axis=-1, keepdims=True)
        dist16 = dist.astype(np.float16)
        channels = (dist16.astype(np.float32) * levels).sum(axis=-1) / (RATING_LEVELS - 1)  # the teacher's rule, on what is stored
        salience = _sigmoid(-1 + 2 * np.abs(terms["events"]) + 0.5 * noise.salience)
        d = self.directions
        expr = stance[:, None] * d[0] + 0.5 * d[2 + draw] + cfg.embedding_noise * noise.emb[0] / np.sqrt(TEXT_DIM)
        reas = np.tanh(opinion)[:, None] * d[1] + d[2 + draw] + cfg.embedding_noise * noise.emb[1] / np.sqrt(TEXT_DIM)
        data: dict[str, np.ndarray] = {
            "channels": channels.astype(np.float32), "channel_dist": dist16, "decision_dist": probs.astype(np.float32),
            "stance": stance.astype(np.float32), "salience": salience.astype(np.float32),
            "expression_emb": (expr / np.linalg.norm(expr, axis=1, keepdims=True)).astype(np.float16),
            "reasoning_emb": (reas / np.linalg.norm(reas, axis=1, keepdims=True)).astype(np.float16),
            "valid": np.ones(n, dtype=bool), "error": np.full(n, "", dtype=object),
            "attempts": np.ones(n, np.int8), "tokens_prompt": np.zeros(n, np.int32),
            "tokens_completion": np.zeros(n, np.int32), "latency_s": np.zeros(n, np.float32),
        }
        if self.numeric:
            a = sc.actions
            lo, hi = a.bin_edges[draw], a.bin_edges[draw + 1]
            value = lo + noise.within_bin * (hi - lo)
            if a.integer:
                value = np.clip(np.floor(value), a.min, a.max)
            data["decision_value"] = value.astype(np.float32)
            data["decision"] = a.bin_of(value).astype(np.int16)  # the bin of the reported number, as the teacher
        else:
            data["decision"] = draw.astype(np.int16)
        data.update(self.texts(p.tick, terms, opinion, data["decision"].astype(np.int64), stance))
        self.last_stance, self.last_draw = stance, data["decision"].astype(np.int64)
        if progress is not None:
            progress(n, f"{n / max(time.perf_counter() - t0, 1e-9):,.0f} agents/s")
        return TickOutput(data, np.ones(n, dtype=bool), {"seconds": round(time.perf_counter() - t0, 3)})

    def texts(self, tick: int, terms: dict[str, np.ndarray], opinion: np.ndarray, decision: np.ndarray,
              stance: np.ndarray) -> dict[str, np.ndarray]:
        """Short templated texts naming the largest contributing terms."""
        labels = self.sc.actions.labels
        names = list(terms)
        mat = np.stack([terms[k] for k in names], axis=1)  # (N, n_terms)
        top = np.argsort(-np.abs(mat), axis=1)[:, :2]  # (N, 2)
        words = np.array(["strongly against", "against", "unsure about", "for", "strongly for"], dtype=object)
        level = np.digitize(stance, [-0.6, -0.2, 0.2, 0.6])  # (N,)
        reasoning = np.empty(len(opinion), dtype=object)
        memory = np.empty(len(opinion), dtype=object)
        for i in range(len(opinion)):
            a, b = top[i]
            reasoning[i] = (f"I lean {labels[decision[i]]} (opinion {opinion[i]:+.2f}), mostly from {names[a]} "
                            f"({mat[i, a]:+.2f}) and {names[b]} ({mat[i, b]:+.2f}).")
            memory[i] = f"tick {tick}: {names[a]} moved me ({mat[i, a]:+.2f})"
        expression = np.array([f"I am {w} it." for w in words[level]], dtype=object)
        return {"reasoning": reasoning, "expression": expression, "salient_memory": memory}

    def summary(self, stats: list[dict[str, Any]], wall: float, resumed: int) -> dict[str, Any]:
        agents = sum(s["agents"] for s in stats)
        out = {"backend": f"planted:{self.cfg.name}", "ticks": len(stats), "agent_ticks": agents,
               "invalid": 0, "invalid_rate": 0.0, "repaired": 0, "wall_seconds_this_process": round(wall, 2),
               "agent_ticks_per_second": round(agents / max(sum(s["seconds"] for s in stats), 1e-9), 1),
               "resumed_from_tick": resumed, "decision_shares": decision_shares(stats, self.sc.actions.labels),
               "invalid_per_tick": [0] * len(stats)}
        if self.numeric:
            out["mean_decision_value"] = [s["mean_value"] for s in stats]
        return out
