"""Counterfactuals and intervention surfaces on top of rollouts.

Counterfactual: the same world, checkpoint and seed under a second scenario. With the same
seed, exposures, shown neighbours and the decision sampler draw the same random numbers, so an
identical scenario gives zero differences and every difference is caused by the scenario edit.

The counterfactual is another scenario, or interventions (`society.interventions`: event edits,
severed ties, attributes) applied to the base scenario and world.

Sweep: one or two axes, each an edit over a list of values (e.g. `events[0].credibility=0.2,0.5`,
`events[0].exposure.fraction=0:1:5`; `events.0.credibility` spells the same), over their grid;
each grid point is a rollout; the outcome is the final-tick decision shares (plus, when the axis
edits an event, the share of agents exposed to that event).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from lsm.config import read_yaml, resolve_config, to_dict
from lsm.infer.report import RunView, _csv, _table, shares
from lsm.society.interventions import (
    Edited,
    Interventions,
    RemoveEvent,
    SweepAxis,
    apply,
    from_data,
    parse,
    sweep_points,
)
from lsm.society.loop.events import exposure_mask
from lsm.society.scenario import Scenario, load_scenario
from lsm.society.world import World

__all__ = ["compare_runs", "counterfactual_inputs", "exposed_share", "run_sweep", "SweepAxis"]


# ----------------------------------------------------------------------------- counterfactual
def compare_runs(base: RunView, other: RunView, cluster_labels: np.ndarray, by: list[str], out_dir: str | Path) -> str:
    """Per-agent differences at the final tick (who flipped, channel deltas), summarised by
    group and by the base run's clusters. Writes `counterfactual_agents.csv`,
    `counterfactual_by_<attr>.csv`, `counterfactual_by_cluster.csv`; returns markdown."""
    if base.n != other.n:
        raise ValueError(f"counterfactual runs differ in population size ({base.n} vs {other.n} agents)")
    if base.actions != other.actions:
        raise ValueError(f"a counterfactual scenario must keep the action space: {other.path} has actions {other.actions}, "
                         f"the base run {base.actions}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d0, d1 = base.decision[-1], other.decision[-1]
    ok = base.valid[-1] & other.valid[-1]
    flipped = ok & (d0 != d1)  # (N,)
    delta = other.channels[-1] - base.channels[-1]  # (N, C)
    A = len(base.actions)
    label = lambda d: base.actions[d] if d >= 0 else "invalid"  # noqa: E731
    rows = [[i, *[base.groups[a][i] for a in by], int(cluster_labels[i]), label(d0[i]), label(d1[i]), int(flipped[i]),
             *delta[i]] for i in range(base.n)]
    _csv(out / "counterfactual_agents.csv", ["agent", *by, "cluster", "base_decision", "counterfactual_decision", "flipped",
                                             *[f"delta_{c}" for c in base.channels_names]], rows)
    md = [f"Counterfactual `{other.path}` vs base `{base.path}` (final tick): {int(flipped.sum())} of {int(ok.sum())} "
          f"agents flipped ({flipped.sum() / max(ok.sum(), 1):.1%}); mean |channel delta| {np.abs(delta[ok]).mean():.3f}.", ""]
    s0 = shares(base.decision[-1:], base.valid[-1:], A)[0]
    s1 = shares(other.decision[-1:], other.valid[-1:], A)[0]
    md += [_table(["action", "base share", "counterfactual share", "difference"],
                  [[a, x, y, y - x] for a, x, y in zip(base.actions, s0, s1)]), ""]
    groupings = [(attr, base.groups[attr]) for attr in by] + [("cluster", cluster_labels)]
    for name, labels in groupings:
        summ = []
        for g in sorted(set(labels.tolist())):
            m = (labels == g) & ok
            summ.append([g, int(m.sum()), float(flipped[m].mean()) if m.any() else 0.0,
                         *(delta[m].mean(0) if m.any() else np.zeros(delta.shape[1]))])
        header = [name, "agents", "flipped", *[f"Δ{c}" for c in base.channels_names]]
        _csv(out / f"counterfactual_by_{name}.csv", header, summ)
        md += [f"By {name}:", "", _table(header, summ), ""]
    return "\n".join(md)


# ----------------------------------------------------------------------------- counterfactual inputs
def counterfactual_inputs(spec: str | Path, scenario: Scenario, world: World, source: str = "--counterfactual"
                          ) -> tuple[Edited, str | Path]:
    """What `--counterfactual` runs: (the edited scenario and world, where the scenario came from).
    `spec` is another scenario (a YAML path or a shipped name: the same world, that scenario), an
    interventions file (a YAML list of edits, or `interventions: [...]`), or an intervention in its
    compact form (`events[0].credibility*=0.5; sever=household`). A bad one raises `ConfigError`."""
    path = resolve_config(spec, "scenarios")
    if path.is_file():
        data = read_yaml(path, kind="counterfactual (a scenario or interventions)")
        if isinstance(data, list) or (isinstance(data, dict) and set(data) == {"interventions"}):
            return apply(from_data(data, str(path)), scenario=scenario, world=world, source=str(path)), path
        sc = load_scenario(path)
        return Edited(Interventions(), sc, to_dict(sc), world), path
    if "=" not in str(spec):
        load_scenario(path)  # a missing scenario file: the loader's message
    edits = parse(str(spec), source)
    return apply(edits, scenario=scenario, world=world, source=source), source


# ----------------------------------------------------------------------------- sweeps
def exposed_share(scenario, world, seed: int, event_index: int) -> float:
    """Share of agents exposed to scheduled event `event_index` at its tick."""

    ev = scenario.events[event_index]
    return float(exposure_mask(ev, event_index, int(ev.tick), world.population, world.graph, seed).mean())


def run_sweep(make_rollout: Callable[[Scenario, World, str], dict], scenario: Scenario | dict, world: World, axes: list[SweepAxis],
              seed: int, out_dir: str | Path, action: str | None = None, base: Interventions = Interventions(),
              source: str = "--sweep", progress: Callable[[float, str], None] | None = None) -> dict:
    """Run a rollout per grid point of one or two axes (each an edit over a list of values), with
    the `base` edits applied at every point (a what-if's severed ties, say). `make_rollout(scenario,
    world, desc) -> summary` runs one (`desc` names the point: "sweep 3/5: events[0].credibility=0.5");
    `progress(fraction, message)` is told each point as it starts. Writes `sweep.csv`, `sweep.json`
    (with the edits: `axes`, `base`) and `sweep.png` to `out_dir`; returns the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not 1 <= len(axes) <= 2:
        raise ValueError("a sweep takes one or two --sweep axes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape = [len(a.values) for a in axes]
    grid_shares, grid_exposed, actions = None, np.full(shape, np.nan), None
    rows = []
    grid = sweep_points(axes)
    ev_axes = [a for a in axes if isinstance(a.event, int)]
    removes = any(isinstance(e, RemoveEvent) for e in base)  # event indices then differ from the base's: no exposed share
    for point, (idx, edits, label) in enumerate(grid):
        if progress is not None:
            progress(point / len(grid), f"point {point + 1}/{len(grid)}: {label}")
        ed = apply(base + edits, scenario=scenario, world=world, source=f"{source} at {label}")
        assert ed.scenario is not None and ed.world is not None
        summary = make_rollout(ed.scenario, ed.world, f"sweep {point + 1}/{len(grid)}: {label}")
        actions = summary["actions"]
        final = np.asarray(summary["decision_shares"][-1])
        if grid_shares is None:
            grid_shares = np.zeros(shape + [len(actions)])
        grid_shares[idx] = final
        if ev_axes and not removes:
            grid_exposed[idx] = exposed_share(ed.scenario, ed.world, seed, int(ev_axes[0].event))  # type: ignore[arg-type]
        rows.append([*[axis.values[k] for axis, k in zip(axes, idx)], grid_exposed[idx], *final])
    assert grid_shares is not None and actions is not None
    _csv(out / "sweep.csv", [a.name for a in axes] + ["exposed_share"] + [f"share_{a}" for a in actions], rows)
    target = action or actions[0]
    if target not in actions:
        raise ValueError(f"--sweep_action {target!r} is not an action ({', '.join(actions)})")
    result = {"axes": [a.to_dict() for a in axes], "base": base.to_list(), "actions": actions,
              "final_shares": grid_shares.tolist(), "exposed_share": np.where(np.isnan(grid_exposed), None, grid_exposed).tolist(),
              "plotted_action": target}
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    z = grid_shares[..., actions.index(target)]
    fig, ax = plt.subplots(figsize=(5, 4))
    if len(axes) == 1:
        ax.plot(axes[0].values, z, marker="o")
        ax.set(xlabel=axes[0].name, ylabel=f"final share '{target}'")
    else:
        im = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=max(float(z.max()), 1e-6))
        ax.set_yticks(range(shape[0]), [f"{v:g}" for v in axes[0].values])
        ax.set_xticks(range(shape[1]), [f"{v:g}" for v in axes[1].values])
        ax.set(ylabel=axes[0].name, xlabel=axes[1].name)
        fig.colorbar(im, ax=ax, label=f"final share '{target}'")
    ax.set_title("intervention surface", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)
    return result
