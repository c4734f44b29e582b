"""Who hears whom: the shown-neighbour rule of the society loop and the type of every tie.

Each tick every agent is shown up to K neighbours that broadcast a message last tick, drawn by
Gumbel top-k with per-edge-type weights from one seeded generator (stream `NEIGHBORS` of
`lsm.society.seeds`, per tick), so every policy (LLM teacher, planted society, student) sees the
same neighbours for the same world, scenario and seed. With `vary` the count shown to each
agent-tick is itself drawn, uniformly in 0..K (stream `NEIGHBOR_COUNT`), so the effect of hearing others is
identifiable apart from the effect of the tick.

Notation: N agents | E edges | K shown neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

import numpy as np

from lsm.config import Checked, from_dict
from lsm.documents import parse_document
from lsm.limits import MAX_NEIGHBORS_SHOWN
from lsm.society import seeds
from lsm.society.world.graph import EDGE_TYPES

WEAK_TIE = EDGE_TYPES.index("weak_tie")
"""The type given to a shown pair with no tie in the graph."""


def default_neighbor_weights() -> dict[str, float]:
    return {"household": 3.0, "friend": 2.0, "professional": 1.0, "weak_tie": 0.5, "media": 1.0}


@dataclass
class NeighborRule(Checked):
    """How many neighbours each agent hears per tick, and which: the one definition, owned here.

    A teacher or planted config holds one (`neighbors:`), every trace records the rule it ran
    under (root attribute `neighbor_rule`), a checkpoint records the rule of its training traces,
    and a rollout takes it from its checkpoint unless told otherwise."""

    k: int = 4
    """K: at most this many neighbour messages per agent-tick (0: agents never hear each other)."""
    weights: dict[str, float] = field(default_factory=default_neighbor_weights)
    """Relative chance of a tie type being shown (0: never shown)."""
    vary: bool = True
    """Draw the number shown per agent-tick uniformly in 0..K instead of always K (where enough
    spoke), so the effect of hearing others is identifiable apart from the effect of the tick
    (false: every agent hears min(K, neighbours who spoke), the rule of corpora before 2026-12)."""

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not 0 <= self.k <= MAX_NEIGHBORS_SHOWN:
            yield "k", self.k, f"a count from 0 to {MAX_NEIGHBORS_SHOWN} (messages per agent-tick)"
        for t, w in self.weights.items():
            if t not in EDGE_TYPES:
                yield f"weights.{t}", w, f"an edge type among {list(EDGE_TYPES)}"
            elif not w >= 0:
                yield f"weights.{t}", w, "a weight >= 0"

    @staticmethod
    def upgrade_flat(data: dict) -> dict:
        """A config mapping whose rule is spelled flat, as before 2026-12 (`neighbors: 4`,
        `neighbor_weights: {...}`, `vary_neighbors: true`), with the rule nested under `neighbors`
        instead; a mapping already nested is returned as it is. Used by every config that holds a
        rule, so files and traces written before keep loading."""
        if not isinstance(data, dict) or not ({"neighbor_weights", "vary_neighbors"} & set(data)
                                              or not isinstance(data.get("neighbors", {}), dict)):
            return data
        out = {k: v for k, v in data.items() if k not in ("neighbors", "neighbor_weights", "vary_neighbors")}
        rule = {new: data[old] for old, new in (("neighbors", "k"), ("neighbor_weights", "weights"), ("vary_neighbors", "vary"))
                if old in data}
        out["neighbors"] = rule
        return out

    @classmethod
    def from_json(cls, text: str, source: str = "neighbor_rule") -> "NeighborRule":
        """The rule as recorded in a trace's or checkpoint's `neighbor_rule` (JSON); a malformed
        one is a `ConfigError` naming `source`."""
        return from_dict(cls, parse_document(text, source, "neighbour rule", fmt="json"), source=source, kind="neighbour rule")

def recorded_rule(attrs: Any, source: str) -> NeighborRule | None:
    """The rule a trace or rollout file ran under: its root attribute `neighbor_rule`; for a
    teacher trace written before that was recorded, the flat fields of its embedded teacher
    config with `vary` false (the only rule then); None when neither is there. `attrs` is the
    file's root attribute mapping, `source` its name for errors."""
    if "neighbor_rule" in attrs:
        return NeighborRule.from_json(str(attrs["neighbor_rule"]), f"{source}:neighbor_rule")
    if "config.teacher" not in attrs:
        return None
    data = parse_document(str(attrs["config.teacher"]), f"{source}:config.teacher", "teacher config")
    if not isinstance(data, dict) or "neighbors" not in data:
        return None
    nested = NeighborRule.upgrade_flat({"vary_neighbors": False, **data})["neighbors"]
    return from_dict(NeighborRule, nested, source=f"{source}:config.teacher", kind="neighbour rule")


