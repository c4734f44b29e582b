"""Fidelity of a student rollout to the teacher, beside the teacher's own noise floor (docs/design.md §8).

Each metric compares two runs of the same world and scenario (agents are matched by id):
the *student* value compares teacher vs student; the *floor* compares the teacher with its own
repeat under another LLM sampling seed. `ratio = student / floor`: for the lower-is-better
metrics, 1 means "as faithful to the LLM as the LLM is to itself"; for the higher-is-better
ones (ARI, tail survival, agreement) the ratio reads the other way (1 is again parity, lower is worse).

Metrics (T ticks compared = the shorter run's; invalid agent-ticks ignored everywhere):
- `decision_jsd_mean|max|final`: Jensen–Shannon divergence (natural log, in [0, ln 2]) between
  the decision shares of the two runs at each tick; mean, max and final tick.
- `channel_w1_mean`: 1-D Wasserstein-1 distance between the two runs' distributions of each
  anchored channel across agents, averaged over channels and ticks.
- `tail_survival_min`: for every action the reference run chooses with overall share in
  (0, 10 %), min(1, share in the other run / reference share); the minimum over those actions
  (1: every rare behaviour survives; nan when the reference has no rare action).
- `cluster_ari`: adjusted Rand index between k-means partitions of the agents computed in each
  run on final-tick channels + one-hot decision; `cluster_centroid_distance`: mean distance
  between matched centroids (Hungarian matching) in that space.
- `agent_decision_agreement`: share of agent-ticks where both runs made the same decision.
- `channel_mae`: mean absolute per-agent-tick channel difference.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lsm.infer.report import RunView, cluster_agents, shares

HIGHER_IS_BETTER = {"tail_survival_min", "cluster_ari", "agent_decision_agreement"}
METRICS = ["decision_jsd_mean", "decision_jsd_max", "decision_jsd_final", "channel_w1_mean", "tail_survival_min",
           "cluster_ari", "cluster_centroid_distance", "agent_decision_agreement", "channel_mae"]


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence of two distributions (natural log): 0 if equal, ln 2 if disjoint."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / b[nz])).sum())

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def wasserstein1(x: np.ndarray, y: np.ndarray) -> float:
    """W1 between two 1-D empirical distributions (scipy's exact computation)."""
    from scipy.stats import wasserstein_distance

    if len(x) == 0 or len(y) == 0:
        return float("nan")
    return float(wasserstein_distance(x, y))


def tail_survival(reference: np.ndarray, other: np.ndarray, threshold: float = 0.10) -> float:
    """min over actions with reference share in (0, threshold) of min(1, other / reference); nan if none."""
    rare = (reference > 0) & (reference < threshold)
    if not rare.any():
        return float("nan")
    return float(np.minimum(1.0, other[rare] / reference[rare]).min())


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def matched_centroid_distance(xa: np.ndarray, la: np.ndarray, xb: np.ndarray, lb: np.ndarray) -> float:
    """Mean Euclidean distance between the cluster centroids of two runs (points xa with
    labels la, xb with lb; same feature space), clusters matched by the Hungarian algorithm."""
    from scipy.optimize import linear_sum_assignment

    ca = np.stack([xa[la == k].mean(0) for k in np.unique(la)])
    cb = np.stack([xb[lb == k].mean(0) for k in np.unique(lb)])
    cost = np.linalg.norm(ca[:, None] - cb[None], axis=-1)
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def _features(run: RunView, t: int) -> np.ndarray:
    onehot = np.eye(len(run.actions))[np.clip(run.decision[t], 0, None)] * (run.decision[t] >= 0)[:, None]
    return np.concatenate([run.channels[t], onehot], 1)


def compare(ref: RunView, other: RunView, clusters: int = 4, seed: int = 0) -> dict[str, float]:
    """Every metric of `other` against the reference run `ref`."""
    if ref.n != other.n:
        raise ValueError(f"{other.path} has {other.n} agents, {ref.path} {ref.n}: runs must share the world")
    if ref.actions != other.actions:
        raise ValueError(f"{other.path} has actions {other.actions}, {ref.path} {ref.actions}: runs must share the scenario")
    T = min(ref.ticks, other.ticks)
    A = len(ref.actions)
    s_ref, s_oth = shares(ref.decision[:T], ref.valid[:T], A), shares(other.decision[:T], other.valid[:T], A)
    per_tick = [jsd(s_ref[t], s_oth[t]) for t in range(T)]
    w1 = [wasserstein1(ref.channels[t][ref.valid[t], c], other.channels[t][other.valid[t], c])
          for t in range(T) for c in range(ref.channels.shape[2])]
    both = ref.valid[:T] & other.valid[:T]  # (T, N)
    overall_ref = shares(ref.decision[:T].reshape(1, -1), ref.valid[:T].reshape(1, -1), A)[0]
    overall_oth = shares(other.decision[:T].reshape(1, -1), other.valid[:T].reshape(1, -1), A)[0]
    t = T - 1
    ok = ref.valid[t] & other.valid[t]
    la = cluster_agents(_features(ref, t)[ok], clusters, seed)
    lb = cluster_agents(_features(other, t)[ok], clusters, seed)
    return {
        "decision_jsd_mean": float(np.mean(per_tick)), "decision_jsd_max": float(np.max(per_tick)),
        "decision_jsd_final": float(per_tick[-1]),
        "channel_w1_mean": float(np.nanmean(w1)),
        "tail_survival_min": tail_survival(overall_ref, overall_oth),
        "cluster_ari": adjusted_rand(la, lb),
        "cluster_centroid_distance": matched_centroid_distance(_features(ref, t)[ok], la, _features(other, t)[ok], lb),
        "agent_decision_agreement": float((ref.decision[:T] == other.decision[:T])[both].mean()) if both.any() else float("nan"),
        "channel_mae": float(np.abs(ref.channels[:T] - other.channels[:T])[both].mean()) if both.any() else float("nan"),
    }


def validate(teacher: str | Path, teacher_repeat: str | Path, student: str | Path, clusters: int = 4,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """`{metric: {"student": x, "floor": y, "ratio": x / y}}`."""
    ref, rep, stu = RunView.read(teacher), RunView.read(teacher_repeat), RunView.read(student)
    s, f = compare(ref, stu, clusters, seed), compare(ref, rep, clusters, seed)
    out = {}
    for k in METRICS:
        ratio = s[k] / f[k] if f[k] not in (0.0,) and not math.isnan(f[k]) and not math.isnan(s[k]) else float("nan")
        out[k] = {"student": s[k], "floor": f[k], "ratio": ratio}
    return out


def format_table(result: dict[str, dict[str, float]]) -> str:
    lines = ["| metric | better | student | noise floor | ratio |", "|---|---|---|---|---|"]
    for k, v in result.items():
        better = "higher" if k in HIGHER_IS_BETTER else "lower"
        f = lambda x: "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"  # noqa: E731
        lines.append(f"| {k} | {better} | {f(v['student'])} | {f(v['floor'])} | {f(v['ratio'])} |")
    lines.append("")
    lines.append("ratio = student / floor. Lower-is-better metrics: ≤ 1 is as faithful as the teacher's own repeat. "
                 "Higher-is-better (ARI, tail survival, agreement): ≥ 1 is parity.")
    return "\n".join(lines)


def write_json(result: dict[str, dict[str, float]], path: str | Path) -> None:
    clean = {k: {kk: (None if isinstance(vv, float) and math.isnan(vv) else vv) for kk, vv in v.items()} for k, v in result.items()}
    Path(path).write_text(json.dumps(clean, indent=1))
