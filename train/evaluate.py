"""Held-out evaluation of a student against simple baselines.

Metrics over valid teacher agent-ticks of held-out episodes: decision KL(teacher ‖ prediction),
decision accuracy (argmax vs the teacher's recorded decision), channel MAE, expression cosine.
Predictors:
- `student`: the trained model replayed one tick ahead of the teacher's history (`train.replay`:
  the agents' own last draws and stances, the neighbours' real messages; its channels, memory
  and distributions its own), its decision distribution averaged over draws of its latents;
- `student, senders shuffled`: the same with every shown sender replaced by a random agent
  (what the graph contributes; `paired_ablation_table` measures it per agent-tick);
- `marginal per tick`: the training episodes' mean decision distribution and channels at the
  same tick (same action space; for a scenario left out of training: uniform decisions and the
  training channels' mean);
- `repeat previous (teacher t-1)`: each agent repeats its own teacher decision distribution and
  channels of the previous tick (tick 0: the marginal) -- fed by the teacher, so stronger than
  any rollout could be;
- `identity MLP`, when a checkpoint of a model trained with `graph: false` is given.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lsm.society import interventions, stats
from lsm.train.data import Episode
from lsm.model.tick import advance, contrast_rows, trace_senders
from lsm.society.contrasts import CONTRASTS
from lsm.train.replay import replay, trace_inputs


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
def unroll(model, ep: Episode):
    """Yield (state, outputs) of every tick of `ep`: the student replayed one tick ahead of the
    teacher's history (`train.replay`), its stochastic latents at their prior mean (zero)."""

    state = model.eval().initial_state(ep.n, ep.action_emb.shape[0])
    for t in range(ep.ticks):
        state, out = advance(model, state, trace_inputs(model, ep, t), senders=trace_senders(model, ep.targets, t))
        yield state, out


def run_student(model, ep: Episode, edit: str | None = None, samples: int = 4, seed: int = 0):
    """(T, N, A) decision probabilities (the mean over `samples` draws of the stochastic
    latents), (T, N, C) channels, (T, N, TEXT_DIM) expression embeddings; with `edit` (a name of
    `ABLATIONS`), under that change of what agents hear at every tick."""

    edits = {edit: interventions.as_edit(ABLATIONS[edit], ep.targets["stance"])} if edit else None
    out = replay(model, ep, edits, samples=samples, seed=seed)[edit or "factual"]
    return out["probs"].mean(0), out["channels"].mean(0), out["expression"].mean(0)


ABLATIONS = {"messages removed": interventions.no_messages, "senders shuffled": interventions.shuffled_senders(0),
             "opposite stances": interventions.opposite_stance}
"""The paired ablations `lsm evaluate` reports (`society.interventions`)."""


def paired_ablation_table(model, episodes: list[Episode], samples: int = 4) -> dict[str, dict[str, float]]:
    """Per ablation: the student's mean TV per agent-tick (ticks >= 1, valid teacher agent-ticks)
    between its factual and edited decision distributions, with a 95 % bootstrap interval over agents."""

    tvs: dict[str, list[np.ndarray]] = {k: [] for k in ABLATIONS}
    agents: list[np.ndarray] = []
    offset = 0
    for ep in episodes:
        edits = {k: interventions.as_edit(e, ep.targets["stance"]) for k, e in ABLATIONS.items()}
        res = replay(model, ep, edits, samples=samples)
        ok = ep.targets["valid"][1:].numpy()  # (T-1, N)
        for k in ABLATIONS:
            tv = stats.paired_tv(res["factual"]["probs"].numpy(), res[k]["probs"].numpy()).mean(0)[1:]
            tvs[k].append(tv[ok])
        agents.append((np.broadcast_to(np.arange(ep.n), ok.shape) + offset)[ok])
        offset += ep.n
    ids = np.concatenate(agents)
    out = {}
    for k, v in tvs.items():
        est, lo, hi = stats.bootstrap(np.concatenate(v), ids)
        out[k] = {"student_tv": est, "low": lo, "high": hi}
    return out


