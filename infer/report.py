"""The report folder of a rollout (or of any trace file): shares, groups, clusters, plots.

Files written to the report folder:
- `decision_shares.csv`: tick, one column per action (share of valid agents);
- `decision_shares_by_<attr>.csv`: tick, group, one column per action;
- `channel_means_by_<attr>.csv`: tick, group, one column per channel;
- `clusters.csv`: cluster, size, mean channels, decision mix at the final tick;
- `cluster_labels.npy`: (N,) cluster of every agent;
- `decision_shares.png`, `channels.png`, `clusters.png`;
- `summary.md`: the text summary (also returned).

Clusters: k-means (scikit-learn, seeded) on the final tick's anchored channels and, when the
file stores it, the student's free latent, each column standardised. They are *reasoning
profiles*: who holds which combination of trust, risk, cost... and what they decided. Above
`FIT_SAMPLE` agents the k-means (and the standardisation) is fitted on a seeded sample and every
agent is assigned to its nearest centre; at or below it, on all agents.

Everything is vectorised over agents (one `np.bincount` per tick over group x action codes), so
a report of 10^6 agents x 8 ticks takes seconds once the file is read.

Legend: N agents | T ticks | A actions | C channels | Z latent width | G groups of one
attribute | K clusters | F profile features | S agents the k-means is fitted on.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsm.society import seeds
from lsm.society.store import StoreError, TraceFile

FIT_SAMPLE = 20_000
"""Agents the reasoning-profile k-means is fitted on; the rest are assigned to the nearest centre.
Fitting 20,000 x 4 features takes ~0.05 s (full k-means on 10^6: 4-5 s); a cluster of 1% of the
agents still gets ~200 sample points, so its centre is off by ~1/sqrt(200) = 0.07 of its spread."""

_PREDICT_CHUNK = 1 << 17
"""Agents standardised and assigned per step: bounds the float64 copy of the features."""


@dataclass
class RunView:
    """The arrays a report needs, read once from a trace or rollout file."""

    path: str
    kind: str
    actions: list[str]
    channels_names: list[str]
    decision: np.ndarray  # (T, N) int, -1 invalid
    valid: np.ndarray  # (T, N) bool
    channels: np.ndarray  # (T, N, C)
    latent: np.ndarray | None  # (T, N, Z) student only, and only when read with `latent=True`
    groups: dict[str, np.ndarray]  # attribute -> (N,) labels (categorical attributes)

    @classmethod
    def read(cls, path: str | Path, latent: bool = False) -> "RunView":
        """Read decision, valid, channels and the categorical attributes (nothing else).

        Args:
            latent: also read the student's free latent (T * N * Z float32) when the file has it;
                only the reasoning profiles use it, and a rollout stores it only on request.
        """
        with TraceFile(path) as tf:
            sc = tf.scenario
            lat = tf.array("latent").astype(np.float32) if latent and "latent" in tf.fields else None
            channels = np.nan_to_num(tf.array("channels").astype(np.float32), copy=False)
            return cls(str(path), tf.kind, list(sc.actions.labels), list(sc.channel_names),
                       tf.array("decision").astype(np.int64), tf.array("valid").astype(bool),
                       channels, lat, _categorical_labels(tf))

    @property
    def ticks(self) -> int:
        return self.decision.shape[0]

    @property
    def n(self) -> int:
        return self.decision.shape[1]


def _categorical_labels(tf: TraceFile) -> dict[str, np.ndarray]:
    """attribute -> (N,) labels from the population's category codes alone.

    `TraceFile.world()` would also read names, personas, backstories and the whole social graph
    (gigabytes at 10^6 agents) that a report never looks at. Attribute order is the identity
    vocabulary's, as in `read_world_groups`.
    """
    try:
        pop = tf.f["population"]
        cat = pop["categorical"]
        order = [e["attribute"] for e in json.loads(pop.attrs["identity_vocab"])["categorical"]]
        return {a: np.asarray(json.loads(cat[a].attrs["categories"]), dtype=object)[cat[a][()]] for a in order}
    except KeyError as e:
        raise StoreError(f"{tf.path}: no readable population/categorical attributes ({e}); "
                         "is this a trace or rollout file written by lsm?") from e


def group_codes(labels: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """(sorted distinct labels, (N,) int64 code of each agent into them)."""
    values = labels.tolist()
    groups = sorted(set(values))
    index = {g: i for i, g in enumerate(groups)}
    return groups, np.fromiter((index[v] for v in values), np.int64, len(values))


def shares_by(codes: np.ndarray, n_groups: int, decision: np.ndarray, valid: np.ndarray, actions: int) -> np.ndarray:
    """(T, G, A) decision shares of each group among its valid agents (zeros where none is valid).

    codes (N,) in 0..G-1; decision (T, N), -1 invalid; valid (T, N). One bincount per tick over
    group x slot, where slot is the action, A for a valid decision >= A (counted in the total
    only) and A + 1 for no valid decision.
    """
    T, G, A = decision.shape[0], n_groups, actions
    out = np.zeros((T, G, A))
    for t in range(T):
        d = decision[t]
        slot = np.where(valid[t] & (d >= 0), np.minimum(d, A), A + 1)  # (N,)
        counts = np.bincount(codes * (A + 2) + slot, minlength=G * (A + 2)).reshape(G, A + 2)  # (G, A+2)
        out[t] = counts[:, :A] / np.maximum(counts[:, :A + 1].sum(1), 1)[:, None]
    return out


def shares(decision: np.ndarray, valid: np.ndarray, actions: int) -> np.ndarray:
    """(T, A) decision shares among the valid agents of each tick (zeros where none is valid)."""
    return shares_by(np.zeros(decision.shape[1], np.int64), 1, decision, valid, actions)[:, 0]


def means_by(codes: np.ndarray, n_groups: int, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(G, C) mean of values (N, C) over each group's agents where `mask` (N,) holds (NaN where none)."""
    m = np.ones(len(codes), bool) if mask is None else mask  # (N,)
    count = np.bincount(codes, weights=m, minlength=n_groups)  # (G,)
    # np.where, not values * m: a NaN outside the mask must not reach the sums
    sums = np.stack([np.bincount(codes, weights=np.where(m, values[:, c], 0.0), minlength=n_groups)
                     for c in range(values.shape[1])], 1)  # (G, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count[:, None] > 0, sums / count[:, None], np.nan)  # (G, C)


