"""The Society view's data: a connected sample of the social graph, laid out, with each sampled
agent's decision at every tick.

A uniform sample of a few thousand agents out of 10^5 would hold almost no edges, so the
sample is a seeded snowball: breadth-first from random agents over the undirected graph
until `nodes` agents are reached. The layout is Fruchterman-Reingold (seeded, `layout`) on the
sample, computed once per file and cached with it (`aggregates.cached`).

Legend: N agents | E edges | S sampled agents | T ticks.
"""
from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lsm.society import seeds
from lsm.society.world.graph import EDGE_TYPES

DEFAULT_NODES = 2000
MAX_NODES = 5000


def snowball(n: int, edge_index: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """(S,) sorted agent ids: breadth-first from seeded random starts over the undirected graph
    (edge_index (2, E)) until `size` agents are taken (all of them when n <= size)."""
    if n <= size:
        return np.arange(n)
    rng = seeds.rng(seed, seeds.Stream.SNOWBALL)
    src, dst = np.concatenate([edge_index[0], edge_index[1]]), np.concatenate([edge_index[1], edge_index[0]])
    order = np.argsort(src, kind="stable")
    nbr = dst[order]  # (2E,) neighbours grouped by agent
    start = np.searchsorted(src[order], np.arange(n + 1))  # (N + 1,) CSR offsets
    taken = np.zeros(n, bool)
    out: list[int] = []
    for s in rng.permutation(n):
        if len(out) >= size:
            break
        if taken[s]:
            continue
        taken[s] = True
        out.append(int(s))
        queue = deque([int(s)])
        while queue and len(out) < size:
            i = queue.popleft()
            js = nbr[start[i]:start[i + 1]]
            for j in rng.permutation(js[~taken[js]]):
                if taken[j]:
                    continue
                taken[j] = True
                out.append(int(j))
                queue.append(int(j))
                if len(out) >= size:
                    break
    return np.sort(np.asarray(out, np.int64))


def layout(n: int, src: np.ndarray, dst: np.ndarray, seed: int = 0, iterations: int = 60) -> np.ndarray:
    """(S, 2) Fruchterman-Reingold positions of S nodes with edges src -> dst, vectorised:
    repulsion k^2/d between every pair (dense, row blocks), attraction d^2/k along each edge,
    steps capped by a temperature cooling linearly from 0.1 (networkx's schedule; its sparse
    variant loops over nodes in Python: 12 s for 2,000 nodes here, against ~1-2 s for this)."""
    rng = seeds.rng(seed, seeds.Stream.LAYOUT)
    pos = rng.random((n, 2)).astype(np.float32)  # (S, 2)
    if n < 2:
        return pos
    k = np.float32(np.sqrt(1.0 / n))
    temp, cool = 0.1, 0.1 / (iterations + 1)
    block = max(1, (1 << 22) // n)  # rows per block: ~4M pairs at a time
    for _ in range(iterations):
        disp = np.zeros_like(pos)  # (S, 2)
        sq = (pos * pos).sum(1)  # (S,)
        for a in range(0, n, block):
            # sum_j (p_i - p_j) w_ij = p_i * sum_j w_ij - (W p)_i, with w_ij = k^2 / |p_i - p_j|^2: two matmuls
            d2 = np.maximum(sq[a:a + block, None] + sq[None, :] - 2 * pos[a:a + block] @ pos.T, 1e-4)  # (b, S)
            w = (k * k) / d2  # (b, S)
            disp[a:a + block] += pos[a:a + block] * w.sum(1, keepdims=True) - w @ pos
        e = pos[src] - pos[dst]  # (E, 2)
        pull = e * (np.sqrt((e * e).sum(-1)) / k)[:, None]  # d^2/k along the edge
        np.add.at(disp, src, -pull)
        np.add.at(disp, dst, pull)
        length = np.maximum(np.sqrt((disp * disp).sum(-1)), 1e-9)  # (S,)
        pos += disp * (np.minimum(length, temp) / length)[:, None]
        temp -= cool
    return pos


def graph_sample(path: Path, nodes: int = DEFAULT_NODES, seed: int = 0) -> dict[str, Any]:
    """Nodes (id, name, x, y, categorical attributes, decision per tick) and the edges among them."""
    with h5py.File(path, "r") as f:
        n = int(f["population"].attrs["n"])
        ei = f["graph/edge_index"][()]  # (2, E)
        et = f["graph/edge_type"][()]  # (E,)
        ids = snowball(n, ei, nodes, seed)  # (S,)
        local = np.full(n, -1, np.int64)
        local[ids] = np.arange(len(ids))
        keep = (local[ei[0]] >= 0) & (local[ei[1]] >= 0)
        src, dst, typ = local[ei[0, keep]], local[ei[1, keep]], et[keep]
        # one undirected edge per pair (the first type listed wins: household before friend ...)
        pair = np.minimum(src, dst) * len(ids) + np.maximum(src, dst)
        pair_order = np.lexsort((typ, pair))
        first = np.unique(pair[pair_order], return_index=True)[1]
        sel = pair_order[first]
        src, dst, typ = src[sel], dst[sel], typ[sel]
        pop = f["population"]
        names = pop["names"][()][ids] if n <= 200_000 else np.asarray([pop["names"][int(i)] for i in ids])
        attrs = {}
        for a in pop["categorical"]:
            cats = json.loads(pop["categorical"][a].attrs["categories"])
            attrs[a] = [cats[int(c)] for c in pop["categorical"][a][()][ids]]
        decision = None
        if "decision" in f:
            T = int(f.attrs.get("ticks_complete", 0))
            decision = np.stack([f["decision"][t][ids] for t in range(T)]) if T else np.zeros((0, len(ids)), np.int16)  # (T, S)
    pos = layout(len(ids), src, dst, seed)  # (S, 2)
    return {
        "agents": n, "sampled": len(ids), "edge_types": list(EDGE_TYPES),
        "nodes": [{"id": int(i), "name": nm.decode() if isinstance(nm, bytes) else str(nm),
                   "x": float(pos[k][0]), "y": float(pos[k][1]),
                   "attrs": {a: v[k] for a, v in attrs.items()}}
                  for k, (i, nm) in enumerate(zip(ids, names))],
        "edges": [[int(s), int(d), int(t)] for s, d, t in zip(src, dst, typ)],
        "decision": decision.astype(int).tolist() if decision is not None else None,
    }