@torch.no_grad()
def paired_contrast_table(model, episodes: list[Episode]) -> dict[str, dict[str, float | int | None]]:
    """Per paired contrast (`lsm.society.contrasts`), over the agent-ticks whose contrasts the
    teacher scored and whose perception the contrast changes: the teacher's mean TV between its
    decision distribution under the contrast and as shown, the student's (replayed along the
    trace, `unroll`, asked again from the same state with the same edit, `model.tick.contrast_rows`),
    each with a 95 % bootstrap interval over agents, their ratio, and the mean signed shift of each
    action. Episodes without contrasts are skipped; {} when none has them."""
    rows: dict[str, dict[str, list]] = {name: {"teacher": [], "student": [], "ids": [], "dt": [], "ds": []} for name in CONTRASTS[1:]}
    offset = 0
    for ep in episodes:
        q_all = ep.targets.get("contrast_dist")
        if q_all is None:
            continue
        state = model.eval().initial_state(ep.n, ep.action_emb.shape[0])
        for t in range(ep.ticks):
            inp, heard = trace_inputs(model, ep, t), trace_senders(model, ep.targets, t)
            new, out = advance(model, state, inp, senders=heard)
            q = q_all[t]  # (N, X, A)
            sampled = torch.isfinite(q[:, 0, 0]) & ep.targets["valid"][t]
            p_shown = torch.softmax(out.decision_logits, -1)
            for x, name in enumerate(CONTRASTS[1:], start=1):
                sel, sub = contrast_rows(inp, name, sampled)
                if sub is None:
                    continue
                o = advance(model, state.index(sel), sub, senders=heard, receivers=sel)[1]
                ds = torch.softmax(o.decision_logits, -1) - p_shown[sel]  # (S, A)
                dt = q[sel, x] - q[sel, 0]  # (S, A)
                r = rows[name]
                r["teacher"].append(0.5 * dt.abs().sum(-1).numpy())
                r["student"].append(0.5 * ds.abs().sum(-1).numpy())
                r["dt"].append(dt.numpy())
                r["ds"].append(ds.numpy())
                r["ids"].append(sel.numpy() + offset)
            state = new
        offset += ep.n
    out: dict[str, dict[str, float | int | None]] = {}
    for name, r in rows.items():
        if not r["teacher"]:
            continue
        ids = np.concatenate(r["ids"])
        te, te_lo, te_hi = stats.bootstrap(np.concatenate(r["teacher"]), ids)
        st, st_lo, st_hi = stats.bootstrap(np.concatenate(r["student"]), ids)
        dt, ds = np.concatenate(r["dt"]), np.concatenate(r["ds"])
        out[name] = {"agent_ticks": int(len(ids)), "teacher_tv": te, "teacher_low": te_lo, "teacher_high": te_hi,
                     "student_tv": st, "student_low": st_lo, "student_high": st_hi, "ratio": st / te if te else None,
                     "r": _correlation(dt, ds),
                     "teacher_shift": dt.mean(0).round(4).tolist(), "student_shift": ds.mean(0).round(4).tolist()}
    return out


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two changes over (agent-tick, action) pairs, each action centred on
    its mean change (so an agent-independent shift does not count as agreement); None where either is constant."""
    a, b = a - a.mean(0), b - b.mean(0)
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else None


def format_contrast_table(table: dict[str, dict]) -> str:
    lines = ["Paired contrasts (teacher-scored agent-ticks whose perception the contrast changes; 95 % bootstrap "
             "intervals over agents; r: correlation of the two changes across agent-ticks, each action centred):",
             "| contrast | agent-ticks | teacher TV | student TV | student / teacher | r |", "|---|---|---|---|---|---|"]
    for name, r in table.items():
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}"
        corr = "–" if r.get("r") is None else f"{r['r']:.2f}"
        lines.append(f"| {name} | {r['agent_ticks']} | {r['teacher_tv']:.3f} [{r['teacher_low']:.3f}, {r['teacher_high']:.3f}] | "
                     f"{r['student_tv']:.3f} [{r['student_low']:.3f}, {r['student_high']:.3f}] | {ratio} | {corr} |")
    return "\n".join(lines)


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
        preds = {"student": run_student(model, ep), "student, senders shuffled": run_student(model, ep, "senders shuffled")}
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
    return {name: {k: _nanmean([r[k] for r in rs]) for k in rs[0]} for name, rs in rows.items()}


def _nanmean(values: list[float]) -> float:
    """Mean of the values that are numbers; nan (without a warning) when none is."""
    ok = [v for v in values if not np.isnan(v)]
    return float(np.mean(ok)) if ok else float("nan")


def format_table(results: dict[str, dict[str, float]], title: str) -> str:
    lines = [f"{title}", "| predictor | decision KL ↓ | decision acc ↑ | channel MAE ↓ | expression cos ↑ |", "|---|---|---|---|---|"]
    for name, m in results.items():
        f = lambda v: "–" if np.isnan(v) else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {name} | {f(m['decision_kl'])} | {f(m['decision_acc'])} | {f(m['channel_mae'])} | {f(m['expression_cos'])} |")
    return "\n".join(lines)
