"""The student replayed along a teacher's trace: one tick ahead of the teacher's own history.

At every tick the student sees what the teacher's agents saw (events, the shown neighbours on
the padded path) and what they observably did last tick (their drawn decisions and stances;
neighbours' messages are the teacher's). Its own channels, memory and decision distribution run
free. The stochastic latents are drawn from the prior: `samples` paired draws, the same for
every edit, so an edit's effect is measured with the noise held fixed (common random numbers).

An *edit* changes one tick's inputs or state (`Edit(t, inp, state) -> (inp, state)`): the
factual run continues from the factual state, and each edit is evaluated from that same
pre-tick state, so its effect is the effect of the change at that tick alone.

Notation: S samples | T ticks | N agents | K shown | A actions | C channels.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor

from lsm.model.society import SocietyModel, TickInputs
from lsm.model.state import AgentState
from lsm.model.tick import advance, said, trace_senders, with_said
from lsm.society import seeds
from lsm.train.data import Episode

Edit = Callable[[int, TickInputs, AgentState], tuple[TickInputs, AgentState]]


def padded_inputs(ep: Episode, t: int) -> TickInputs:
    """Tick t's inputs on the padded path (the trace's shown table), as a rollout builds them."""
    if ep.shown is None or ep.shown_type is None:
        raise ValueError(f"{ep.name}: the episode has no shown-neighbour table")
    return replace(ep.inputs(t), neighbors=ep.shown[t], neighbor_type=ep.shown_type[t])


def trace_inputs(model: SocietyModel, ep: Episode, t: int, rows: Tensor | None = None) -> TickInputs:
    """Tick t's inputs along the trace (of `rows` of its agents; default all): the padded path,
    with what the teacher's agents did at t (`model.tick.said`), which the new state records
    for tick t + 1."""
    inp = padded_inputs(ep, t)
    return with_said(inp if rows is None else inp.rows(rows), said(model, ep.targets, t, rows))


@torch.no_grad()
def replay(model: SocietyModel, ep: Episode, edits: dict[str, Edit] | None = None, samples: int = 4,
           seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """`{"factual": outputs, name: outputs for each edit}`, outputs = `probs` (S, T, N, A),
    `channels` (S, T, N, C), `channel_dist` (S, T, N, C, L) the predicted rating-level
    distributions, `stance` (S, T, N), `expression` (S, T, N, TEXT_DIM)."""
    model = model.eval()
    cfg = model.cfg
    names = ["factual", *(edits or {})]
    rows: dict[str, dict[str, list]] = {k: {"probs": [], "channels": [], "channel_dist": [], "stance": [], "expression": []}
                                        for k in names}
    for s in range(samples):
        g = seeds.torch_generator(seed, seeds.Stream.REPLAY, s)
        state = model.initial_state(ep.n, ep.action_emb.shape[0])
        state.agent_noise = model.draw_agent_noise(ep.n, g)
        per: dict[str, dict[str, list]] = {k: {"probs": [], "channels": [], "channel_dist": [], "stance": [], "expression": []}
                                           for k in names}
        for t in range(ep.ticks):
            inp = trace_inputs(model, ep, t)
            inp.tick_noise = torch.randn(ep.n, cfg.tick_noise, generator=g)
            heard = trace_senders(model, ep.targets, t)  # (N, X + 1) the same for every edit
            for name in names:
                i2, s2 = (inp, state) if name == "factual" else edits[name](t, replace(inp), replace(state))  # type: ignore[index]
                new, out = advance(model, s2, i2, senders=heard)
                per[name]["probs"].append(torch.softmax(out.decision_logits, -1))
                per[name]["channels"].append(out.channels)
                per[name]["channel_dist"].append(torch.softmax(out.channel_logits, -1))
                per[name]["stance"].append(out.stance)
                assert out.expression_text is not None, "replays need SocietyModel.decode_text"
                per[name]["expression"].append(out.expression_text)
                if name == "factual":
                    next_state = new
            state = next_state
        for name in names:
            for k, v in per[name].items():
                rows[name][k].append(torch.stack(v))
    return {name: {k: torch.stack(v) for k, v in r.items()} for name, r in rows.items()}
