"""The text pathway's capacity, on real texts with a known answer (`lsm capacity`).

Can the student learn influence that depends on *what* a neighbour said, from as much data as an
LLM corpus holds? The check keeps everything of real teacher traces (the world, who was shown
whom, the events, the real messages and their sentence embeddings) and replaces the decision
targets by a planted rule whose answer is known:

    logits_i,t = β · s_i,t · u,   s_i,t = Σ_k w · ê_k / √k

over the k messages agent i was shown at tick t (ê: the unit sentence embedding of the message a
shown neighbour broadcast at t − 1; no message: s = 0). `w` is a hidden direction in the span of
the corpus's own message embeddings (a seeded mix of their leading principal components,
orthogonal to the embeddings' stance direction, so that a student reading only the senders'
stances cannot answer), scaled so that w · ê has unit spread over the messages; `u` moves
probability from the last action to the first. Nothing but message content moves the target.

A student is trained on a growing number of agents (the sample-size curve), the same number of
optimiser steps each, with and without the paired loss on the planted rule's exact contrasts,
and scored on held-out agents: for every held-out agent-tick shown a message, the student's
change of decision distribution when its messages are removed against the truth's (`r`: their
correlation; a student that hears *that* a message came but not what it said scores r ≈ 0),
and the ratio of the two changes' mean TV.

Notation: T ticks | N agents | K shown | A actions | D text-embedding dim | X contrasts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lsm.model.society import StudentConfig
from lsm.society import seeds
from lsm.society.contrasts import CONTRASTS, kept_messages
from lsm.train.data import Episode
from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule
from lsm.train.evaluate import paired_contrast_table


@dataclass
class CapacityConfig:
    traces: list[str] = field(default_factory=lambda: ["data_gen/corpus/n200/vaccine_campaign_s0.h5",
                                                       "data_gen/corpus/n200/vaccine_campaign_s1.h5"])
    """Teacher traces of one world whose inputs and messages are kept (the reference corpus's vaccine campaign)."""
    sizes: list[int] = field(default_factory=lambda: [25, 50, 100, 150])
    """Training agents per trace (the curve); agent-ticks = size × ticks × traces."""
    held_out: int = 50
    """Agents held out of training (the last ones of a seeded permutation), scored."""
    steps: int = 300
    """Optimiser steps of every model."""
    batch: int = 64
    beta: float = 1.5
    """The rule's strength: logit change per unit of s."""
    contrast_fraction: float = 0.25
    """The paired-loss models see the exact contrasts of this fraction of training agent-ticks."""
    contrast_weight: float = 10.0
    """The paired loss's weight where it is on (`LossWeights.contrast`)."""
    preset: str = "small"
    seed: int = 0
    lr: float = 3e-3


def hidden_direction(emb: np.ndarray, stance: np.ndarray, seed: int, components: int = 8) -> np.ndarray:
    """(D,) a direction in the span of the messages' embeddings `emb` (M, D): a seeded mix of
    their leading principal components, uncorrelated over the messages with the stance direction
    (least squares of `stance` on the embeddings, within those components), scaled so that w · ê has sd 1."""
    x = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    basis = vt[:components]  # (P, D)
    z = x @ basis.T  # (M, P)
    stance_dir, *_ = np.linalg.lstsq(z, stance - stance.mean(), rcond=None)  # (P,)
    mix = seeds.rng(seed, seeds.Stream.PLANTED_DIRECTIONS, 1).normal(size=components)
    cov = z.T @ z  # (P, P) uncorrelated over the messages: projections are uncorrelated iff orthogonal in this metric
    mix -= stance_dir * (mix @ cov @ stance_dir) / max(float(stance_dir @ cov @ stance_dir), 1e-12)
    w = mix @ basis  # (D,)
    return w / max(float((emb @ w).std()), 1e-12)


def planted_targets(ep: Episode, w: np.ndarray, beta: float, sampled: torch.Tensor, seed: int,
                    draw_key: int = 0) -> dict[str, torch.Tensor]:
    """`ep.targets` with the decision distribution and draw of the planted rule, and its exact
    `contrast_dist` for the `sampled` (T, N) agent-ticks (NaN elsewhere)."""
    tg = ep.targets
    T, N, A = tg["decision_dist"].shape
    u = torch.zeros(A)
    u[0], u[-1] = 1.0, -1.0
    e = torch.nn.functional.normalize(tg["expression_emb"], dim=-1)  # (T, N, D)
    push = (e @ torch.as_tensor(w, dtype=torch.float32)) * tg["valid"]  # (T, N) what each agent's message carries
    shown, shown_type = ep.shown, ep.shown_type
    assert shown is not None and shown_type is not None

    def rule(t: int, keep: torch.Tensor) -> torch.Tensor:  # (N, A) the distribution hearing the kept shown messages
        if t == 0:
            return torch.softmax(torch.zeros(N, A), -1)
        nb = shown[t]  # (N, K)
        ok = (nb >= 0) & keep
        vals = push[t - 1][nb.clamp_min(0)] * ok  # (N, K)
        s = vals.sum(1) / ok.sum(1).clamp_min(1).sqrt()  # (N,)
        return torch.softmax(beta * s[:, None] * u, -1)

    dist = torch.stack([rule(t, torch.ones_like(shown[t], dtype=torch.bool)) for t in range(T)])  # (T, N, A)
    g = seeds.torch_generator(seed, seeds.Stream.CAPACITY, 2, draw_key)
    drawn = torch.multinomial(dist.reshape(-1, A), 1, generator=g).reshape(T, N)
    contrast = torch.full((T, N, len(CONTRASTS), A), float("nan"))
    for t in range(T):
        rows = sampled[t]
        for x, name in enumerate(CONTRASTS):
            keep = kept_messages(name, shown_type[t])
            contrast[t, rows, x] = rule(t, keep)[rows]  # events play no part: no_events equals shown
    return {**tg, "decision_dist": dist, "decision": drawn, "contrast_dist": contrast}


def held_out_split(n: int, seed: int) -> torch.Tensor:
    """(n,) a seeded permutation of the agents: the first are trained on, the last held out."""
    return torch.randperm(n, generator=seeds.torch_generator(seed, seeds.Stream.CAPACITY, 0))


def train_on_agents(ep_list: list[Episode], rows: torch.Tensor, sizes: dict[str, Any], cfg: CapacityConfig, contrasts: bool) -> Any:
    """A student of `cfg.preset` trained for `cfg.steps` steps on the agents `rows` of every
    episode (batches of at most `cfg.batch`, each hearing the whole population), with the paired
    loss (`contrasts`) or without it."""
    torch.manual_seed(cfg.seed)
    m = DistillModule(StudentConfig.from_preset(cfg.preset, **sizes), seed=cfg.seed, lr=cfg.lr,
                      loss_weights={"contrast": cfg.contrast_weight if contrasts else 0.0})
    opt = torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=0.01)

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()

    done, epoch = 0, 0
    m.train()
    while done < cfg.steps:
        g = seeds.torch_generator(cfg.seed, seeds.Stream.EPOCH_ORDER, epoch)
        for ep in ep_list:
            perm = rows[torch.randperm(len(rows), generator=g)]
            for lo in range(0, len(perm), cfg.batch):
                if done >= cfg.steps:
                    break
                m.unroll(ep, False, step, generator=g, rows=perm[lo:lo + cfg.batch].sort().values)
                done += 1
        epoch += 1
    assert m.model is not None
    return m.model.eval()


