"""Paired ablations of what agents hear, as edits of a tick's shown-neighbour table.

One definition of each change, applied to the student (`as_edit`, through `train.replay`) and to
the planted process (`recovery.truth`), so both are asked exactly the same question:

- `no_messages`: nobody hears anyone this tick;
- `shuffled_senders`: every shown slot keeps its tie type, but its sender is a random agent;
- `opposite_stance`: every sender is replaced by the agent whose last stance is closest to the
  opposite of the sender's (its real message, the opposite stance);
- `strong_neighbor(type, sign)`: in every row with a slot of that tie type, the first such slot's
  sender is replaced by the agent with the most positive (sign +1) or negative (-1) last stance;
- `decile_sender(type, top)`: in every row with a slot of that tie type, the first such slot's
  sender is replaced by a random agent (seeded) of the top (or bottom) decile of last stances;
- `without_ties(types)`: the slots of those tie types are emptied (a `sever` within one tick).

Notation: N agents | K shown | T ticks | A actions | B bootstrap resamples.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from lsm.society import seeds

TableEdit = Callable[[int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(tick, shown (N, K), types (N, K), last stance (N,)) -> edited shown (N, K), -1 padded."""


def no_messages(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
    return np.full_like(shown, -1)


def shuffled_senders(seed: int = 0) -> TableEdit:
    def edit(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
        rng = seeds.rng(seed, seeds.Stream.SHUFFLED_SENDERS, t)
        return np.where(shown >= 0, rng.integers(0, len(stance), shown.shape), -1)

    return edit


def opposite_stance(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
    order = np.argsort(stance, kind="stable")
    s = stance[order]
    target = -stance[np.maximum(shown, 0)]  # (N, K)
    pos = np.clip(np.searchsorted(s, target), 1, len(s) - 1)
    closer = np.where(np.abs(s[pos - 1] - target) <= np.abs(s[pos] - target), pos - 1, pos)
    return np.where(shown >= 0, order[closer], -1)


def strong_neighbor(edge_type: int, sign: int) -> TableEdit:
    def edit(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
        extreme = int(np.argmax(stance)) if sign > 0 else int(np.argmin(stance))
        out = shown.copy()
        hit = (shown >= 0) & (types == edge_type)  # (N, K)
        rows = np.nonzero(hit.any(1))[0]
        out[rows, hit[rows].argmax(1)] = extreme
        return out

    return edit


def first_slot(shown: np.ndarray, types: np.ndarray, edge_type: int) -> np.ndarray:
    """(N,) the first slot of each row holding a neighbour of the tie type (-1: none): the slot
    `strong_neighbor` and `decile_sender` replace."""
    hit = (shown >= 0) & (types == edge_type)  # (N, K)
    return np.where(hit.any(1), hit.argmax(1), -1)


DECILE = 0.1
"""The share of agents a decile sender is drawn from (top or bottom of last stances)."""


def decile_sender(edge_type: int, top: bool, seed: int = 0) -> TableEdit:
    """In every row with a slot of that tie type, the first such slot's sender is replaced by an
    agent drawn at random (per row; `Stream.DECILE_SENDERS`, per tick, type and decile) from the
    top (`top`) or bottom `DECILE` of last stances. The slot keeps its tie type."""
    def edit(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
        n = len(stance)
        m = max(1, int(np.ceil(DECILE * n)))
        order = np.argsort(stance, kind="stable")
        pool = order[-m:] if top else order[:m]  # (m,)
        pick = pool[seeds.rng(seed, seeds.Stream.DECILE_SENDERS, t, edge_type, int(top)).integers(0, m, n)]  # (N,)
        slot = first_slot(shown, types, edge_type)
        rows = np.nonzero(slot >= 0)[0]
        out = shown.copy()
        out[rows, slot[rows]] = pick[rows]
        return out

    return edit


def without_ties(edge_types: tuple[int, ...]) -> TableEdit:
    """The shown slots of these tie types emptied: nobody hears along those ties this tick."""
    def edit(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
        return np.where(np.isin(types, edge_types), -1, shown)

    return edit


def rows_with_type(shown: np.ndarray, types: np.ndarray, edge_type: int) -> np.ndarray:
    """(N,) whether a row shows at least one neighbour of the tie type (where `strong_neighbor` acts)."""
    return ((shown >= 0) & (types == edge_type)).any(1)


def as_edit(table_edit: TableEdit, stance: torch.Tensor):
    """The table edit as a `train.replay` edit; `stance` (T, N): the teacher's stances, so tick t
    uses those of t - 1 (what the senders said)."""
    def edit(t, inp, state):
        last = stance[t - 1].numpy() if t > 0 else np.zeros(stance.shape[1], np.float32)
        shown = table_edit(t, inp.neighbors.numpy(), inp.neighbor_type.numpy(), last)
        return replace(inp, neighbors=torch.from_numpy(shown.astype(np.int64))), state

    return edit
