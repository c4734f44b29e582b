"""Agents split into shards that keep ties inside: the partition of a sharded rollout.

A world's households are numbered along its locality sort (`graph._households`: the attributes
of `household.group_by`, such as region, then a similarity key), so agents taken in household
order sit beside the people they know. The partition cuts that order into P runs of about N / P
agents, each cut moved to the nearest household boundary: no household is ever split, and most
friends and colleagues (drawn homophilously, largely within a region) land in the same shard.

Notation: N agents | E edges | P shards (ranks).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Partition:
    """Which shard (rank) holds each agent."""

    owner: np.ndarray
    """(N,) int32: the shard of each agent."""
    shards: int
    """P."""

    def members(self, rank: int) -> np.ndarray:
        """(N_r,) int64: the agents of shard `rank`, in ascending id order (the order of its rows)."""
        return np.nonzero(self.owner == rank)[0]

    def sizes(self) -> np.ndarray:
        """(P,) agents per shard."""
        return np.bincount(self.owner, minlength=self.shards)

    def edge_cut(self, edge_index: np.ndarray) -> float:
        """The share of edges (2, E) whose sender and receiver are in different shards."""
        if edge_index.shape[1] == 0:
            return 0.0
        return float(np.mean(self.owner[edge_index[0]] != self.owner[edge_index[1]]))


def partition(household: np.ndarray, shards: int) -> Partition:
    """P shards of about N / P agents, cut between households along their numbering (module
    docstring). Every agent is in exactly one shard; a shard may be empty only when there are
    fewer households than shards."""
    n = len(household)
    if shards < 1:
        raise ValueError(f"shards = {shards}: expected at least 1")
    order = np.argsort(household, kind="stable")  # (N,) agents in household order
    starts = np.flatnonzero(np.r_[True, np.diff(household[order]) != 0])  # (H,) where each household begins
    owner = np.empty(n, dtype=np.int32)
    bounds = [0]
    for r in range(1, shards):
        target = r * n / shards
        k = int(np.searchsorted(starts, target))  # the nearest household start to the even cut
        cands = [starts[j] for j in (k - 1, k) if 0 <= j < len(starts)]
        cut = min(cands, key=lambda s: (abs(s - target), s)) if cands else n
        bounds.append(max(int(cut), bounds[-1]))
    bounds.append(n)
    for r in range(shards):
        owner[order[bounds[r]:bounds[r + 1]]] = r
    return Partition(owner, shards)
