"""Linear probes: can a target be read linearly off the student's state?

Every probe is fitted on a split *by agent* (an agent's ticks are all train or all test, so a
probe cannot memorise agents) and scored on the held-out agents: accuracy for classes
(logistic regression), R² for numbers (ridge); penalties are chosen by cross-validation over
the training agents. Beside it, the same probe fitted on labels
shuffled across the training rows and scored on the true held-out labels: what a probe of
this size finds in noise. Features are standardised on the training rows, so the
coefficients compare across dimensions: `top_dims` names the state dimensions that carry the
signal (the axes that encode the target).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lsm.society import seeds


@dataclass
class ProbeResult:
    target: str
    source: str
    """Which state the features come from: latent, channels, memory."""
    kind: str
    """classification (accuracy) or regression (R²)."""
    score: float
    shuffled: float
    """The same probe trained on shuffled labels, scored on the true held-out labels."""
    chance: float
    """Majority-class accuracy on the held-out rows (classification) or 0 (R²)."""
    n_train: int
    n_test: int
    top_dims: list[tuple[int, float]] = field(default_factory=list)
    """(dimension, standardised coefficient) with the largest |coefficient|."""

    @property
    def above_baseline(self) -> float:
        return self.score - max(self.shuffled, self.chance)


def split_by_agent(agents: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) over rows, whole agents on one side."""
    ids = np.unique(agents)
    rng = seeds.rng(seed, seeds.Stream.PROBE_SPLIT)
    test_ids = rng.choice(ids, size=max(1, int(round(len(ids) * test_fraction))), replace=False)
    test = np.isin(agents, test_ids)
    return ~test, test


def _choose_penalty(make, grid, x, y, groups, score, folds: int = 4):
    """The grid value with the best mean score over group folds (agents never straddle a fold)."""
    from sklearn.model_selection import GroupKFold

    k = min(folds, len(np.unique(groups)))
    if k < 2:
        return grid[len(grid) // 2]
    best, best_v = -np.inf, grid[len(grid) // 2]
    for v in grid:
        scores = []
        for tr, te in GroupKFold(n_splits=k).split(x, y, groups):
            if len(np.unique(y[tr])) < 2:
                continue
            scores.append(score(y[te], make(v).fit(x[tr], y[tr]).predict(x[te])))
        if scores and np.mean(scores) > best:
            best, best_v = float(np.mean(scores)), v
    return best_v


def fit_probe(x: np.ndarray, y: np.ndarray, agents: np.ndarray, kind: str, target: str, source: str,
              seed: int = 0, test_fraction: float = 0.3, top: int = 3) -> ProbeResult | None:
    """Fit one probe; None when there is nothing to learn (one class covering > 95 % of rows,
    a constant target, fewer than 4 agents). The penalty (ridge alpha, logistic C) is chosen
    by 4-fold cross-validation over the *training agents* (group folds), then refitted."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score

    ok = np.isfinite(x).all(1) & (np.isfinite(y) if kind == "regression" else np.ones(len(y), bool))
    x, y, agents = x[ok], y[ok], agents[ok]
    if len(np.unique(agents)) < 4 or len(y) == 0:
        return None
    if kind == "classification" and np.unique(y, return_counts=True)[1].max() > 0.95 * len(y):
        return None
    if kind == "regression" and np.var(y) == 0:
        return None
    train, test = split_by_agent(agents, test_fraction, seed)
    if train.sum() < 5 or test.sum() < 2:
        return None
    mu, sd = x[train].mean(0), x[train].std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    xs = (x - mu) / sd
    rng = seeds.rng(seed, seeds.Stream.PROBE_SHUFFLE)
    y_shuf = y[train][rng.permutation(train.sum())]
    g = agents[train]
    if kind == "classification":
        if len(np.unique(y[train])) < 2:
            return None

        def model(c):
            return LogisticRegression(max_iter=2000, C=c)

        def acc(a, b):
            return float((a == b).mean())

        grid = list(np.logspace(-3, 1, 5))
        m = model(_choose_penalty(model, grid, xs[train], y[train], g, acc)).fit(xs[train], y[train])
        score = acc(m.predict(xs[test]), y[test])
        shuffled = acc(model(_choose_penalty(model, grid, xs[train], y_shuf, g, acc)).fit(xs[train], y_shuf).predict(xs[test]),
                       y[test]) if len(np.unique(y_shuf)) > 1 else 0.0
        values, counts = np.unique(y[train], return_counts=True)
        chance = float((y[test] == values[counts.argmax()]).mean())
        coef = np.abs(m.coef_).max(0)  # strongest class direction per dimension
    else:
        def model(a):
            return Ridge(alpha=a)

        grid = list(np.logspace(-2, 5, 8))
        m = model(_choose_penalty(model, grid, xs[train], y[train], g, r2_score)).fit(xs[train], y[train])
        score = float(r2_score(y[test], m.predict(xs[test]))) if np.var(y[test]) > 0 else float("nan")
        shuffled = float(r2_score(y[test], model(_choose_penalty(model, grid, xs[train], y_shuf, g, r2_score))
                                  .fit(xs[train], y_shuf).predict(xs[test]))) if np.var(y[test]) > 0 else float("nan")
        chance = 0.0
        coef = np.abs(m.coef_)
    dims = np.argsort(-coef)[:top]
    return ProbeResult(target, source, kind, score, shuffled, chance, int(train.sum()), int(test.sum()),
                       [(int(d), float(coef[d])) for d in dims])
