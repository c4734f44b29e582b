"""Teacher traces as training episodes: one trace file = one world × scenario × seed, all ticks.

Each tick's student inputs are built from what the teacher's agents actually had: the
neighbours whose messages they were shown (`shown_neighbors`, typed by the graph's edge
between them) and the events they were exposed to (`exposed_events`). Targets are the teacher's
decision distribution, channels, stance, salience and text embeddings; `valid` masks them.

Notation: T ticks | N agents | A actions | C channels | Ev events | V exposures | K shown.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lsm.data_gen.population import IdentityVocab, encode_identity
from lsm.data_gen.scenario import Framing, MediaChannel, Scenario, SourceType
from lsm.data_gen.store import TraceFile
from lsm.model.society import TickInputs

EVENT_VOCABS = [list(typing.get_args(t)) for t in (SourceType, MediaChannel, Framing)]


def action_texts(sc: Scenario) -> list[str]:
    a = sc.actions
    if a.type == "categorical":
        return [f"{o.name}: {o.description}" if o.description else o.name for o in a.options]  # type: ignore[union-attr]
    return [f"pick a number from {lo} to {hi}" for lo, hi in (lab.split("-") for lab in a.labels)]


@lru_cache(maxsize=1)
def _encoder():
    from lsm.data_gen.embed import SentenceEncoder

    return SentenceEncoder()


def embed_texts(texts: tuple[str, ...]) -> Tensor:
    return torch.from_numpy(_encoder().encode(list(texts)).astype(np.float32))


class EdgeTyper:
    """Type of the tie j -> i in a world's graph (the closest one, i.e. the smallest type, when
    several exist; a pair with no tie is typed as a weak tie). Sorted once, O(log E) per query."""

    def __init__(self, graph):
        self.n = graph.n
        keys = graph.edge_index[1].astype(np.int64) * self.n + graph.edge_index[0].astype(np.int64)
        order = np.lexsort((graph.edge_type, keys))  # by key, then type: the first of a key has the min type
        self.keys, self.types = keys[order], graph.edge_type[order].astype(np.int64)

    def __call__(self, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
        q = receivers.astype(np.int64) * self.n + senders.astype(np.int64)
        pos = np.minimum(np.searchsorted(self.keys, q), max(len(self.keys) - 1, 0))
        found = (self.keys[pos] == q) if len(self.keys) else np.zeros(len(q), dtype=bool)
        return np.where(found, self.types[pos] if len(self.keys) else 3, 3).astype(np.int64)  # 3: weak tie

    def table(self, shown: np.ndarray) -> np.ndarray:
        """(N, K) edge types of a shown-neighbour table (-1 padding gives an arbitrary type)."""
        rows = np.broadcast_to(np.arange(shown.shape[0])[:, None], shown.shape)
        return self(np.maximum(shown, 0).ravel(), rows.ravel()).reshape(shown.shape)


def typed_edges(shown: np.ndarray, graph, typer: EdgeTyper | None = None) -> tuple[Tensor, Tensor]:
    """Edges j -> i for every shown neighbour j of i, typed by the graph's closest tie (min type)."""
    typer = typer or EdgeTyper(graph)
    i, k = np.nonzero(shown >= 0)
    j = shown[i, k].astype(np.int64)
    return torch.from_numpy(np.stack([j, i])), torch.from_numpy(typer(j, i))


def event_tensors(rows: list[dict], encode, stored: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Event rows (the `events/` columns: source_type, channel, framing, valence, credibility,
    text) -> (Ev, 3) category codes, (Ev, 2) valence/credibility, (Ev, 384) embeddings of the
    event *text* (what the teacher stores in `events/text_emb`; `stored` when the file has them).
    Training and rollouts both build their event inputs here, so they see the same features."""
    cat = torch.tensor([[EVENT_VOCABS[0].index(r["source_type"]), EVENT_VOCABS[1].index(r["channel"]),
                         EVENT_VOCABS[2].index(r["framing"])] for r in rows], dtype=torch.long).reshape(-1, 3)
    num = torch.tensor([[r["valence"], r["credibility"]] for r in rows], dtype=torch.float32).reshape(-1, 2)
    if stored is not None:
        emb = stored
    else:
        emb = encode(tuple(r["text"] for r in rows)) if rows else torch.zeros(0, 384)
    return cat, num, emb


@dataclass
class Episode:
    """One trace file, ready for the student."""

    name: str
    identity_cat: Tensor  # (N, n_cat)
    identity_num: Tensor  # (N, n_num)
    persona_emb: Tensor  # (N, 384)
    action_emb: Tensor  # (A, 384)
    edges: list[tuple[Tensor, Tensor]]  # per tick: edge_index (2, E_t), edge_type (E_t,)
    events: list[tuple[Tensor, Tensor, Tensor, Tensor]]  # per tick: cat (Ev, 3), num (Ev, 2), emb (Ev, 384), exposure (2, V)
    targets: dict[str, Tensor]  # decision_dist (T, N, A), decision (T, N), channels (T, N, C), stance, salience (T, N),
    #                             expression_emb, reasoning_emb (T, N, 384), valid (T, N)

    @property
    def ticks(self) -> int:
        return len(self.edges)

    @property
    def n(self) -> int:
        return self.identity_cat.shape[0]

    def inputs(self, t: int) -> TickInputs:
        ei, et = self.edges[t]
        ec, en, ee, ex = self.events[t]
        return TickInputs(self.identity_cat, self.identity_num, self.persona_emb, ei, et, ec, en, ee, ex, self.action_emb)


def load_episode(path: str | Path, vocab: IdentityVocab | None = None) -> Episode:
    with TraceFile(path) as tf:
        sc = tf.scenario
        pop, graph = tf.world()
        vocab = vocab or IdentityVocab.of(pop)
        cat, num = encode_identity(pop, vocab)
        persona = torch.from_numpy(tf.f["population/persona_emb"][()].astype(np.float32)) if "persona_emb" in tf.f["population"] \
            else embed_texts(tuple(pop.persona))
        rows = tf.events()
        uid_row = {r["uid"]: k for k, r in enumerate(rows)}
        stored = torch.from_numpy(tf.f["events/text_emb"][()].astype(np.float32)) if "text_emb" in tf.f["events"] else None
        ev_cat, ev_num, ev_emb = event_tensors(rows, embed_texts, stored)
        shown, exposed = tf.array("shown_neighbors"), tf.array("exposed_events")
        edges, events = [], []
        typer = EdgeTyper(graph)
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
        return Episode(f"{sc.name}:{Path(path).name}", cat, num, persona, embed_texts(tuple(action_texts(sc))), edges, events, targets)
