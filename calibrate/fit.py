"""Fitting the unknowns: Adam through the differentiable rollout, from several seeded starts, and
the gradient-free baselines on the same simulator (docs/calibrate.md#the-fit).

Every method calls `Simulator.evaluate`, one rollout per call; each records its evaluations
(values, loss, seconds) in order, so the report can say which reached what loss after how many
rollouts and seconds. Progress is saved after every rollout (`FitJournal`): a killed fit reruns
with the same command and goes on from where it was.

Notation: P unknowns | M observations | R restarts.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lsm.calibrate.relaxed import Simulator
from lsm.society import seeds

FINAL_LR = 0.02
"""Adam's step size decays along a cosine to this fraction of `lr` by a restart's last step: Adam's
steps are about lr in every coordinate whatever the gradient, so a well-determined unknown needs
small last steps to settle within its error."""
PRUNE_AT, PRUNE_FACTOR = 0.3, 2.0
"""After this share of the steps, Adam's restarts whose best loss is above this factor of the best
restart's stop (a start in a far valley spends no more rollouts)."""
METHODS = ("adam", "cmaes", "random")
"""`adam`: the gradient through the student; `cmaes`: CMA-ES (the `cma` library); `random`: uniform random search."""


@dataclass
class FitConfig:
    """How `lsm calibrate` fits (its options)."""

    method: str = "adam"
    baseline: str = "none"
    """A gradient-free method run on the same simulator and budget, for the report's comparison (`none`: skip)."""
    restarts: int = 3
    """Adam: seeded starting points in the box; the best fit is kept, the spread reported."""
    steps: int = 30
    """Adam: steps per restart (one differentiable rollout each)."""
    lr: float = 0.3
    """Adam's step size in the reparameterised φ (0.3 moves a value ~7 % of its range at the centre),
    decayed along a cosine to `FINAL_LR` of it by the last step of each restart."""
    budget: int = 0
    """Rollouts of a gradient-free method (0: as many as Adam's restarts × steps)."""
    seed: int = 0
    """Seed of the starting points and the gradient-free draws (the rollouts' own seed is `--seed` of the rollout)."""


@dataclass
class Trace:
    """One method's evaluations, in order."""

    method: str
    values: list[list[float]] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    restart: list[int] = field(default_factory=list)
    """Adam: the restart of each evaluation (gradient-free: 0)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Adam: the current restart's φ and optimiser moments (what a resumed fit continues from)."""

    @property
    def best(self) -> tuple[float, np.ndarray]:
        k = int(np.argmin(self.loss))
        return self.loss[k], np.array(self.values[k])

    def best_so_far(self) -> np.ndarray:
        return np.minimum.accumulate(np.array(self.loss)) if self.loss else np.zeros(0)

    def rollouts_to(self, loss: float) -> int | None:
        """The number of rollouts after which this method's best loss was ≤ `loss` (None: never)."""
        hit = np.nonzero(self.best_so_far() <= loss)[0]
        return int(hit[0]) + 1 if len(hit) else None

    def restart_bests(self) -> list[tuple[float, list[float]]]:
        """Adam: the best (loss, values) of each restart that ran every step (not pruned)."""
        out = []
        counts = {r: self.restart.count(r) for r in set(self.restart) if r >= 0}  # -1: the Gauss-Newton step after them
        for r in sorted(r for r, c in counts.items() if c == max(counts.values())):
            ks = [k for k, x in enumerate(self.restart) if x == r]
            k = min(ks, key=lambda k: self.loss[k])
            out.append((self.loss[k], self.values[k]))
        return out


class FitJournal:
    """The fit's progress, saved after every rollout as JSON (`<out>/progress.json`): the traces
    of each method and the fingerprint of the inputs (a changed input starts over)."""

    def __init__(self, path: Path, fingerprint: str, restart: bool = False):
        self.path, self.fingerprint = path, fingerprint
        self.traces: dict[str, Trace] = {}
        if path.is_file() and not restart:
            data = json.loads(path.read_text())
            if data.get("fingerprint") == fingerprint:
                self.traces = {k: Trace(**v) for k, v in data["traces"].items()}

    def trace(self, method: str) -> Trace:
        return self.traces.setdefault(method, Trace(method))

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "traces": {k: asdict(v) for k, v in self.traces.items()}}))
        os.replace(tmp, self.path)


