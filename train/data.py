"""Teacher traces as training episodes: one trace file = one world × scenario × seed, all ticks.

Each tick's student inputs are built from what the teacher's agents actually had: the
neighbours whose messages they were shown (`shown_neighbors`, typed by the graph's edge
between them) and the events they were exposed to (`exposed_events`). Targets are the teacher's
decision distribution, channels, stance, salience and text embeddings; `valid` masks them.

Notation: T ticks | N agents | A actions | C channels | Ev events | V exposures | K shown | X contrasts.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lsm.model.features import action_texts, context_text, embed_texts, event_tensors, typed_edges
from lsm.model.society import TickInputs
from lsm.society.contrasts import CONTRASTS
from lsm.society.embed import persona_features
from lsm.society.loop.neighbors import EdgeTyper
from lsm.society.store import StoreError, TraceFile
from lsm.society.world.population import IdentityVocab, Population, encode_identity


@dataclass
class Episode:
    """One trace file, ready for the student."""

    name: str
    identity_cat: Tensor  # (N, n_cat)
    identity_num: Tensor  # (N, n_num)
    persona_emb: Tensor  # (N, T)
    action_emb: Tensor  # (A, T)
    edges: list[tuple[Tensor, Tensor]]  # per tick: edge_index (2, E_t), edge_type (E_t,)
    events: list[tuple[Tensor, Tensor, Tensor, Tensor]]  # per tick: cat (Ev, 3), num (Ev, F), emb (Ev, T), exposure (2, V)
    targets: dict[str, Tensor]  # decision_dist (T, N, A), decision (T, N), channels (T, N, C), stance, salience (T, N),
    #                             expression_emb, reasoning_emb (T, N, T), valid (T, N); channel_dist (T, N, C, L) and
    #                             contrast_dist (T, N, X, A) when stored
    context_emb: Tensor | None = None  # (T,) the scenario's context and question
    shown: Tensor | None = None  # (T, N, K) the shown-neighbour table (-1 padded), for replays on the padded path
    shown_type: Tensor | None = None  # (T, N, K) the type of each shown tie

    @property
    def ticks(self) -> int:
        return len(self.edges)

    @property
    def n(self) -> int:
        return self.identity_cat.shape[0]

    def inputs(self, t: int) -> TickInputs:
        ei, et = self.edges[t]
        ec, en, ee, ex = self.events[t]
        return TickInputs(self.identity_cat, self.identity_num, self.persona_emb, ei, et, ec, en, ee, ex, self.action_emb,
                          context_emb=self.context_emb)


@dataclass
class AgentBatch:
    """A training batch: `rows` (B,) of an episode's agents (None: all of them), unrolled over
    every tick, hearing the teacher's broadcasts of the whole population."""

    episode: Episode
    rows: Tensor | None = None

    @property
    def n(self) -> int:
        return self.episode.n if self.rows is None else len(self.rows)


def agent_batches(ep: Episode, size: int | None, generator: torch.Generator) -> list[AgentBatch]:
    """The episode's agents in random batches of at most `size` (every agent once: one epoch);
    one whole-episode batch when `size` is None or not smaller than the episode."""
    if size is None or ep.n <= size:
        return [AgentBatch(ep)]
    order = torch.randperm(ep.n, generator=generator)
    return [AgentBatch(ep, order[s:s + size].sort().values) for s in range(0, ep.n, size)]


def load_episode(path: str | Path, vocab: IdentityVocab | None = None,
                 identity: Callable[[Population, str], tuple[Tensor, Tensor]] | None = None) -> Episode:
    """The trace at `path` as an episode. Identities are encoded by `identity(pop, path)` when
    given (a checkpoint's `Student.identity`: unknown where the trace's world differs from its
    training world, with one warning), else strictly in `vocab` (training: the first training
    trace's), a trace whose attributes or categories it lacks being refused with `StoreError`."""
    with TraceFile(path) as tf:
        sc = tf.scenario
        pop, graph = tf.world()
        if identity is not None:
            cat, num = identity(pop, str(path))  # (N, n_cat), (N, n_num)
        else:
            try:
                cat, num = encode_identity(pop, vocab or IdentityVocab.of(pop))  # (N, n_cat), (N, n_num)
            except KeyError as err:
                raise StoreError(f"{path}: its population does not fit the identity vocabulary it is read with "
                                 f"({err.args[0]}); the traces of one training run must come from worlds built from one "
                                 "population config") from None
        persona = torch.from_numpy(persona_features(pop).astype(np.float32))  # (N, T) backstories; zeros for templated personas
        rows = tf.events()
        uid_row = {r["uid"]: k for k, r in enumerate(rows)}
        stored = torch.from_numpy(tf.f["events/text_emb"][()].astype(np.float32)) if "text_emb" in tf.f["events"] else None
        ev_cat, ev_num, ev_emb = event_tensors(rows, embed_texts, stored)
        shown, exposed = tf.array("shown_neighbors"), tf.array("exposed_events")
        edges, events = [], []
        typer = EdgeTyper(graph)
        shown_type = np.stack([typer.table(shown[t]) for t in range(tf.n_ticks)]) if len(shown) else np.zeros_like(shown)
        for t in range(tf.n_ticks):
            edges.append(typed_edges(shown[t], graph, typer))
            a, k = np.nonzero(exposed[t] >= 0)
            ev_rows = np.array([uid_row[int(u)] for u in exposed[t][a, k]], dtype=np.int64)
            used = np.unique(ev_rows)  # only this tick's events, re-indexed
            remap = {int(r): q for q, r in enumerate(used)}
            exposure = torch.tensor(np.stack([a, [remap[int(r)] for r in ev_rows]]) if len(a) else np.zeros((2, 0)), dtype=torch.long)
            idx = torch.from_numpy(used)
            events.append((ev_cat[idx], ev_num[idx], ev_emb[idx], exposure))
        valid = torch.from_numpy(tf.array("valid"))
        targets = {
            "decision_dist": torch.from_numpy(tf.array("decision_dist").astype(np.float32)),
            "decision": torch.from_numpy(tf.array("decision").astype(np.int64)),
            "channels": torch.from_numpy(np.nan_to_num(tf.array("channels")).astype(np.float32)),
            "stance": torch.from_numpy(np.nan_to_num(tf.array("stance")).astype(np.float32)),
            "salience": torch.from_numpy(np.nan_to_num(tf.array("salience")).astype(np.float32)),
            "expression_emb": torch.from_numpy(tf.array("expression_emb").astype(np.float32)),
            "reasoning_emb": torch.from_numpy(tf.array("reasoning_emb").astype(np.float32)),
            "valid": valid,
        }
        if "channel_dist" in tf.fields:
            targets["channel_dist"] = torch.from_numpy(tf.array("channel_dist").astype(np.float32))
        if "contrast_dist" in tf.fields:  # paired contrasts (`lsm.society.contrasts`), NaN where not sampled
            names = json.loads(tf.f.attrs["contrasts"])
            if tuple(names) != CONTRASTS:
                raise StoreError(f"{path}: its paired contrasts are {names}; this LSM reads {list(CONTRASTS)}")
            targets["contrast_dist"] = torch.from_numpy(tf.array("contrast_dist").astype(np.float32))
        return Episode(f"{sc.name}:{Path(path).name}", cat, num, persona, embed_texts(tuple(action_texts(sc))), edges, events, targets,
                       embed_texts((context_text(sc),))[0], torch.from_numpy(shown.astype(np.int64)),
                       torch.from_numpy(shown_type.astype(np.int64)))
