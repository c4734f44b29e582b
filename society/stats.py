"""Paired comparisons: the total-variation distance between two distributions per row, and a
bootstrap interval with agents as the resampled unit. One rule for the teacher's sensitivity, the
student's ablations and the known-answer recovery.

Notation: A actions | B bootstrap resamples.
"""
from __future__ import annotations

import numpy as np

from lsm.society import seeds


def paired_tv(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(..., A) two distributions per row -> (...) total-variation distance ½ Σ |p - q|."""
    return 0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum(-1)


def bootstrap(values: np.ndarray, agents: np.ndarray, other: np.ndarray | None = None, resamples: int = 1000,
              seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high) of mean(values) -- or of mean(values) / mean(other) with `other` --
    with a 95 % percentile interval from resampling *agents* (all of a drawn agent's rows)."""
    values = np.asarray(values, np.float64)
    ids, inv = np.unique(agents, return_inverse=True)
    per_v = np.bincount(inv, weights=values, minlength=len(ids))
    count = np.bincount(inv, minlength=len(ids)).astype(np.float64)
    per_o = np.bincount(inv, weights=np.asarray(other, np.float64), minlength=len(ids)) if other is not None else None

    def est(w: np.ndarray) -> float:
        if per_o is not None:
            return float(w @ per_v) / max(float(w @ per_o), 1e-12)
        return float(w @ per_v) / max(float(w @ count), 1e-12)

    point = est(np.ones(len(ids)))
    rng = seeds.rng(seed, seeds.Stream.BOOTSTRAP)
    draws = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=resamples).astype(np.float64)  # (B, agents)
    boot = np.array([est(w) for w in draws])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


def agent_resamples(agents: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """((R,) each row's agent index into the distinct agents, (B, agents) bootstrap weights): the
    resamples `bootstrap` draws (the same stream and recipe), for figures `bootstrap` cannot
    express -- several estimates per resample, judged jointly (sums per agent: `per_agent`)."""
    ids, inv = np.unique(agents, return_inverse=True)
    rng = seeds.rng(seed, seeds.Stream.BOOTSTRAP)
    return inv, rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=resamples).astype(np.float64)


def per_agent(values: np.ndarray, inv: np.ndarray, agents: int) -> np.ndarray:
    """(R,) values of rows, (R,) their agent index -> (agents,) the sum over each agent's rows."""
    return np.bincount(inv, weights=np.asarray(values, np.float64), minlength=agents)


def crps(values: np.ndarray, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(..., L) support points, (..., L) their probabilities, (...) outcomes -> (...) the continuous
    ranked probability score E|X - y| - ½ E|X - X'| of the discrete forecast (0: a point mass on
    the outcome; in the outcome's units). A point forecast x is `values=x[..., None]`, `probs=1`: |x - y|."""
    v, p = np.asarray(values, np.float64), np.asarray(probs, np.float64)
    near = (p * np.abs(v - np.asarray(y, np.float64)[..., None])).sum(-1)
    if v.ndim == 1:  # one support for every row (rating levels): one (L, L) table of distances
        spread = np.einsum("...l,lm,...m->...", p, np.abs(v[:, None] - v[None]), p)
    else:
        v = np.broadcast_to(v, p.shape)
        spread = np.einsum("...l,...m,...lm->...", p, p, np.abs(v[..., :, None] - v[..., None, :]))
    return near - 0.5 * spread