class EdgeTyper:
    """Type of the tie j -> i in a world's graph (the closest one, i.e. the smallest type code,
    when several exist; a pair with no tie is typed as a weak tie). Sorted once, O(log E) per query.
    With `receivers` (ascending ids): only ties into them are kept (a shard's), and only they may
    be asked about."""

    def __init__(self, graph, receivers: np.ndarray | None = None):
        self.n = graph.n
        recv, send, etype = graph.edge_index[1], graph.edge_index[0], graph.edge_type
        if receivers is not None:
            keep = np.isin(recv, receivers)
            recv, send, etype = recv[keep], send[keep], etype[keep]
        keys = recv.astype(np.int64) * self.n + send.astype(np.int64)
        order = np.lexsort((etype, keys))  # by key, then type: the first of a key has the min type
        self.keys, self.types = keys[order], etype[order].astype(np.int64)

    def lookup(self, senders: np.ndarray, receivers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(types, found): the closest tie type of each pair, and whether the pair has a tie at all."""
        q = receivers.astype(np.int64) * self.n + senders.astype(np.int64)
        if not len(self.keys):
            return np.full(len(q), WEAK_TIE, np.int64), np.zeros(len(q), dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        found = self.keys[pos] == q
        return np.where(found, self.types[pos], WEAK_TIE).astype(np.int64), found

    def __call__(self, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
        return self.lookup(senders, receivers)[0]

    def relation(self, i: int, j: int) -> str | None:
        """The closest tie type of j -> i (`None` if there is none)."""
        types, found = self.lookup(np.array([j]), np.array([i]))
        return EDGE_TYPES[int(types[0])] if found[0] else None

    def table(self, shown: np.ndarray, receivers: np.ndarray | None = None) -> np.ndarray:
        """(N, K) edge types of a shown-neighbour table (-1 padding gives an arbitrary type);
        `receivers` (N,): the agent of each row (default: row i is agent i)."""
        ids = np.arange(shown.shape[0]) if receivers is None else receivers
        rows = np.broadcast_to(ids[:, None], shown.shape)
        return self(np.maximum(shown, 0).ravel(), rows.ravel()).reshape(shown.shape)


GUMBEL_BLOCK = 1 << 22
"""Gumbel keys drawn at a time: the stream is the same drawn whole or in blocks, and a shard
keeps only its receivers' keys of each block."""


@dataclass
class NeighborIndex:
    """In-edges of every agent, grouped by receiver (the graph is sorted by receiver); with
    `receivers`, of those agents only (a shard's rows, ascending ids), the rows of what it draws."""

    ptr: np.ndarray  # (N_r + 1,) the receivers' in-edges, as ranges of the arrays below
    sender: np.ndarray  # (E_r,)
    etype: np.ndarray  # (E_r,)
    log_w: np.ndarray  # (E_r,) log of the per-type weight (-inf: never shown)
    population: int = 0
    """N: every agent's draws are taken in turn, a shard's rows picked from them (0: `n`)."""
    receivers: np.ndarray | None = None
    """(N_r,) the agents whose rows this index draws (None: every agent, in id order)."""
    edges: np.ndarray | None = None
    """(E_r,) where the kept edges sit in the whole graph's receiver-sorted list (None: all of it)."""
    all_edges: int = 0

    @classmethod
    def of(cls, graph, weights: dict[str, float], receivers: np.ndarray | None = None) -> "NeighborIndex":
        recv = graph.edge_index[1]
        w = np.array([weights.get(t, 0.0) for t in EDGE_TYPES])
        with np.errstate(divide="ignore"):
            log_w_of_type = np.log(w)
        ptr_all = np.searchsorted(recv, np.arange(graph.n + 1)).astype(np.int64)  # (N + 1,)
        if receivers is None:
            return cls(ptr_all, graph.edge_index[0].astype(np.int64), graph.edge_type.astype(np.int64),
                       log_w_of_type[graph.edge_type.astype(np.int64)], graph.n, None, None, graph.num_edges)
        counts = ptr_all[receivers + 1] - ptr_all[receivers]  # (N_r,)
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        edges = np.repeat(ptr_all[receivers] - ptr[:-1], counts) + np.arange(ptr[-1])  # (E_r,) positions in the whole list
        etype = graph.edge_type[edges].astype(np.int64)
        return cls(ptr, graph.edge_index[0][edges].astype(np.int64), etype, log_w_of_type[etype], graph.n,
                   np.asarray(receivers, dtype=np.int64), edges, graph.num_edges)

    @property
    def n(self) -> int:
        """Rows drawn: N_r (N for the whole population)."""
        return len(self.ptr) - 1

    def gumbel(self, rng: np.random.Generator) -> np.ndarray:
        """(E_r,) the kept edges' Gumbel keys, from the whole graph's stream (drawn in blocks)."""
        if self.edges is None:
            return rng.gumbel(size=len(self.sender))
        out = np.empty(len(self.edges))
        for lo in range(0, self.all_edges, GUMBEL_BLOCK):
            hi = min(lo + GUMBEL_BLOCK, self.all_edges)
            block = rng.gumbel(size=hi - lo)
            a, b = np.searchsorted(self.edges, [lo, hi])
            out[a:b] = block[self.edges[a:b] - lo]
        return out

    def sample(self, k: int, has_message: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N_r, k) ids of shown neighbours (-1 padded): Gumbel top-k by type weight, among
        neighbours that broadcast a message last tick; no sender twice."""
        if k == 0 or len(self.sender) == 0:  # (a shard without in-edges: nobody to show, whatever the stream)
            return np.full((self.n, k), -1, dtype=np.int32)
        keys = self.log_w + self.gumbel(rng)  # (E_r,)
        keys[~has_message[self.sender]] = -np.inf
        return self.top_k(keys, k)

    def shown(self, rule: NeighborRule, has_message: np.ndarray, seed: int, tick: int) -> np.ndarray:
        """(N_r, max(K, 1)) the neighbours shown at `tick` under `rule` (-1 padded): the one
        definition every policy's perception goes through."""
        shown = self.sample(rule.k, has_message, seeds.rng(seed, seeds.Stream.NEIGHBORS, tick))  # (N_r, K)
        if rule.k == 0:
            return np.full((self.n, 1), -1, dtype=np.int32)
        if rule.vary:
            count = seeds.rng(seed, seeds.Stream.NEIGHBOR_COUNT, tick).integers(0, rule.k + 1, size=self.population or self.n)  # (N,)
            if self.receivers is not None:
                count = count[self.receivers]
            shown[np.arange(rule.k)[None, :] >= count[:, None]] = -1
        return shown

    @cached_property
    def _pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The distinct (receiver, sender) pairs, self loops excluded, computed once: (edge order
        by receiver then sender (E',), start of each pair in it (P,), pair receiver (P,), pair sender (P,))."""
        recv = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.ptr))  # (E_r,) the row of each edge's receiver
        ids = recv if self.receivers is None else self.receivers[recv]  # (E_r,) its agent id
        idx = np.nonzero(self.sender != ids)[0]
        order = idx[np.lexsort((self.sender[idx], recv[idx]))]
        r, s = recv[order], self.sender[order]
        first = np.ones(len(r), dtype=bool)
        first[1:] = (r[1:] != r[:-1]) | (s[1:] != s[:-1])
        starts = np.nonzero(first)[0]
        return order, starts, r[starts], s[starts]

    @cached_property
    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs grouped by receiver, computed once: (first pair of each receiver that has
        one (R,), that receiver (R,), the group of each pair (P,))."""
        _, _, pair_r, _ = self._pairs
        heads = np.ones(len(pair_r), dtype=bool)
        heads[1:] = pair_r[1:] != pair_r[:-1]
        seg_start = np.nonzero(heads)[0]
        return seg_start, pair_r[seg_start], np.cumsum(heads) - 1

    def top_k(self, keys: np.ndarray, k: int) -> np.ndarray:
        """(N, k): per receiver, the senders of its k largest finite keys, self excluded and each
        sender once (a repeated sender counts with its largest key; equal keys: the lower id
        first). Vectorised and O(k·E): k rounds of a per-receiver maximum (`reduceat` over the
        receiver-sorted pairs, found once per graph); a full sort of 2·10^7 keys took 12 s a tick."""
        n = self.n
        out = np.full((n, k), -1, dtype=np.int32)
        order, starts, _, pair_s = self._pairs
        if not len(order):
            return out
        seg_start, seg_recv, seg_of = self._segments
        key = np.maximum.reduceat(keys[order], starts)  # (P,) the best edge of each pair
        for j in range(k):
            best = np.maximum.reduceat(key, seg_start)  # (R,) each receiver's largest key left
            hit = np.nonzero((key == best[seg_of]) & np.isfinite(key))[0]  # pairs at their receiver's maximum
            g = seg_of[hit]
            first = np.ones(len(hit), dtype=bool)
            first[1:] = g[1:] != g[:-1]  # ties: the first, i.e. the lower sender id
            hit = hit[first]
            if not len(hit):
                break
            out[seg_recv[seg_of[hit]], j] = pair_s[hit]
            key[hit] = -np.inf
        return out
