"""The body of `lsm calibrate`: fit a scenario's unknowns to observed aggregates through a
student, write the fitted scenario and the report, and return the results with the text the
command prints (docs/calibrate.md)."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsm.calibrate.fit import METHODS, SEED_REFITS, FitConfig, FitJournal, Trace, Uncertainty, polish, uncertainty, run_methods, total_rollouts
from lsm.calibrate.observed import Observation, load_observed
from lsm.calibrate.params import ParamSpace, parse_params
from lsm.calibrate.relaxed import Simulator
from lsm.calibrate.report import (comparison, intervals, plot_loss, plot_series, values_table, write_json, write_scenario,
                                  write_series)
from lsm.config import UsageError, resolve_config
from lsm.infer.rollout import RolloutConfig
from lsm.model.checkpoint import Student, load_checkpoint
from lsm.society.loop.journal import fingerprint
from lsm.society.scenario import Scenario, load_scenario
from lsm.society.world import World, load_world


@dataclass
class Calibration:
    """What a fit found (`fit.json` holds the same)."""

    space: ParamSpace
    values: np.ndarray
    """(P,) the best fit's values."""
    uncertainty: Uncertainty | None
    traces: dict[str, Trace]
    fitted: np.ndarray
    """(M,) the expected series at the fit."""
    drawn: np.ndarray
    """(M,) the drawn series at the fit (what `lsm rollout` of the fitted scenario with the same seed holds)."""
    observations: list[Observation]
    summary: dict[str, Any]
    text: str = ""


