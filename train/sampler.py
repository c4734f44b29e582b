"""Sampled subgraphs of large episodes, with PyG's `k_hop_subgraph` and `subgraph`.

(PyG's NeighborLoader needs pyg-lib or torch-sparse, which have no wheels here; its pure-torch
subgraph utilities do the job.)

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
from torch_geometric.utils import bipartite_subgraph, k_hop_subgraph, subgraph

from lsm.train.data import Episode


def receptive_field(edges: list[tuple[Tensor, Tensor]], seeds: Tensor, n: int, hops: int) -> Tensor:
    """Sorted agent ids that reach `seeds` within `hops` edges at any tick (seeds included)."""
    union = torch.cat([ei for ei, _ in edges], 1) if edges else torch.zeros(2, 0, dtype=torch.long)  # (2, ΣE)
    # flow="source_to_target": from the seeds back to the senders j of their in-edges, hop by hop;
    # directed=True skips the induced-edge mask (only the node set is used here)
    nodes, _, _, _ = k_hop_subgraph(seeds, hops, union, num_nodes=n, flow="source_to_target", directed=True)  # (n,) sorted
    return nodes


def subgraph_episode(ep: Episode, nodes: Tensor, seeds: Tensor) -> Episode:
    """The episode restricted to `nodes` (sorted ids), with losses on `seeds` only."""
    edges = []
    for ei, et in ep.edges:
        sub_ei, sub_et = subgraph(nodes, ei, et, relabel_nodes=True, num_nodes=ep.n)  # (2, E'), (E',)
        edges.append((sub_ei, sub_et))
    events = []
    for cat, num, emb, exposure in ep.events:
        every_event = torch.ones(cat.shape[0], dtype=torch.bool)  # all events kept, their ids unchanged
        sub_exp, _ = bipartite_subgraph((nodes, every_event), exposure, relabel_nodes=True, size=(ep.n, cat.shape[0]))  # (2, V')
        events.append((cat, num, emb, sub_exp))
    is_seed = torch.zeros(ep.n, dtype=torch.bool)
    is_seed[seeds] = True
    targets = {k: v[:, nodes] for k, v in ep.targets.items()}
    targets["valid"] = targets["valid"] & is_seed[nodes][None, :]
    return replace(ep, name=f"{ep.name}[{len(seeds)} seeds/{len(nodes)} agents]", identity_cat=ep.identity_cat[nodes],
                   identity_num=ep.identity_num[nodes], persona_emb=ep.persona_emb[nodes], edges=edges, events=events, targets=targets,
                   shown=None, shown_type=None)  # the padded tables index the whole episode


def sample_subgraphs(ep: Episode, seeds_per_subgraph: int, hops: int, generator: torch.Generator) -> list[Episode]:
    """Partition the agents into random seed sets of `seeds_per_subgraph` and return one
    subgraph episode per set (every agent is a seed exactly once per call: one epoch)."""
    order = torch.randperm(ep.n, generator=generator)
    out = []
    for start in range(0, ep.n, seeds_per_subgraph):
        seeds = order[start:start + seeds_per_subgraph].sort().values
        out.append(subgraph_episode(ep, receptive_field(ep.edges, seeds, ep.n, hops), seeds))
    return out