@dataclass
class GroupTable:
    """Per-tick decision shares and channel means of the groups of one categorical attribute."""

    attr: str
    groups: list[Any]  # G labels, sorted
    size: np.ndarray  # (G,) agents
    shares: np.ndarray  # (T, G, A) among the group's valid agents with a decision
    channel_means: np.ndarray  # (T, G, C) among the group's valid agents; NaN where none


def group_table(run: RunView, attr: str) -> GroupTable:
    """Decision shares and channel means per tick for each group of the categorical `attr`."""
    groups, codes = group_codes(run.groups[attr])
    G = len(groups)
    sh = shares_by(codes, G, run.decision, run.valid, len(run.actions))  # (T, G, A)
    means = np.stack([means_by(codes, G, run.channels[t], run.valid[t]) for t in range(run.ticks)])  # (T, G, C)
    return GroupTable(attr, groups, np.bincount(codes, minlength=G), sh, means)


def cluster_agents(features: np.ndarray, k: int, seed: int = 0, sample: int = FIT_SAMPLE) -> np.ndarray:
    """(N,) k-means labels of standardised features (N, F).

    The fit set is every agent when N <= `sample`, else `sample` agents drawn with `seed`; the
    standardisation (mean, std per column) and the k-means (k capped by the fit set's distinct
    rows) come from it, and every agent gets its nearest centre.
    """
    from sklearn.cluster import KMeans  # type: ignore[import-untyped]

    n = len(features)
    whole = n <= sample
    rows = np.arange(n) if whole else np.sort(seeds.rng(seed, seeds.Stream.CLUSTER_SAMPLE).choice(n, sample, replace=False))  # (S,)
    x = features[rows].astype(np.float64)  # (S, F)
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    x = (x - mu) / sd
    k = max(1, min(k, len(np.unique(x, axis=0))))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed)
    if whole:
        return km.fit_predict(x)
    km.fit(x)
    out = np.empty(n, np.int32)
    for s in range(0, n, _PREDICT_CHUNK):
        out[s:s + _PREDICT_CHUNK] = km.predict((features[s:s + _PREDICT_CHUNK].astype(np.float64) - mu) / sd)
    return out


def profile_features(run: RunView, tick: int = -1) -> np.ndarray:
    """(N, F) what the clusters are computed on: channels (+ latent when read) at `tick`."""
    parts = [run.channels[tick]]
    if run.latent is not None:
        parts.append(run.latent[tick].astype(run.channels.dtype, copy=False))
    return np.concatenate(parts, 1)


def cluster_profiles(run: RunView, labels: np.ndarray, tick: int = -1) -> list[dict]:
    """One row per cluster: size, mean channels (all members) and decision mix at `tick`."""
    K = int(labels.max()) + 1
    size = np.bincount(labels, minlength=K)  # (K,)
    ch = means_by(labels, K, run.channels[tick])  # (K, C)
    mix = shares_by(labels, K, run.decision[tick][None], run.valid[tick][None], len(run.actions))[0]  # (K, A)
    return [{"cluster": c, "size": int(size[c]),
             **{f"ch_{name}": float(ch[c, j]) for j, name in enumerate(run.channels_names)},
             **{f"share_{a}": float(s) for a, s in zip(run.actions, mix[c])}}
            for c in range(K)]


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v)

    path.write_text("\n".join([",".join(header)] + [",".join(fmt(v) for v in r) for r in rows]) + "\n")


def _table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, (float, np.floating)) else str(v)

    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def write_report(path: str | Path, out_dir: str | Path, by: list[str] | None = None, clusters: int = 4,
                 seed: int = 0, title: str | None = None) -> str:
    """Write the report folder for a rollout/trace file; returns the markdown summary."""
    return write_run_report(RunView.read(path, latent=True), out_dir, by, clusters, seed, title)


