"""What `lsm calibrate` writes: the fitted scenario, the values with their uncertainty, the
series, the loss curves, two plots and a report (docs/calibrate.md#what-it-writes).

Notation: P unknowns | M observations.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lsm.calibrate.fit import Trace, Uncertainty
from lsm.calibrate.observed import Observation
from lsm.calibrate.params import ParamSpace

Z95 = 1.959964
"""The normal 97.5 % quantile: the 95 % intervals are value ± Z95 · sd, clipped to the bounds."""


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def intervals(space: ParamSpace, values: np.ndarray, unc: Uncertainty | None) -> list[tuple[float, float] | None]:
    """Each value's 95 % interval (`fit.uncertainty`), clipped to its bounds (None without an uncertainty)."""
    if unc is None:
        return [None] * len(values)
    return [(max(p.lo, v - Z95 * s), min(p.hi, v + Z95 * s)) for p, v, s in zip(space.params, values, unc.sd)]


def comparison(traces: dict[str, Trace]) -> dict[str, Any]:
    """The gradient method against the baseline(s): final losses, and how many rollouts and seconds
    the gradient needed to reach each baseline's final loss."""
    out: dict[str, Any] = {m: {"rollouts": len(t.loss), "seconds": round(float(np.sum(t.seconds)), 2),
                               "best_loss": round(t.best[0], 4)} for m, t in traces.items() if t.loss}
    if "adam" in traces and traces["adam"].loss:
        adam = traces["adam"]
        for m, t in traces.items():
            if m == "adam" or not t.loss:
                continue
            k = adam.rollouts_to(t.best[0])
            out[m]["adam_rollouts_to_its_best"] = k
            out[m]["adam_seconds_to_its_best"] = round(float(np.sum(adam.seconds[:k])), 2) if k else None
            out[m]["rollout_ratio"] = round(k / len(t.loss), 3) if k else None
    return out


def values_table(space: ParamSpace, values: np.ndarray, unc: Uncertainty | None, truth: np.ndarray | None = None,
                 restarts: list[tuple[float, list[float]]] | None = None) -> str:
    """The fitted values as a markdown table (with the truth, for a check)."""
    ci = intervals(space, values, unc)
    head = "| unknown | bounds | fitted | sd | 95 % interval |" + (" restart spread |" if restarts else "") + (" true | error |" if truth is not None else "")
    rule = "|---" * (5 + (1 if restarts else 0) + (2 if truth is not None else 0)) + "|"
    lines = [head, rule]
    for j, p in enumerate(space.params):
        row = f"| `{p.path}` | [{p.lo:g}, {p.hi:g}] | {values[j]:.3f} | " + (f"{unc.sd[j]:.3f} | [{ci[j][0]:.3f}, {ci[j][1]:.3f}] |" if unc is not None and ci[j] else "– | – |")  # type: ignore[index]
        if restarts:
            vs = [r[1][j] for r in restarts]
            row += f" {min(vs):.3f}–{max(vs):.3f} |"
        if truth is not None:
            row += f" {truth[j]:.3f} | {values[j] - truth[j]:+.3f} |"
        lines.append(row)
    return "\n".join(lines)


def write_series(path: Path, obs: list[Observation], fitted: np.ndarray, drawn: np.ndarray, unc: Uncertainty | None) -> None:
    band = unc.series_sd if unc is not None else np.zeros(len(obs))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tick", "metric", "target", "group", "observed", "se", "fitted", "fitted_sd", "drawn"])
        for o, a, s, d in zip(obs, fitted, band, drawn):
            w.writerow([o.tick, o.metric, o.target, o.group, f"{o.value:.6f}", f"{o.se:.6f}", f"{a:.6f}", f"{s:.6f}", f"{d:.6f}"])


def plot_series(path: Path, obs: list[Observation], fitted: np.ndarray, unc: Uncertainty | None, title: str,
                truth: np.ndarray | None = None) -> None:
    """One panel per observed series: the observations with 95 % bars, the fit with its 95 % band."""
    import matplotlib  # noqa: PLC0415 (plots only)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = list(dict.fromkeys(o.label for o in obs))
    cols = min(3, len(labels))
    rows = (len(labels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    band = unc.series_sd if unc is not None else np.zeros(len(obs))
    for ax, label in zip(axes.flat, labels):
        idx = [m for m, o in enumerate(obs) if o.label == label]
        t = np.array([obs[m].tick for m in idx])
        order = np.argsort(t)
        idx = [idx[k] for k in order]
        t = t[order]
        v = np.array([obs[m].value for m in idx])
        se = np.array([obs[m].se for m in idx])
        f, s = fitted[idx], band[idx]
        ax.errorbar(t, v, yerr=1.96 * se, fmt="o", color="k", ms=3, lw=1, label="observed (95 %)")
        ax.plot(t, f, color="tab:blue", label="fitted")
        ax.fill_between(t, f - 1.96 * s, f + 1.96 * s, color="tab:blue", alpha=0.25, lw=0, label="fit's 95 % band")
        if truth is not None:
            ax.plot(t, truth[idx], color="tab:green", ls="--", lw=1, label="truth (another seed)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("tick")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(path: Path, traces: dict[str, Trace]) -> None:
    """Each method's best loss so far against the rollouts it ran."""
    import matplotlib  # noqa: PLC0415 (plots only)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, t in traces.items():
        if t.loss:
            ax.plot(np.arange(1, len(t.loss) + 1), t.best_so_far(), label=m)
    ax.set_yscale("log")
    ax.set_xlabel("rollouts")
    ax.set_ylabel("best loss so far (½ χ²)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_scenario(path: Path, data: dict, header: str) -> None:
    """The fitted scenario YAML (an ordinary scenario), with a comment header saying what was fitted."""
    text = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    _atomic_text(path, text)


def write_json(path: Path, data: dict) -> None:
    _atomic_text(path, json.dumps(data, indent=2, default=float))
