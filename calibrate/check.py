"""`lsm calibrate --check`: the calibrator on a known answer (docs/calibrate.md#the-known-answer-check).

A truth with hidden values of the unknowns plays the scenario on the world twice (two seeds):
the planted society (`--truth planted`, for a student trained on its traces, e.g. by `lsm
recovery`) or the student itself (`--truth student`: the calibrator's own part, with the
student's faithfulness taken out). Only the first run's aggregates reach the calibrator, as an
observation file with the standard errors of its group sizes; the second run is the truth's
own seed-to-seed floor. Scored: each fitted value against the true one (with its interval), and
the fitted run's series against the truth's, in units of that floor.

Notation: T ticks | N agents | C channels | M observations | P unknowns.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsm.calibrate.fit import FitConfig
from lsm.calibrate.observed import Observation, group_weights, share_se, write_observed
from lsm.calibrate.params import ParamSpace, parse_params, parse_values, scenario_dict
from lsm.calibrate.relaxed import drawn_series
from lsm.calibrate.report import intervals, write_json
from lsm.calibrate.run import Calibration, calibrate, check_options
from lsm.config import UsageError, load_config, resolve_config
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.policy import PlantedSociety
from lsm.infer.rollout import Rollout, RolloutConfig
from lsm.model.checkpoint import Student, load_checkpoint
from lsm.society import seeds
from lsm.society.loop.runner import SocietyLoop
from lsm.society.scenario import Scenario, load_scenario
from lsm.society.world import World, load_world

TRUTH_SEEDS = (101, 102)
"""The truth's two runs (the observed one, and its floor); the fit's own rollouts use `--seed`."""
TOLERANCE = {"event": 0.1, "offset": 0.15, "exposure": 0.1, "tie_weight": 0.25}
"""The check's goal for each kind of unknown: |fitted − true| within this (or the truth inside the fit's 95 % interval)."""
FLOOR_GOAL = 1.5
"""The fitted run's series may differ from the truth's by at most this many times the truth's own seed-to-seed floor."""


