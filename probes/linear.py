"""Linear probes: can a target be read linearly off the student's state?

Every probe is fitted on a split *by agent* (an agent's ticks are all train or all test, so a
probe cannot memorise agents) and scored on the held-out agents: accuracy for classes
(logistic regression, C = 0.5), R² for numbers (ridge, penalty by leave-one-out). Beside it, the same probe fitted on labels
shuffled across the training rows and scored on the true held-out labels: what a probe of
this size finds in noise. Features are standardised on the training rows, so the
coefficients compare across dimensions: `top_dims` names the state dimensions that carry the
signal (the axes that encode the target).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    rng = np.random.default_rng(seed)
    test_ids = rng.choice(ids, size=max(1, int(round(len(ids) * test_fraction))), replace=False)
    test = np.isin(agents, test_ids)
    return ~test, test


def fit_probe(x: np.ndarray, y: np.ndarray, agents: np.ndarray, kind: str, target: str, source: str,
              seed: int = 0, test_fraction: float = 0.3, top: int = 3) -> ProbeResult | None:
    """Fit one probe; None when the split leaves nothing to learn (a single class, too few rows)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import r2_score

    ok = np.isfinite(x).all(1) & (np.isfinite(y) if kind == "regression" else np.ones(len(y), bool))
    x, y, agents = x[ok], y[ok], agents[ok]
    if len(np.unique(agents)) < 4:
        return None
    train, test = split_by_agent(agents, test_fraction, seed)
    if train.sum() < 5 or test.sum() < 2:
        return None
    mu, sd = x[train].mean(0), x[train].std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    xs = (x - mu) / sd
    rng = np.random.default_rng(seed + 1)
    y_shuf = y[train][rng.permutation(train.sum())]
    if kind == "classification":
        if len(np.unique(y[train])) < 2:
            return None

        def model():
            return LogisticRegression(max_iter=2000, C=0.5)

        m = model().fit(xs[train], y[train])
        score = float((m.predict(xs[test]) == y[test]).mean())
        shuffled = float((model().fit(xs[train], y_shuf).predict(xs[test]) == y[test]).mean()) if len(np.unique(y_shuf)) > 1 else 0.0
        values, counts = np.unique(y[train], return_counts=True)
        chance = float((y[test] == values[counts.argmax()]).mean())
        coef = np.abs(m.coef_).max(0)  # strongest class direction per dimension
    else:
        def ridge():  # penalty chosen by leave-one-out on the training rows
            return RidgeCV(alphas=np.logspace(-2, 4, 13))

        m = ridge().fit(xs[train], y[train])
        score = float(r2_score(y[test], m.predict(xs[test]))) if np.var(y[test]) > 0 else float("nan")
        shuffled = float(r2_score(y[test], ridge().fit(xs[train], y_shuf).predict(xs[test]))) if np.var(y[test]) > 0 else float("nan")
        chance = 0.0
        coef = np.abs(m.coef_)
    dims = np.argsort(-coef)[:top]
    return ProbeResult(target, source, kind, score, shuffled, chance, int(train.sum()), int(test.sum()),
                       [(int(d), float(coef[d])) for d in dims])