def max_rss_gib() -> float:
    """This process's peak resident memory so far, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def check_options(cfg: FitConfig, space: ParamSpace) -> None:
    if cfg.method not in METHODS:
        raise UsageError(f"--method {cfg.method!r}: one of {', '.join(METHODS)}")
    if cfg.baseline not in ("none", "cmaes", "random"):
        raise UsageError(f"--baseline {cfg.baseline!r}: none, cmaes or random")
    if cfg.restarts < 1 or cfg.steps < 1 or cfg.budget < 0 or not cfg.lr > 0:
        raise UsageError(f"--restarts {cfg.restarts}, --steps {cfg.steps}: at least 1; --budget {cfg.budget}: 0 or more; "
                         f"--lr {cfg.lr}: above 0")
    if cfg.method == "adam" and not space.differentiable:
        fixed = [p.path for p in space.params if not p.differentiable]
        raise UsageError(f"--fit names {', '.join(fixed)}, which change who sees or hears whom (discrete draws): the rollout "
                         "is not differentiable in them. Fit them with --method cmaes or --method random, or leave them out.")


def calibrate(student: Student, world: World, scenario: Scenario, observations: list[Observation], space: ParamSpace,
              cfg: FitConfig, out: Path, rollout_seed: int = 0, device: str = "cpu", quiet: bool = False,
              restart: bool = False, inputs: tuple[str | Path, ...] = (), scenario_text: str = "",
              truth: np.ndarray | None = None, truth_series: np.ndarray | None = None) -> Calibration:
    """Fit, then write into `out`: `fitted_scenario.yaml` (and `fitted_neighbors.yaml` where a tie
    weight was fitted), `fit.json`, `series.csv`, `fit.png`, `loss.png`, `report.md`;
    `progress.json` keeps every rollout's result, so the same call resumes a killed fit."""
    from tqdm import tqdm  # noqa: PLC0415 (the bar only)

    check_options(cfg, space)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    sim = Simulator(student, world, scenario, space, observations, RolloutConfig(seed=rollout_seed, device=device))
    texts = [scenario_text or repr(sim.base_data), repr(space.params), repr(observations), repr(asdict(cfg)),
             repr(rollout_seed), repr(sim.cfg.neighbors)]
    journal = FitJournal(out / "progress.json", fingerprint(list(inputs), texts), restart)
    P = len(space)
    bar = tqdm(total=total_rollouts(cfg) + 2 * (2 * P + 1 + SEED_REFITS) + 2, unit="rollout", disable=quiet, file=sys.stderr, dynamic_ncols=True,
               desc=f"calibrate {scenario.name} ({world.n:,} agents)")
    bar.update(sum(len(t.loss) for t in journal.traces.values()))

    def tick(postfix: str) -> None:
        bar.update(1)
        bar.set_postfix_str(postfix)

    traces = run_methods(sim, cfg, journal, tick)
    t_fit = time.perf_counter() - t_start
    main = traces[cfg.method]
    best_loss, values = main.best
    t0 = time.perf_counter()
    unc = uncertainty(sim, values, cfg.seed, tick=tick)
    polished = False
    if cfg.method == "adam":
        values, polished = polish(sim, values, unc, main, tick)
        if polished:
            unc = uncertainty(sim, values, cfg.seed, tick=tick)
            best_loss = min(main.loss)
    with torch.no_grad():
        final = sim.evaluate(values)
    tick("done")
    bar.close()
    t_unc = time.perf_counter() - t0
    ci = intervals(space, values, unc)
    summary: dict[str, Any] = {
        "agents": world.n, "ticks": sim.ticks, "observations": len(observations), "unknowns": space.names,
        "method": cfg.method, "config": asdict(cfg), "rollout_seed": rollout_seed,
        "values": {p.path: float(v) for p, v in zip(space.params, values)},
        "sd": {p.path: float(s) for p, s in zip(space.params, unc.sd)},
        "sd_observed": {p.path: float(np.sqrt(max(unc.cov_observed[j, j], 0))) for j, p in enumerate(space.params)},
        "sd_seed": {p.path: float(np.sqrt(max(unc.cov_seed[j, j], 0))) for j, p in enumerate(space.params)},
        "interval95": {p.path: list(c) if c else None for p, c in zip(space.params, ci)},
        "correlation": _correlation(unc.cov).tolist(),
        "polished": polished, "best_loss": best_loss, "loss_at_fit": float(final.loss), "chi2_per_observation": 2 * float(final.loss) / len(observations),
        "restarts": [{"loss": lo, "values": v} for lo, v in main.restart_bests()] if cfg.method == "adam" else None,
        "comparison": comparison(traces), "seconds": {"fit": round(t_fit, 2), "uncertainty": round(t_unc, 2),
                                                      "per_rollout": {m: round(float(np.mean(t.seconds)), 3) for m, t in traces.items() if t.seconds}},
        "peak_memory_gib": round(max_rss_gib(), 2),
    }
    if truth is not None:
        summary["truth"] = {p.path: float(v) for p, v in zip(space.params, truth)}
    header = (f"Fitted by lsm calibrate ({cfg.method}) to {len(observations)} observations, {world.n:,} agents, seed {rollout_seed}.\n"
              + "\n".join(f"{p.path} = {v:.4f} (95 % interval {c[0]:.4f} .. {c[1]:.4f})" if c else f"{p.path} = {v:.4f}"
                          for p, v, c in zip(space.params, values, ci)))
    write_scenario(out / "fitted_scenario.yaml", space.scenario_data(sim.base_data, values), header)
    if any(p.kind == "tie_weight" for p in space.params):
        assert sim.cfg.neighbors is not None
        write_scenario(out / "fitted_neighbors.yaml", {"neighbors": asdict(space.rule(sim.cfg.neighbors, values))},
                       header + "\nUse with lsm rollout --neighbors fitted_neighbors.yaml")
    write_series(out / "series.csv", observations, final.expected.numpy(), final.drawn, unc)
    plot_series(out / "fit.png", observations, final.expected.numpy(), unc, f"{scenario.name}: observed vs fitted ({cfg.method})",
                truth=truth_series)
    plot_loss(out / "loss.png", traces)
    write_json(out / "fit.json", summary)
    restarts = main.restart_bests() if cfg.method == "adam" else None
    text = [f"calibrated {P} unknown{'s' if P != 1 else ''} of {scenario.name} to {len(observations)} observations "
            f"on {world.n:,} agents ({cfg.method}; loss {best_loss:.4g}, χ²/observation {summary['chi2_per_observation']:.3g})",
            values_table(space, values, unc, truth, restarts)]
    for m, c in summary["comparison"].items():
        line = f"{m}: {c['rollouts']} rollouts, {c['seconds']} s, best loss {c['best_loss']}"
        if "adam_rollouts_to_its_best" in c:
            k = c["adam_rollouts_to_its_best"]
            line += (f"; adam reached it after {k} rollouts ({c['rollout_ratio']:.2f} of {m}'s, {c['adam_seconds_to_its_best']} s)"
                     if k else "; adam never reached it")
        text.append(line)
    text.append(f"time: fit {t_fit:.1f} s, uncertainty {t_unc:.1f} s; peak memory {summary['peak_memory_gib']} GiB")
    text.append(f"wrote {out}/fitted_scenario.yaml (lsm rollout takes it), fit.json, series.csv, fit.png, loss.png, report.md")
    cal = Calibration(space, values, unc, traces, final.expected.numpy(), final.drawn, observations, summary, "\n".join(text))
    write_report(out / "report.md", cal, scenario, cfg)
    return cal