Tick = Callable[[str], None]
"""`tick(postfix)`: called after every rollout (the progress bar)."""


def start_points(sim: Simulator, restarts: int, seed: int) -> list[np.ndarray]:
    """R starting values, uniform in the middle 80 % of each unknown's box (seeded per restart)."""
    lo, hi = sim.space.lo.numpy(), sim.space.hi.numpy()
    out = []
    for r in range(restarts):
        u = seeds.rng(seed, seeds.Stream.CALIBRATE_START, r).uniform(0.1, 0.9, len(lo))
        out.append(lo + (hi - lo) * u)
    return out


def alive_after(tr: Trace, restarts: int, step: int, steps: int) -> list[int]:
    """The restarts still run at `step`: all of them until `PRUNE_AT` of the steps, then those
    whose best loss by then is within `PRUNE_FACTOR` of the best restart's (one rule, so a resumed
    fit prunes as the first run did)."""
    if step < int(PRUNE_AT * steps):
        return list(range(restarts))
    first = int(PRUNE_AT * steps)
    best = {r: min((lo for lo, x, k in zip(tr.loss, tr.restart, _steps(tr)) if x == r and k < first), default=math.inf)
            for r in range(restarts)}
    top = min(best.values())
    return [r for r in range(restarts) if best[r] <= PRUNE_FACTOR * top]


def _steps(tr: Trace) -> list[int]:
    """Each evaluation's step within its restart."""
    count: dict[int, int] = {}
    out = []
    for r in tr.restart:
        out.append(count.get(r, 0))
        count[r] = out[-1] + 1
    return out


def fit_adam(sim: Simulator, cfg: FitConfig, journal: FitJournal, tick: Tick | None = None) -> Trace:
    """Adam over φ (θ = lo + (hi − lo)·sigmoid(φ)), one differentiable rollout per step, from
    `cfg.restarts` seeded starts run in turn (a step of each, then the next step); after
    `PRUNE_AT` of the `cfg.steps`, restarts far behind the best stop (`alive_after`)."""
    tr = journal.trace("adam")
    space = sim.space
    phis, opts = [], []
    for r, start in enumerate(start_points(sim, cfg.restarts, cfg.seed)):
        phi = torch.nn.Parameter(space.phi(start).clone())
        opt = torch.optim.Adam([phi], lr=cfg.lr)
        saved = tr.state.get(str(r))
        if saved:  # resume this restart where it was
            phi.data = torch.tensor(saved["phi"], dtype=torch.float64)
            opt.load_state_dict(_opt_state(saved["opt"]))
        phis.append(phi)
        opts.append(opt)
    for step in range(cfg.steps):
        for r in alive_after(tr, cfg.restarts, step, cfg.steps):
            if sum(1 for x in tr.restart if x == r) > step:
                continue  # done before a resume
            phi, opt = phis[r], opts[r]
            t0 = time.perf_counter()
            for group in opt.param_groups:  # cosine decay: big moves first, then settle
                group["lr"] = cfg.lr * (FINAL_LR + (1 - FINAL_LR) * 0.5 * (1 + math.cos(math.pi * step / max(cfg.steps - 1, 1))))
            opt.zero_grad()
            theta = space.values(phi)  # (P,)
            ev = sim.evaluate(theta.detach().numpy(), theta=theta)
            ev.loss.backward()
            opt.step()
            tr.values.append(ev.values.tolist())
            tr.loss.append(ev.loss.item())
            tr.seconds.append(time.perf_counter() - t0)  # the rollout and its backward pass
            tr.restart.append(r)
            tr.state[str(r)] = {"phi": phi.detach().tolist(), "opt": _opt_json(opt.state_dict())}
            journal.save()
            if tick is not None:
                tick(f"adam step {step + 1}/{cfg.steps} of restart {r + 1}/{cfg.restarts}, loss {ev.loss.item():.4g}")
    return tr


def _opt_json(state: dict) -> dict:
    return {"state": {str(k): {n: (v.tolist() if torch.is_tensor(v) else v) for n, v in s.items()} for k, s in state["state"].items()},
            "param_groups": state["param_groups"]}


