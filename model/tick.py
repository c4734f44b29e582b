"""The student's tick, written once.

`advance` moves agents one tick from (state, inputs, what neighbours hear); training
(`train.module`), replays and evaluation (`train.replay`, `train.evaluate`) and rollouts
(`infer.rollout`) all call it. What differs between them is only *what the agents did*:

- along a trace (training, replay), the agents' decisions, stances and messages are the
  teacher's (`said`): the new state records them, so next tick each agent and its neighbours see
  what the teacher's agents did;
- in a rollout, the student draws them itself (`Draws.uniform`, `stance_eps`, `channel_eps`).

Notation: T ticks | N agents (N_all: the population the senders belong to) | K shown |
X expression width | A actions | C channels.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from lsm.model.society import Draws, SocietyModel, TickInputs, TickOutputs
from lsm.model.state import AgentState
from lsm.society.contrasts import keeps_events, kept_messages


def advance(model: SocietyModel, state: AgentState, inp: TickInputs, senders: Tensor | None = None,
            receivers: Tensor | None = None, chunk: int = 0, return_attention: bool = False,
            generator: torch.Generator | None = None) -> tuple[AgentState, TickOutputs]:
    """One tick of `model` for the agents of `state`: the new state (with this tick's decision
    and what the agents said recorded) and the outputs.

    `senders` (N_all, X + 1): the broadcasts the receivers hear (default: their own state's);
    `receivers` (N,): their ids in `senders`. `chunk` > 0: receivers in chunks of that many
    (inference on the padded path; the same result, `SocietyModel.forward_in_chunks`)."""
    own_first = senders is None or (receivers is not None and bool((receivers == torch.arange(state.n, device=receivers.device)).all()))
    if chunk and own_first and not return_attention and inp.neighbors is not None and not torch.is_grad_enabled():
        return model.forward_in_chunks(inp, state, chunk, senders=senders)
    return model(inp, state, return_attention=return_attention, generator=generator, senders=senders, receivers=receivers)


def said(model: SocietyModel, targets: dict[str, Tensor], t: int, rows: Tensor | None = None) -> Draws:
    """What a trace's agents did at tick t (`rows` of them): their drawn decision (-1 where the
    agent-tick is invalid), stance and message (encoded for the broadcast)."""
    pick = (lambda x: x) if rows is None else (lambda x: x[rows])  # noqa: E731
    valid = pick(targets["valid"][t])
    decision = torch.where(valid, pick(targets["decision"][t]).long(), torch.full_like(valid, -1, dtype=torch.long))
    return Draws(decision=decision, stance=pick(targets["stance"][t]),
                 expression=model.encode_expression(pick(targets["expression_emb"][t])))


def trace_senders(model: SocietyModel, targets: dict[str, Tensor], t: int) -> Tensor:
    """(N, X + 1) what every agent of a trace broadcast at tick t - 1, the messages heard at tick
    t (zeros at tick 0 and where the agent-tick is invalid)."""
    n = targets["valid"].shape[1]
    if t == 0:
        return torch.zeros(n, model.cfg.expression_dim + 1)
    v = targets["valid"][t - 1][:, None]  # (N, 1)
    out = torch.cat([model.encode_expression(targets["expression_emb"][t - 1]), targets["stance"][t - 1][:, None]], -1)
    return out * v


def with_said(inp: TickInputs, draws: Draws) -> TickInputs:
    """`inp` with this tick's `draws` (a trace's `said`, or a rollout's random numbers)."""
    return replace(inp, draws=draws)


def contrast_rows(inp: TickInputs, name: str, candidates: Tensor) -> tuple[Tensor, TickInputs | None]:
    """The student's side of paired contrast `name` (`lsm.society.contrasts`): (sel (S,), the
    inputs of those agents with the contrast's edit), for the `candidates` (N,) bool whose
    perception the contrast changes (the others' answer would not move: (empty, None)). The edit
    sets the removed ties' entries of the neighbour table to -1, or drops the agents' exposures."""
    assert inp.neighbors is not None and inp.neighbor_type is not None, "contrasts need the padded neighbour table"
    keep = kept_messages(name, inp.neighbor_type) | (inp.neighbors < 0)  # (N, K)
    if keeps_events(name):
        changed = (~keep).any(1)
    else:
        changed = torch.zeros_like(candidates)
        changed[inp.exposure[0]] = True
    sel = torch.nonzero(candidates & changed).squeeze(1)  # (S,)
    if not len(sel):
        return sel, None
    sub = inp.rows(sel, exposure=None if keeps_events(name) else torch.zeros(2, 0, dtype=torch.long, device=sel.device))
    assert sub.neighbors is not None
    return sel, replace(sub, neighbors=torch.where(keep[sel], sub.neighbors, -1))