def _correlation(cov: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return np.round(cov / np.outer(sd, sd), 3)


def write_report(path: Path, cal: Calibration, scenario: Scenario, cfg: FitConfig) -> None:
    s = cal.summary
    lines = [f"# Calibration of {scenario.name}", "",
             f"{s['observations']} observations, {s['agents']:,} agents, {s['ticks']} ticks; method {cfg.method}"
             + (f" ({cfg.restarts} restarts × {cfg.steps} steps, lr {cfg.lr})" if cfg.method == "adam" else "")
             + f"; rollout seed {s['rollout_seed']}.", "",
             "## Fitted values", "", values_table(cal.space, cal.values, cal.uncertainty,
                                                 np.array(list(s["truth"].values())) if "truth" in s else None,
                                                 cal.traces[cfg.method].restart_bests() if cfg.method == "adam" else None), "",
             "The sd and 95 % intervals add two parts: the observations' standard errors (the weighted least squares' "
             "sandwich covariance at the fit) and the rollout's own randomness (the fit redone to first order with "
             f"{SEED_REFITS} other rollout seeds); the restart spread is the range of the restarts' own best values.", "",
             f"χ² per observation at the fit: {s['chi2_per_observation']:.3g} (about 1 where the model fits within the "
             "observations' errors).", "", "## Methods", "", "| method | rollouts | seconds | best loss |", "|---|---|---|---|"]
    for m, c in s["comparison"].items():
        lines.append(f"| {m} | {c['rollouts']} | {c['seconds']} | {c['best_loss']} |")
    lines += ["", "![observed vs fitted](fit.png)", "", "![loss](loss.png)", ""]
    path.write_text("\n".join(lines))


def run_calibrate(ckpt: str | Path, world: str | Path, scenario: str | Path, observed: str | Path, fit: str, out: str | Path,
                  cfg: FitConfig, seed: int = 0, device: str = "cpu", quiet: bool = False, restart: bool = False) -> Calibration:
    """`lsm calibrate`: load and check every input before any work, then `calibrate`."""
    student = load_checkpoint(ckpt)
    if student.vocab is None:
        raise UsageError(f"{student.path} has no identity vocabulary (trained before it was stored); retrain it")
    w = load_world(world)
    student.check_world(w.population, str(world))
    sc_path = resolve_config(scenario, "scenarios")
    sc = load_scenario(sc_path)
    if not Path(observed).is_file():
        raise UsageError(f"--observed {observed}: no such file")
    obs = load_observed(observed, sc, w.population)
    space = ParamSpace(parse_params(fit, sc, w.population))
    check_options(cfg, space)
    files = [f for f in (_ckpt_file(student), world, observed) if f]
    return calibrate(student, w, sc, obs, space, cfg, Path(out), seed, device, quiet, restart, tuple(files), Path(sc_path).read_text())


def _ckpt_file(student: Student) -> Path | None:
    p = Path(student.path)
    return p if p.is_file() else None