def _opt_state(data: dict) -> dict:
    return {"state": {int(k): {n: torch.tensor(v, dtype=torch.float64 if n != "step" else torch.float32) for n, v in s.items()}
                      for k, s in data["state"].items()}, "param_groups": data["param_groups"]}


def fit_gradient_free(sim: Simulator, method: str, budget: int, seed: int, journal: FitJournal,
                      tick: Tick | None = None) -> Trace:
    """`budget` forward rollouts of `method` (`cmaes`: CMA-ES in the unit box, σ₀ 0.3, the
    library's population size; `random`: uniform points). Resumes by replaying the recorded
    evaluations: both methods draw their points from a seeded generator, so the replay asks
    for the same points and is told the same losses."""
    tr = journal.trace(method)
    space = sim.space
    lo, hi = space.lo.numpy(), space.hi.numpy()
    recorded = list(zip(tr.values, tr.loss))
    k = 0

    def evaluate(unit: np.ndarray) -> float:
        nonlocal k
        values = lo + (hi - lo) * np.clip(unit, 0, 1)
        if k < len(recorded):
            k += 1
            return recorded[k - 1][1]
        with torch.no_grad():
            ev = sim.evaluate(values)
        tr.values.append(values.tolist())
        tr.loss.append(float(ev.loss))
        tr.seconds.append(ev.seconds)
        tr.restart.append(0)
        journal.save()
        k += 1
        if tick is not None:
            tick(f"{method}, loss {float(ev.loss):.4g}")
        return float(ev.loss)

    if method == "random":
        rng = seeds.rng(seed, seeds.Stream.CALIBRATE_SEARCH, 0)
        for _ in range(budget):
            evaluate(rng.uniform(0, 1, len(lo)))
        return tr
    if method != "cmaes":
        raise ValueError(method)
    import cma  # noqa: PLC0415 (only the CMA-ES baseline needs it)

    seed_cma = int(seeds.rng(seed, seeds.Stream.CALIBRATE_SEARCH, 1).integers(1, 2**31 - 1))
    es = cma.CMAEvolutionStrategy(np.full(len(lo), 0.5), 0.3, {"bounds": [0, 1], "seed": seed_cma, "verbose": -9})
    used = 0
    while used < budget:
        xs = es.ask()
        xs = xs[: budget - used]
        fs = [evaluate(np.asarray(x)) for x in xs]
        used += len(xs)
        if len(xs) == es.popsize:
            es.tell(xs, fs)
    return tr


def run_methods(sim: Simulator, cfg: FitConfig, journal: FitJournal, tick: Tick | None = None) -> dict[str, Trace]:
    """The main method and, if asked, the baseline with the same number of rollouts."""
    out: dict[str, Trace] = {}
    if cfg.method == "adam":
        out["adam"] = fit_adam(sim, cfg, journal, tick)
    budget = cfg.budget or cfg.restarts * cfg.steps
    for m in dict.fromkeys([cfg.method, cfg.baseline]):
        if m in ("cmaes", "random"):
            out[m] = fit_gradient_free(sim, m, budget, cfg.seed, journal, tick)
    return out


def total_rollouts(cfg: FitConfig) -> int:
    """The most rollouts the methods run (Adam's pruned restarts run fewer)."""
    budget = cfg.budget or cfg.restarts * cfg.steps
    n = cfg.restarts * cfg.steps if cfg.method == "adam" else budget
    return n + (budget if cfg.baseline in ("cmaes", "random") and cfg.baseline != cfg.method else 0)


SEED_REFITS = 8
"""Rollout seeds of the uncertainty's simulation part (one forward rollout each)."""


@dataclass
class Uncertainty:
    """The fit's uncertainty, in two parts that add: the observations' errors (the sandwich
    covariance of the weighted least squares at the fit) and the simulation's own randomness
    (the fit redone, linearised, with other random numbers)."""

    sd: np.ndarray
    """(P,) standard deviations of the values (both parts)."""
    cov: np.ndarray
    """(P, P) both parts."""
    cov_observed: np.ndarray
    """(P, P) from the observations' standard errors."""
    cov_seed: np.ndarray
    """(P, P) from the rollout's random numbers."""
    jacobian: np.ndarray
    """(M, P) d expected series / d values (central differences)."""
    series_sd: np.ndarray
    """(M,) the expected series' sd from the values' uncertainty."""