def run_capacity(cfg: CapacityConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    dm = TraceDataModule(list(cfg.traces))
    dm.setup()
    eps = dm.train_episodes
    sizes = {"categorical_sizes": dm.categorical_sizes, "numeric_dim": dm.numeric_dim, "channels": dm.channels}
    N = eps[0].n
    if any(e.n != N for e in eps):
        raise ValueError("the capacity check's traces must share one world")
    msgs = torch.cat([e.targets["expression_emb"][e.targets["valid"]] for e in eps]).numpy()
    st = torch.cat([e.targets["stance"][e.targets["valid"]] for e in eps]).numpy()
    w = hidden_direction(msgs / np.linalg.norm(msgs, axis=1, keepdims=True).clip(1e-8), st, cfg.seed)
    order = held_out_split(N, cfg.seed)
    held = order[N - cfg.held_out:]
    g = seeds.torch_generator(cfg.seed, seeds.Stream.CAPACITY, 1)
    planted = []
    for k, ep in enumerate(eps):
        T = ep.ticks
        sampled = torch.rand(T, N, generator=g) < cfg.contrast_fraction
        planted.append(replace(ep, targets=planted_targets(ep, w, cfg.beta, sampled, cfg.seed, k)))
    scored = []  # every held-out agent-tick's exact contrasts, nothing else
    for k, ep in enumerate(eps):
        all_rows = torch.zeros(ep.ticks, N, dtype=torch.bool)
        all_rows[:, held] = True
        scored.append(replace(ep, targets=planted_targets(ep, w, cfg.beta, all_rows, cfg.seed, k)))
    stance_r = float(np.corrcoef(msgs @ w, st)[0, 1])
    rows_out = []
    for size in cfg.sizes:
        train_rows = order[:min(size, N - cfg.held_out)].sort().values
        for contrasts in (False, True):
            t1 = time.perf_counter()
            model = train_on_agents(planted, train_rows, sizes, cfg, contrasts)
            table = paired_contrast_table(model, scored)["no_messages"]
            row = {"agents": int(len(train_rows)), "agent_ticks": int(len(train_rows) * sum(e.ticks for e in eps)),
                   "paired_loss": contrasts, "r": table["r"], "tv_ratio": table["ratio"], "student_tv": table["student_tv"],
                   "truth_tv": table["teacher_tv"], "seconds": round(time.perf_counter() - t1, 1)}
            rows_out.append(row)
            say(f"  {row['agent_ticks']:>5} agent-ticks, paired loss {'on ' if contrasts else 'off'}: r {row['r']:.3f}, "
                f"TV ratio {row['tv_ratio']:.3f} (truth TV {row['truth_tv']:.3f}), {row['seconds']:.0f} s")
    return {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "stance_correlation_of_w": stance_r,
            "held_out_agent_ticks": int(cfg.held_out * sum(e.ticks for e in eps)), "rows": rows_out,
            "seconds": round(time.perf_counter() - t0, 1)}


def format_capacity(r: dict[str, Any]) -> str:
    lines = ["The text pathway on real messages, known answer (influence through a hidden direction of the message "
             f"embeddings; its correlation with the senders' stance {r['stance_correlation_of_w']:.2f}); held-out "
             f"{r['held_out_agent_ticks']} agent-ticks, messages removed:",
             "| training agent-ticks | paired loss | r (student vs truth change) | TV ratio | truth TV |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['agent_ticks']} | {'on' if row['paired_loss'] else 'off'} | {row['r']:.3f} | {row['tv_ratio']:.3f} | "
                     f"{row['truth_tv']:.3f} |")
    return "\n".join(lines)


def main_capacity(cfg: CapacityConfig, json_out: str | Path | None = None) -> dict[str, Any]:
    import json

    r = run_capacity(cfg)
    print(format_capacity(r))
    if json_out:
        Path(json_out).write_text(json.dumps(r, indent=1))
    return r
