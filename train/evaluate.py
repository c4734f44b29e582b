"""Held-out evaluation of a student against simple baselines (issue 4 §3).

Metrics over valid teacher agent-ticks of held-out episodes: decision KL(teacher ‖ prediction),
decision accuracy (argmax vs the teacher's recorded decision), channel MAE, expression cosine.
Predictors:
- `student`: the trained model, free-running from its initial state;
- `student, edges shuffled`: the same model with every tick's senders permuted at random
  (what the graph contributes);
- `marginal per tick`: the training episodes' mean decision distribution and channels at the
  same tick (same action space; for a scenario left out of training: uniform decisions and the
  training channels' mean);
- `repeat previous (teacher t-1)`: each agent repeats its own teacher decision distribution and
  channels of the previous tick (tick 0: the marginal) -- fed by the teacher, so stronger than
  any rollout could be;
- `identity MLP`, when a checkpoint of a model trained with `graph: false` is given.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from lsm.train.data import Episode


def _metrics(dist: torch.Tensor, channels: torch.Tensor | None, expr: torch.Tensor | None, ep: Episode) -> dict[str, float]:
    """dist (T, N, A) predicted probabilities; channels (T, N, C); expr (T, N, TEXT_DIM) or None."""
    v = ep.targets["valid"]
    p = ep.targets["decision_dist"][v]
    q = dist[v].clamp_min(1e-8)
    out = {
        "decision_kl": float((p * (torch.log(p.clamp_min(1e-8)) - torch.log(q))).sum(-1).mean()),
        "decision_acc": float((q.argmax(-1) == ep.targets["decision"][v]).float().mean()),
    }
    out["channel_mae"] = float((channels[v] - ep.targets["channels"][v]).abs().mean()) if channels is not None else float("nan")
    out["expression_cos"] = float(F.cosine_similarity(expr[v], ep.targets["expression_emb"][v], dim=-1).mean()) if expr is not None else float("nan")
    return out


@torch.no_grad()
def unroll(model, ep: Episode, shuffle_edges: bool = False, seed: int = 0):
    """Yield (state, outputs) of every tick of `ep`, the student running from its initial state
    on the inputs the teacher's agents had (senders permuted at random with `shuffle_edges`)."""
    g = torch.Generator().manual_seed(seed)
    state = model.initial_state(ep.n, ep.action_emb.shape[0])
    for t in range(ep.ticks):
        inp = ep.inputs(t)
        if shuffle_edges and inp.edge_index.shape[1]:
            senders = torch.randint(0, ep.n, (inp.edge_index.shape[1],), generator=g)
            inp = replace(inp, edge_index=torch.stack([senders, inp.edge_index[1]]))
        state, out = model(inp, state)
        yield state, out


def run_student(model, ep: Episode, shuffle_edges: bool = False, seed: int = 0):
    """(T, N, A) decision probabilities, (T, N, C) channels, (T, N, TEXT_DIM) expression embeddings."""
    outs = [out for _, out in unroll(model, ep, shuffle_edges, seed)]
    return (torch.stack([torch.softmax(o.decision_logits, -1) for o in outs]), torch.stack([o.channels for o in outs]),
            torch.stack([o.expression_text for o in outs]))


def _tick_means(ep: Episode, key: str, ticks: int) -> torch.Tensor:
    """(ticks, ·) mean of a target over the valid agents of each tick (the last tick repeated beyond the episode)."""
    rows = []
    for t in range(ticks):
        u = min(t, ep.ticks - 1)
        v = ep.targets["valid"][u]
        rows.append(ep.targets[key][u][v].mean(0) if v.any() else ep.targets[key][u].mean(0))
    return torch.stack(rows)


def evaluate(model, train: list[Episode], held_out: list[Episode], mlp=None) -> dict[str, dict[str, float]]:
    """Mean metrics per predictor over the held-out episodes."""
    rows: dict[str, list[dict[str, float]]] = {}
    for ep in held_out:
        preds = {"student": run_student(model, ep), "student, edges shuffled": run_student(model, ep, shuffle_edges=True)}
        if mlp is not None:
            preds["identity MLP (no graph)"] = run_student(mlp, ep)
        same = [e for e in train if e.action_emb.shape == ep.action_emb.shape and torch.equal(e.action_emb, ep.action_emb)]
        T, N, A = ep.targets["decision_dist"].shape
        if same:  # the training episodes' mean decision distribution and channels at each tick
            marg = torch.stack([_tick_means(e, "decision_dist", T) for e in same]).mean(0)  # (T, A)
            marg_ch = torch.stack([_tick_means(e, "channels", T) for e in same]).mean(0)  # (T, C)
            marginal_name = "marginal per tick"
        else:  # a scenario left out of training: no marginal over its actions exists; uniform / all training channels
            marg = torch.full((T, A), 1.0 / A)
            marg_ch = torch.stack([_tick_means(e, "channels", T) for e in train]).mean(0)
            marginal_name = "uniform (no training marginal)"
        m_dist, m_ch = marg[:, None].expand(T, N, A), marg_ch[:, None].expand(T, N, -1)
        preds[marginal_name] = (m_dist, m_ch, None)
        # repeat previous: the teacher's own distribution and channels of the agent at t-1 (tick 0 and
        # invalid t-1: the marginal) -- an oracle-fed baseline, stronger than repeating the sampled decision
        prev_d = torch.cat([m_dist[:1], ep.targets["decision_dist"][:-1]]).clone()
        prev_c = torch.cat([m_ch[:1], ep.targets["channels"][:-1]]).clone()
        invalid_prev = torch.cat([torch.ones(1, N, dtype=torch.bool), ~ep.targets["valid"][:-1]])
        prev_d[invalid_prev] = m_dist[invalid_prev]
        prev_c[invalid_prev] = m_ch[invalid_prev]
        preds["repeat previous (teacher t-1)"] = (prev_d, prev_c, None)
        for name, (d, c, x) in preds.items():
            rows.setdefault(name, []).append(_metrics(d, c, x, ep))
    return {name: {k: float(np.nanmean([r[k] for r in rs])) for k in rs[0]} for name, rs in rows.items()}


def format_table(results: dict[str, dict[str, float]], title: str) -> str:
    lines = [f"{title}", "| predictor | decision KL ↓ | decision acc ↑ | channel MAE ↓ | expression cos ↑ |", "|---|---|---|---|---|"]
    for name, m in results.items():
        f = lambda v: "–" if np.isnan(v) else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {name} | {f(m['decision_kl'])} | {f(m['decision_acc'])} | {f(m['channel_mae'])} | {f(m['expression_cos'])} |")
    return "\n".join(lines)