def uncertainty(sim: Simulator, values: np.ndarray, seed: int, step: float = 0.02, tick: Tick | None = None) -> Uncertainty:
    """The Jacobian J by central differences (`step` of each range, one-sided at a bound; 2P
    forward rollouts with the fit's random numbers), the Gauss–Newton map A = (JᵀWJ)⁻¹JᵀW with W
    the loss's inverse variances, then:

    - the observations' part, A diag(se²) Aᵀ;
    - the simulation's part: the covariance of values + A (y − f_s(values)) over `SEED_REFITS`
      other rollout seeds s (drawn from `seed`): the fit redone, to first order, with other draws.
      The errors of one run are correlated across ticks (the same agents carry their draws), so
      treating them as independent, as a plain Laplace approximation does, would understate this."""
    lo, hi = sim.space.lo.numpy(), sim.space.hi.numpy()
    cols = []
    for j in range(len(values)):
        h = step * (hi[j] - lo[j])
        up, dn = values.copy(), values.copy()
        up[j] = min(values[j] + h, hi[j])
        dn[j] = max(values[j] - h, lo[j])
        with torch.no_grad():
            a = sim.evaluate(up).expected.numpy()
            b = sim.evaluate(dn).expected.numpy()
        cols.append((a - b) / max(up[j] - dn[j], 1e-12))
        if tick is not None:
            tick(f"uncertainty: slope {j + 1}/{len(values)}")
    J = np.stack(cols, 1)  # (M, P)
    with torch.no_grad():
        here = sim.evaluate(values).expected
    w = 1 / sim.variance(here).numpy()  # (M,)
    A = np.linalg.pinv(J.T @ (w[:, None] * J)) @ (J.T * w)  # (P, M)
    cov_obs = A @ np.diag(sim.se.numpy() ** 2) @ A.T
    y = sim.observed.numpy()
    refits = []
    for s in seeds.rng(seed, seeds.Stream.CALIBRATE_SEARCH, 2).integers(1_000, 2**31 - 1, SEED_REFITS):
        with torch.no_grad():
            f = sim.evaluate(values, seed=int(s)).expected.numpy()
        refits.append(np.clip(values + A @ (y - f), lo, hi))
        if tick is not None:
            tick(f"uncertainty: refit {len(refits)}/{SEED_REFITS}")
    cov_seed = np.atleast_2d(np.cov(np.array(refits).T))
    cov = cov_obs + cov_seed
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    series_sd = np.sqrt(np.clip(np.einsum("mp,pq,mq->m", J, cov, J), 0, None))
    return Uncertainty(sd, cov, cov_obs, cov_seed, J, series_sd)


def polish(sim: Simulator, values: np.ndarray, unc: Uncertainty, trace: Trace, tick: Tick | None = None) -> tuple[np.ndarray, bool]:
    """One Gauss–Newton step from the fit with the uncertainty's Jacobian, δ = (JᵀWJ)⁻¹ JᵀW (y − f),
    kept inside the bounds and taken only if one more rollout says the loss went down: Adam's
    last steps are about lr/50 in every coordinate, coarse for an unknown the data pin down to a
    few thousandths of its range. Returns (values, whether the step was taken); the rollout is
    recorded in `trace`."""
    lo, hi = sim.space.lo.numpy(), sim.space.hi.numpy()
    with torch.no_grad():
        here = sim.evaluate(values)
        w = 1 / sim.variance(here.expected).numpy()
        r = sim.observed.numpy() - here.expected.numpy()
        J = unc.jacobian
        step = np.linalg.lstsq(J.T @ (w[:, None] * J), J.T @ (w * r), rcond=None)[0]
        new = np.clip(values + step, lo, hi)
        t0 = time.perf_counter()
        ev = sim.evaluate(new)
    trace.values.append(new.tolist())
    trace.loss.append(ev.loss.item())
    trace.seconds.append(time.perf_counter() - t0)
    trace.restart.append(-1)
    if tick is not None:
        tick(f"Gauss-Newton step, loss {ev.loss.item():.4g}")
    return (new, True) if ev.loss.item() < here.loss.item() else (values, False)
