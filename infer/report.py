"""The report folder of a rollout (or of any trace file): shares, groups, clusters, plots.

Files written to the report folder:
- `decision_shares.csv`: tick, one column per action (share of valid agents);
- `decision_shares_by_<attr>.csv`: tick, group, one column per action;
- `channel_means_by_<attr>.csv`: tick, group, one column per channel;
- `clusters.csv`: cluster, size, mean channels, decision mix at the final tick;
- `decision_shares.png`, `channels.png`, `clusters.png`;
- `summary.md`: the text summary (also returned).

Clusters: k-means (scikit-learn, seeded) on the final tick's anchored channels and, for a
student rollout, its free latent, each column standardised. They are *reasoning profiles*:
who holds which combination of trust, risk, cost... and what they decided.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsm.data_gen.store import TraceFile


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
    latent: np.ndarray | None  # (T, N, Z) student only
    groups: dict[str, np.ndarray]  # attribute -> (N,) labels (categorical attributes)

    @classmethod
    def read(cls, path: str | Path) -> "RunView":
        with TraceFile(path) as tf:
            sc = tf.scenario
            pop, _ = tf.world()
            latent = tf.array("latent").astype(np.float32) if "latent" in tf.fields else None
            return cls(str(path), tf.kind, list(sc.actions.labels), list(sc.channel_names),
                       tf.array("decision").astype(np.int64), tf.array("valid").astype(bool),
                       np.nan_to_num(tf.array("channels").astype(np.float32)), latent,
                       {a: np.asarray(pop.labels(a), dtype=object) for a in pop.categorical})

    @property
    def ticks(self) -> int:
        return self.decision.shape[0]

    @property
    def n(self) -> int:
        return self.decision.shape[1]


def shares(decision: np.ndarray, valid: np.ndarray, actions: int) -> np.ndarray:
    """(T, A) decision shares among the valid agents of each tick (zeros where none is valid)."""
    out = np.zeros((decision.shape[0], actions))
    for t in range(decision.shape[0]):
        d = decision[t][valid[t] & (decision[t] >= 0)]
        if len(d):
            out[t] = np.bincount(d, minlength=actions)[:actions] / len(d)
    return out


def cluster_agents(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N,) k-means labels of standardised features (N, F); k is capped by N."""
    from sklearn.cluster import KMeans

    x = features.astype(np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 1e-9, x.std(0), 1.0)
    k = max(1, min(k, len(np.unique(x, axis=0))))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)


def profile_features(run: RunView, tick: int = -1) -> np.ndarray:
    """(N, F) what the clusters are computed on: channels (+ latent for a rollout) at `tick`."""
    parts = [run.channels[tick]]
    if run.latent is not None:
        parts.append(run.latent[tick])
    return np.concatenate(parts, 1)


def cluster_profiles(run: RunView, labels: np.ndarray, tick: int = -1) -> list[dict]:
    A = len(run.actions)
    rows = []
    for c in range(labels.max() + 1):
        m = labels == c
        mix = shares(run.decision[tick][None, m], run.valid[tick][None, m], A)[0]
        rows.append({"cluster": c, "size": int(m.sum()),
                     **{f"ch_{name}": float(run.channels[tick][m, j].mean()) for j, name in enumerate(run.channels_names)},
                     **{f"share_{a}": float(s) for a, s in zip(run.actions, mix)}})
    return rows


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunView.read(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    A, T = len(run.actions), run.ticks
    by = [a for a in (by if by is not None else list(run.groups)[:2])]
    unknown = [a for a in by if a not in run.groups]
    if unknown:
        raise ValueError(f"--by names {unknown}, not categorical attributes of this world ({', '.join(run.groups)})")
    sh = shares(run.decision, run.valid, A)  # (T, A)
    _csv(out / "decision_shares.csv", ["tick", *run.actions], [[t, *sh[t]] for t in range(T)])
    group_md = []
    for attr in by:
        labels = run.groups[attr]
        rows_d, rows_c, final = [], [], []
        for g in sorted(set(labels)):
            m = labels == g
            gs = shares(run.decision[:, m], run.valid[:, m], A)
            for t in range(T):
                v = run.valid[t] & m
                rows_d.append([t, g, *gs[t]])
                rows_c.append([t, g, *(run.channels[t][v].mean(0) if v.any() else np.full(len(run.channels_names), np.nan))])
            final.append([g, int(m.sum()), *gs[-1]])
        _csv(out / f"decision_shares_by_{attr}.csv", ["tick", attr, *run.actions], rows_d)
        _csv(out / f"channel_means_by_{attr}.csv", ["tick", attr, *run.channels_names], rows_c)
        group_md.append(f"Final decision shares by {attr}:\n\n" + _table([attr, "agents", *run.actions], final))
    labels = cluster_agents(profile_features(run), clusters, seed)
    prof = cluster_profiles(run, labels)
    keys = list(prof[0])
    _csv(out / "clusters.csv", keys, [[r[k] for k in keys] for r in prof])
    np.save(out / "cluster_labels.npy", labels)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for a in range(A):
        ax.plot(range(T), sh[:, a], marker="o", label=run.actions[a])
    ax.set(xlabel="tick", ylabel="share of agents", title="decision shares", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "decision_shares.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    means = np.stack([run.channels[t][run.valid[t]].mean(0) if run.valid[t].any() else np.full(len(run.channels_names), np.nan)
                      for t in range(T)])
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

    first, last = sh[0], sh[-1]
    moves = sorted(zip(run.actions, first, last), key=lambda r: -abs(r[2] - r[1]))
    cl_rows = [[r["cluster"], r["size"], *[r[f"ch_{n}"] for n in run.channels_names], *[r[f"share_{a}"] for a in run.actions]]
               for r in prof]
    md = [f"# {title or Path(path).name}", "",
          f"{run.kind} `{path}`: {run.n:,} agents, {T} ticks, valid agent-ticks {run.valid.mean():.1%}.", "",
          "Decision shares, first → last tick: " + "; ".join(f"{a} {f:.2f} → {l_:.2f}" for a, f, l_ in moves) + ".", "",
          _table(["tick", *run.actions], [[t, *sh[t]] for t in range(T)]), "", *[g + "\n" for g in group_md],
          f"Reasoning profiles (k-means, k={len(prof)}, on final-tick channels{' + latent' if run.latent is not None else ''}):", "",
          _table(["cluster", "size", *run.channels_names, *run.actions], cl_rows), "",
          "Files: " + ", ".join(sorted(p.name for p in out.iterdir() if p.name != "summary.md")) + ", summary.md", ""]
    text = "\n".join(md)
    (out / "summary.md").write_text(text)
    return text