def truth_runs(truth: str, student: Student, world: World, scenario: Scenario, planted: PlantedConfig | None,
               ticks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The truth's runs at `TRUTH_SEEDS`: (T, N) decisions and (T, N, C) channels each."""
    out = []
    for s in TRUTH_SEEDS:
        decisions, channels = [], []
        if truth == "planted":
            assert planted is not None
            pol = PlantedSociety(planted, scenario, world.population, world.graph, s, s)
            loop = SocietyLoop(pol, scenario, world.population, world.graph, s, planted.neighbors, ticks)
            for rec in loop.ticks():
                decisions.append(rec.data["decision"].astype(np.int64))
                channels.append(rec.data["channels"])
        else:
            for res in Rollout(student, world, scenario, RolloutConfig(seed=s, ticks=ticks)).ticks():
                decisions.append(res.data["decision"].astype(np.int64))
                channels.append(res.data["channels"])
        out.append((np.stack(decisions), np.stack(channels)))
    return out


def observation_plan(scenario: Scenario, space: ParamSpace, ticks: int) -> list[Observation]:
    """What the check observes at every tick: the cumulative share of the first action and each
    action's share, overall, and the share of each fitted offset's action in its group."""
    first = scenario.actions.labels[0]
    rows = []
    for t in range(ticks):
        rows.append(Observation(t, "cumulative_share", first, "", 0.0, 1.0))
        rows += [Observation(t, "share", a, "", 0.0, 1.0) for a in scenario.actions.labels]
        rows += [Observation(t, "share", p.name, p.group, 0.0, 1.0) for p in space.params if p.kind == "offset" and p.group]
    return list(dict.fromkeys(rows))


@dataclass
class CheckResult:
    calibration: Calibration
    truth: np.ndarray
    rows: list[dict[str, Any]]
    floor: float
    error: float
    text: str


def run_check(ckpt: str | Path, world: str | Path, scenario: str | Path, fit: str, out: str | Path, cfg: FitConfig,
              truth: str = "planted", planted: str = "planted", true: str | None = None, seed: int = 0,
              device: str = "cpu", quiet: bool = False, restart: bool = False) -> CheckResult:
    """The known-answer check (module docstring); writes `observed.csv`, the calibration's files
    and `check.json` into `out`."""
    if truth not in ("planted", "student"):
        raise UsageError(f"--truth {truth!r}: planted or student")
    student = load_checkpoint(ckpt)
    w = load_world(world)
    student.check_world(w.population, str(world))
    sc = load_scenario(resolve_config(scenario, "scenarios"))
    space = ParamSpace(parse_params(fit, sc, w.population))
    check_options(cfg, space)
    pcfg = load_config(PlantedConfig, resolve_config(planted, "teacher"), kind="planted society config") if truth == "planted" else None
    if true is not None:
        values = parse_values(true, space)
    else:
        u = seeds.rng(seed, seeds.Stream.CALIBRATE_TRUTH).uniform(0.15, 0.85, len(space))
        values = space.lo.numpy() + (space.hi - space.lo).numpy() * u
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    true_sc = space.scenario(scenario_dict(sc), values, source="<the check's truth>")
    ticks = sc.ticks
    runs = truth_runs(truth, student, w, true_sc, pcfg, ticks)
    plan = observation_plan(sc, space, ticks)
    groups, weights, sizes = group_weights(plan, w.population)
    series = [drawn_series(plan, weights, groups, d, c, true_sc) for d, c in runs]  # 2 × (M,)
    obs = [Observation(o.tick, o.metric, o.target, o.group, float(v), share_se(float(v), sizes[groups.index(o.group)]))
           for o, v in zip(plan, series[0])]
    write_observed(out / "observed.csv", obs)
    cal = calibrate(student, w, sc, obs, space, cfg, out, seed, device, quiet, restart,
                    inputs=tuple(f for f in (Path(student.path), Path(world)) if f.is_file()),
                    scenario_text=repr(scenario_dict(sc)) + repr(values.tolist()) + truth, truth=values, truth_series=series[1])
    floor = float(np.sqrt(np.mean((series[0] - series[1]) ** 2)))
    error = float(np.sqrt(np.mean((cal.drawn - series[0]) ** 2)))
    ci = intervals(space, cal.values, cal.uncertainty)
    rows: list[dict[str, Any]] = []
    assert cal.uncertainty is not None
    for j, p in enumerate(space.params):
        err = float(cal.values[j] - values[j])
        iv = ci[j]
        inside = iv is not None and iv[0] <= values[j] <= iv[1]
        rows.append({"unknown": p.path, "true": float(values[j]), "fitted": float(cal.values[j]),
                     "interval95": list(iv) if iv is not None else None, "error": err,
                     "z": err / max(float(cal.uncertainty.sd[j]), 1e-12), "tolerance": TOLERANCE[p.kind],
                     "within_tolerance": abs(err) <= TOLERANCE[p.kind], "truth_in_interval": bool(inside)})
    result = {"truth": truth, "agents": w.n, "true": space.truth_text(values), "rows": rows,
              "series_rmse_vs_truth": error, "truth_floor_rmse": floor, "ratio_to_floor": error / max(floor, 1e-12),
              "floor_goal": FLOOR_GOAL, "calibration": cal.summary}
    write_json(out / "check.json", result)
    lines = [f"known-answer check ({truth} truth, {w.n:,} agents; true values "
             + ("as given)" if true is not None else f"drawn in the middle 70 % of each box with seed {seed})"),
             "| unknown | true | fitted | 95 % interval | error | error / sd | tolerance | met |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shown = f"[{r['interval95'][0]:.3f}, {r['interval95'][1]:.3f}]" if r["interval95"] else "–"
        met = "yes" if r["within_tolerance"] else ("in interval" if r["truth_in_interval"] else "no")
        lines.append(f"| `{r['unknown']}` | {r['true']:.3f} | {r['fitted']:.3f} | {shown} | {r['error']:+.3f} | {r['z']:+.1f} | "
                     f"±{r['tolerance']} | {met} |")
    lines.append(f"series: fitted run vs the truth's RMSE {error:.4f}; the truth's own seed-to-seed RMSE {floor:.4f}; "
                 f"ratio {error / max(floor, 1e-12):.2f} (goal ≤ {FLOOR_GOAL})")
    lines.append(cal.text)
    return CheckResult(cal, values, rows, floor, error, "\n".join(lines))
