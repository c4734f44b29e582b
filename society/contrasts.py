"""Paired contrasts: an agent-tick asked again with part of what it perceived taken away.

The teacher scores a sampled fraction of its agent-ticks under each contrast (`contrast_dist` in
a trace, docs/formats.md); the student is trained on its own change under the same edit against
the teacher's (`train.module`, loss term `contrast`). The difference of two answers of the same
agent to the same prompt, less one part, cancels what the two share: the persona, the memory,
the rest of the prompt's noise. This module is the one definition of what each contrast removes,
read by both sides.

- `shown`: the prompt as it was (the reference every other contrast is compared with);
- `no_messages`: every neighbour's message removed;
- `no_<tie>` (one per tie type of `EDGE_TYPES`): the messages of neighbours tied by that type removed
  (a shown neighbour with no tie at all counts as a weak tie, as `EdgeTyper` types it);
- `no_events`: the events seen this tick removed.
"""
from __future__ import annotations

from typing import Any

from lsm.society.world.graph import EDGE_TYPES

CONTRASTS: tuple[str, ...] = ("shown", "no_messages", *(f"no_{t}" for t in EDGE_TYPES), "no_events")
"""The contrasts, in the order of the `X` axis of `contrast_dist`."""


def removed_tie(name: str) -> int | None:
    """The tie-type code whose messages contrast `name` removes; -1 for every message; None for none."""
    if name not in CONTRASTS:
        raise ValueError(f"unknown contrast {name!r}; known: {list(CONTRASTS)}")
    if name == "no_messages":
        return -1
    tie = name.removeprefix("no_")
    return EDGE_TYPES.index(tie) if tie in EDGE_TYPES else None


def kept_messages(name: str, tie_codes: Any) -> Any:
    """Which shown messages contrast `name` keeps: a boolean mask shaped like `tie_codes` (the tie
    type code of each shown neighbour; numpy array or torch tensor)."""
    code = removed_tie(name)
    if code is None:
        return tie_codes == tie_codes
    if code == -1:
        return tie_codes != tie_codes
    return tie_codes != code


def keeps_events(name: str) -> bool:
    """Whether contrast `name` keeps the events the agent saw."""
    removed_tie(name)  # checks the name
    return name != "no_events"
