"""Counterfactuals and intervention surfaces on top of rollouts.

Counterfactual: the same world, checkpoint and seed under a second scenario. With the same
seed, exposures, shown neighbours and the decision sampler draw the same random numbers, so an
identical scenario gives zero differences and every difference is caused by the scenario edit.

Sweep: one or two scenario parameters (e.g. `events.0.credibility`, `events.0.exposure.fraction`)
over a grid of values; each grid point is a rollout; the outcome is the final-tick decision
shares (plus, when the swept path is an event's, the share of agents exposed to that event).
"""
from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsm.infer.report import RunView, _csv, _table, shares
from lsm.limits import MAX_SWEEP_VALUES, number_problem


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


# ----------------------------------------------------------------------------- sweeps
@dataclass
class SweepAxis:
    path: list[str | int]
    """Keys / list indices into the scenario YAML, e.g. ['events', 0, 'credibility']."""
    values: list[float]

    @property
    def name(self) -> str:
        return ".".join(str(p) for p in self.path)

    @classmethod
    def parse(cls, spec: str) -> "SweepAxis":
        """`events.0.credibility=0.2,0.5,0.9` or `events.0.exposure.fraction=0:1:5` (start:stop:count)."""
        if "=" not in spec:
            raise ValueError(f"--sweep {spec!r}: expected PATH=VALUES, e.g. events.0.credibility=0.2,0.5,0.9 or events.0.exposure.fraction=0:1:5")
        path, vals = spec.split("=", 1)
        keys: list[str | int] = [int(p) if p.isdigit() else p for p in path.strip().split(".")]
        try:
            if ":" in vals:
                lo, hi, count = vals.split(":")
                if not 1 <= int(count) <= MAX_SWEEP_VALUES:
                    raise ValueError(f"--sweep {spec!r}: a count of 1 to {MAX_SWEEP_VALUES} values (lsm.limits.MAX_SWEEP_VALUES)")
                values = np.linspace(float(lo), float(hi), int(count)).round(6).tolist()
            else:
                values = [float(v) for v in vals.split(",")[: MAX_SWEEP_VALUES + 1] if v.strip()]
        except ValueError as err:
            if str(err).startswith("--sweep"):
                raise
            raise ValueError(f"--sweep {spec!r}: values must be numbers 'a,b,c' or 'start:stop:count'") from None
        if not values:
            raise ValueError(f"--sweep {spec!r}: no values")
        if len(values) > MAX_SWEEP_VALUES:
            raise ValueError(f"--sweep {spec!r}: at most {MAX_SWEEP_VALUES} values (lsm.limits.MAX_SWEEP_VALUES)")
        bad = [v for v in values if number_problem(v)]
        if bad:
            raise ValueError(f"--sweep {spec!r}: {bad[0]} is not {number_problem(bad[0])}")
        return cls(keys, values)

    def apply(self, data: dict, value: float) -> None:
        node = data
        for depth, key in enumerate(self.path[:-1]):
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                where = ".".join(str(p) for p in self.path[: depth + 1])
                raise ValueError(f"--sweep {self.name}: the scenario has no '{where}'") from None
        if isinstance(node, dict) or (isinstance(node, list) and isinstance(self.path[-1], int) and self.path[-1] < len(node)):
            node[self.path[-1]] = value
        else:
            raise ValueError(f"--sweep {self.name}: cannot set '{self.path[-1]}' there")


def set_in(data: dict, axis: SweepAxis, value: float) -> dict:
    new = copy.deepcopy(data)
    axis.apply(new, value)
    return new


def exposed_share(scenario, world, seed: int, event_index: int) -> float:
    """Share of agents exposed to scheduled event `event_index` at its tick."""
    from lsm.society.loop.events import exposure_mask

    ev = scenario.events[event_index]
    return float(exposure_mask(ev, event_index, int(ev.tick), world.population, world.graph, seed).mean())


def run_sweep(make_rollout, scenario_data: dict, source: str, axes: list[SweepAxis], world, seed: int,
              out_dir: str | Path, action: str | None = None) -> dict:
    """Run a rollout per grid point. `make_rollout(scenario, desc) -> summary` runs one (`desc`
    names the point for its progress bar: "sweep 3/5: events.0.credibility=0.5").
    Writes `sweep.csv`, `sweep.json` and `sweep.png`; returns the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lsm.society.scenario import scenario_from_dict

    if not 1 <= len(axes) <= 2:
        raise ValueError("a sweep takes one or two --sweep axes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape = [len(a.values) for a in axes]
    grid_shares, grid_exposed, actions = None, np.full(shape, np.nan), None
    rows = []
    points = int(np.prod(shape))
    for point, idx in enumerate(itertools.product(*[range(s) for s in shape])):
        data = scenario_data
        label = []
        for axis, k in zip(axes, idx):
            data = set_in(data, axis, axis.values[k])
            label.append(f"{axis.name}={axis.values[k]:g}")
        sc = scenario_from_dict(data, source=f"{source} with {', '.join(label)}")
        summary = make_rollout(sc, f"sweep {point + 1}/{points}: {', '.join(label)}")
        actions = summary["actions"]
        final = np.asarray(summary["decision_shares"][-1])
        if grid_shares is None:
            grid_shares = np.zeros(shape + [len(actions)])
        grid_shares[idx] = final
        ev_axes = [a for a in axes if a.path[0] == "events" and isinstance(a.path[1], int)]
        if ev_axes:
            grid_exposed[idx] = exposed_share(sc, world, seed, int(ev_axes[0].path[1]))
        rows.append([*[axis.values[k] for axis, k in zip(axes, idx)], grid_exposed[idx], *final])
    assert grid_shares is not None and actions is not None
    _csv(out / "sweep.csv", [a.name for a in axes] + ["exposed_share"] + [f"share_{a}" for a in actions], rows)
    result = {"axes": [{"path": a.name, "values": a.values} for a in axes], "actions": actions,
              "final_shares": grid_shares.tolist(), "exposed_share": np.where(np.isnan(grid_exposed), None, grid_exposed).tolist()}
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    target = action or actions[0]
    if target not in actions:
        raise ValueError(f"--sweep_action {target!r} is not an action ({', '.join(actions)})")
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