def write_run_report(run: RunView, out_dir: str | Path, by: list[str] | None = None, clusters: int = 4,
                     seed: int = 0, title: str | None = None, sample: int = FIT_SAMPLE,
                     timings: dict[str, float] | None = None) -> str:
    """Write the report folder for arrays already read; returns the markdown summary.

    Args:
        sample: agents the reasoning-profile k-means is fitted on (see `cluster_agents`).
        timings: when given, filled with seconds per phase (shares, groups, clusters, plots, summary).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[name] = now - clock[0]
        clock[0] = now

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    A, T = len(run.actions), run.ticks
    by = [a for a in (by if by is not None else list(run.groups)[:2])]
    unknown = [a for a in by if a not in run.groups]
    if unknown:
        raise ValueError(f"--by names {unknown}, not categorical attributes of this world ({', '.join(run.groups)})")
    sh = shares(run.decision, run.valid, A)  # (T, A)
    _csv(out / "decision_shares.csv", ["tick", *run.actions], [[t, *sh[t]] for t in range(T)])
    lap("shares")
    group_md = []
    for attr in by:
        gt = group_table(run, attr)
        rows = [(t, i, g) for i, g in enumerate(gt.groups) for t in range(T)]  # group-major, as before
        _csv(out / f"decision_shares_by_{attr}.csv", ["tick", attr, *run.actions], [[t, g, *gt.shares[t, i]] for t, i, g in rows])
        _csv(out / f"channel_means_by_{attr}.csv", ["tick", attr, *run.channels_names],
             [[t, g, *gt.channel_means[t, i]] for t, i, g in rows])
        final = [[g, int(gt.size[i]), *gt.shares[-1, i]] for i, g in enumerate(gt.groups)]
        group_md.append(f"Final decision shares by {attr}:\n\n" + _table([attr, "agents", *run.actions], final))
    lap("groups")
    labels = cluster_agents(profile_features(run), clusters, seed, sample)
    prof = cluster_profiles(run, labels)
    keys = list(prof[0])
    _csv(out / "clusters.csv", keys, [[r[k] for k in keys] for r in prof])
    np.save(out / "cluster_labels.npy", labels)
    lap("clusters")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for a in range(A):
        ax.plot(range(T), sh[:, a], marker="o", label=run.actions[a])
    ax.set(xlabel="tick", ylabel="share of agents", title="decision shares", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "decision_shares.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    everyone = np.zeros(run.n, np.int64)
    means = np.stack([means_by(everyone, 1, run.channels[t], run.valid[t])[0] for t in range(T)])  # (T, C)
    for c, name in enumerate(run.channels_names):
        ax.plot(range(T), means[:, c], label=name)
    ax.set(xlabel="tick", ylabel="mean (0..1)", title="anchored channels")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "channels.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.6 * len(prof) + 1.8), gridspec_kw={"width_ratios": [len(run.channels_names), A]})
    chm = np.array([[r[f"ch_{n}"] for n in run.channels_names] for r in prof])
    mix = np.array([[r[f"share_{a}"] for a in run.actions] for r in prof])
    for ax, mat, cols, ttl in ((axes[0], chm, run.channels_names, "mean channels"), (axes[1], mix, run.actions, "decision mix")):
        ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(prof)), [f"c{r['cluster']} (n={r['size']})" for r in prof], fontsize=7)
        ax.set_title(ttl, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "clusters.png", dpi=110)
    plt.close(fig)
    lap("plots")

    first, last = sh[0], sh[-1]
    moves = sorted(zip(run.actions, first, last), key=lambda r: -abs(r[2] - r[1]))
    cl_rows = [[r["cluster"], r["size"], *[r[f"ch_{n}"] for n in run.channels_names], *[r[f"share_{a}"] for a in run.actions]]
               for r in prof]
    fit = (f"fitted on all {run.n:,} agents" if run.n <= sample else
           f"fitted and standardised on a seeded sample of {sample:,} of the {run.n:,} agents, every agent then assigned to its nearest centre")
    md = [f"# {title or Path(run.path).name}", "",
          f"{run.kind} `{run.path}`: {run.n:,} agents, {T} ticks, valid agent-ticks {run.valid.mean():.1%}.", "",
          "Decision shares, first → last tick: " + "; ".join(f"{a} {f:.2f} → {l_:.2f}" for a, f, l_ in moves) + ".", "",
          _table(["tick", *run.actions], [[t, *sh[t]] for t in range(T)]), "", *[g + "\n" for g in group_md],
          f"Reasoning profiles (k-means, k={len(prof)}, on final-tick channels{' + latent' if run.latent is not None else ''}; {fit}):", "",
          _table(["cluster", "size", *run.channels_names, *run.actions], cl_rows), "",
          "Files: " + ", ".join(sorted(p.name for p in out.iterdir() if p.name != "summary.md")) + ", summary.md", ""]
    text = "\n".join(md)
    (out / "summary.md").write_text(text)
    lap("summary")
    return text
