"""Sampled subgraphs of large episodes (PyG's NeighborLoader has no backend here).

A subgraph keeps a random set of *seed* agents plus every agent that can reach a seed within
`hops` edges at any tick (taken over the union of the episode's per-tick edges, so the node set
is fixed across the unrolled ticks). Edges are restricted to that set; losses are computed on
the seeds only (the others are marked invalid), because their own neighbourhoods are truncated.

Within one tick the student's layers attend to the senders' *last broadcast* expression (state),
not to their current hidden states, so one hop is a tick's whole receptive field: with
`hops >= 1` a seed's tick-t output sees exactly its full-graph neighbours given the states.
What is truncated is history: after t ticks influence has travelled t hops, and the kept
neighbours' own states are computed from a truncated neighbourhood. `hops = k` makes the first
k ticks exact.

Notation: N agents of the episode | n agents kept | B seeds.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from lsm.train.data import Episode


def receptive_field(edges: list[tuple[Tensor, Tensor]], seeds: Tensor, n: int, hops: int) -> Tensor:
    """Sorted agent ids that reach `seeds` within `hops` edges at any tick (seeds included)."""
    union = torch.cat([ei for ei, _ in edges], 1) if edges else torch.zeros(2, 0, dtype=torch.long)  # (2, ΣE)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[seeds] = True
    for _ in range(hops):
        keep[union[0][keep[union[1]]]] = True  # senders of edges into the kept set
    return keep.nonzero().squeeze(1)


def subgraph_episode(ep: Episode, nodes: Tensor, seeds: Tensor) -> Episode:
    """The episode restricted to `nodes` (sorted ids), with losses on `seeds` only."""
    remap = torch.full((ep.n,), -1, dtype=torch.long)
    remap[nodes] = torch.arange(len(nodes))
    edges = []
    for ei, et in ep.edges:
        m = (remap[ei[0]] >= 0) & (remap[ei[1]] >= 0)
        edges.append((remap[ei[:, m]], et[m]))
    events = []
    for cat, num, emb, exposure in ep.events:
        m = remap[exposure[0]] >= 0
        events.append((cat, num, emb, torch.stack([remap[exposure[0, m]], exposure[1, m]])))
    is_seed = torch.zeros(ep.n, dtype=torch.bool)
    is_seed[seeds] = True
    targets = {k: v[:, nodes] for k, v in ep.targets.items()}
    targets["valid"] = targets["valid"] & is_seed[nodes][None, :]
    return replace(ep, name=f"{ep.name}[{len(seeds)} seeds/{len(nodes)} agents]", identity_cat=ep.identity_cat[nodes],
                   identity_num=ep.identity_num[nodes], persona_emb=ep.persona_emb[nodes], edges=edges, events=events, targets=targets)


def sample_subgraphs(ep: Episode, seeds_per_subgraph: int, hops: int, generator: torch.Generator) -> list[Episode]:
    """Partition the agents into random seed sets of `seeds_per_subgraph` and return one
    subgraph episode per set (every agent is a seed exactly once per call: one epoch)."""
    order = torch.randperm(ep.n, generator=generator)
    out = []
    for start in range(0, ep.n, seeds_per_subgraph):
        seeds = order[start:start + seeds_per_subgraph].sort().values
        out.append(subgraph_episode(ep, receptive_field(ep.edges, seeds, ep.n, hops), seeds))
    return out
