"""Axis recovery (which state directions encode what) and per-agent readouts (`lsm probe`).

Sources of features, one probe each: the free `latent` (Z), the anchored `channels` (C) and the
recurrent `memory` summary (H).
Targets:
(a) identity attributes of the rollout's world (categorical: logistic; numeric: ridge), over
    every tick of the rollout;
(b) with a teacher trace of the same world: the teacher's own channel ratings (ridge) and
    decisions (logistic), probed from the student *replayed on the teacher's run* (the
    neighbours and events the teacher's agents had, the student's own state), so each student
    state lines up with the teacher's agent-tick;
(c) the reasoning-text features of `probes.features` in that teacher run.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from lsm.config import UsageError
from lsm.infer.rollout import missing_fields
from lsm.probes.features import TEXT_FEATURES, label_texts
from lsm.probes.linear import ProbeResult, fit_probe
from lsm.society.store import TraceFile
from lsm.train.data import load_episode
from lsm.train.evaluate import unroll

SOURCES = ("latent", "channels", "memory")


def replay_trace(student, trace: str | Path) -> dict[str, np.ndarray]:
    """The student run on a teacher trace's inputs: (T, N, ·) latent, channels, memory."""

    states = [state for state, _ in unroll(student.model.eval(), load_episode(trace, identity=student.identity))]
    return {k: np.stack([getattr(st, k).numpy() for st in states]).astype(np.float32) for k in SOURCES}


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]) if a.ndim == 3 else a.reshape(-1)


def identity_targets(pop, ticks: int) -> dict[str, tuple[str, np.ndarray]]:
    out = {}
    for a in pop.categorical:
        out[f"identity:{a}"] = ("classification", np.tile(pop.categorical[a].astype(np.int64), ticks))
    for a, v in pop.numeric.items():
        out[f"identity:{a}"] = ("regression", np.tile(v.astype(np.float64), ticks))
    return out


def axis_recovery(student, rollout: str | Path, teacher: str | Path | None = None, seed: int = 0) -> list[ProbeResult]:
    results: list[ProbeResult] = []

    with TraceFile(rollout) as tf:
        ask = missing_fields(tf.fields, {"latent": "latent", "memory": "memory"}, rollout, "lsm probe")
        if ask:
            raise UsageError(ask)
        pop, _ = tf.world()
        feats = {k: tf.array(k).astype(np.float32) for k in SOURCES}
        T, N = tf.n_ticks, tf.n_agents
    agents = np.tile(np.arange(N), T)
    for target, (kind, y) in identity_targets(pop, T).items():
        for src in SOURCES:
            r = fit_probe(_rows(feats[src]), y, agents, kind, target, src, seed)
            if r is not None:
                results.append(r)
    if teacher is None:
        return results
    with TraceFile(teacher) as tf:
        sc = tf.scenario
        valid = tf.array("valid")
        t_channels = np.nan_to_num(tf.array("channels").astype(np.float64))
        decision = tf.array("decision").astype(np.int64)
        reasoning = tf.array("reasoning") if "reasoning" in tf.fields else None
        Tt, Nt = tf.n_ticks, tf.n_agents
    rep = replay_trace(student, teacher)
    v = valid.reshape(-1)
    ag = np.tile(np.arange(Nt), Tt)[v]
    targets: dict[str, tuple[str, np.ndarray]] = {}
    for c, name in enumerate(sc.channel_names):
        targets[f"teacher_channel:{name}"] = ("regression", t_channels[..., c].reshape(-1)[v])
    targets["teacher_decision"] = ("classification", decision.reshape(-1)[v])
    if reasoning is not None:
        for name, lab in label_texts(reasoning).items():
            targets[f"reasoning:{name}"] = ("classification", lab.reshape(-1)[v].astype(np.int64))
    for target, (kind, y) in targets.items():
        for src in SOURCES:
            r = fit_probe(_rows(rep[src])[v], y, ag, kind, target, src, seed)
            if r is not None:
                results.append(r)
    return results


def format_results(results: list[ProbeResult]) -> str:
    lines = ["| target | source | metric | held-out | shuffled labels | chance | top dims (|coef|) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        metric = "accuracy" if r.kind == "classification" else "R²"
        dims = ", ".join(f"{d} ({c:.2f})" for d, c in r.top_dims)
        lines.append(f"| {r.target} | {r.source} | {metric} | {r.score:.3f} | {r.shuffled:.3f} | {r.chance:.3f} | {dims} |")
    return "\n".join(lines)


def write_probe_report(results: list[ProbeResult], out_dir: str | Path, title: str, readout_md: str = "") -> str:
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probes.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    latent = [r for r in results if r.source == "latent"]
    if latent:
        fig, ax = plt.subplots(figsize=(7, 0.32 * len(latent) + 1.2))
        y = np.arange(len(latent))
        ax.barh(y - 0.2, [r.score for r in latent], height=0.4, label="held-out")
        ax.barh(y + 0.2, [max(r.shuffled, r.chance) for r in latent], height=0.4, label="max(shuffled, chance)")
        ax.set_yticks(y, [f"{r.target} ({'acc' if r.kind == 'classification' else 'R²'})" for r in latent], fontsize=7)
        ax.set_xlabel("score")
        ax.set_title("probes from the free latent", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "axis_recovery.png", dpi=110)
        plt.close(fig)
    recovered = [r for r in results if r.above_baseline > 0.05]
    md = [f"# {title}", "", "Linear probes, split by agent (30 % of agents held out); beside each score, the same probe "
          "trained on shuffled labels and the majority-class rate. Regression: R²; classification: accuracy. "
          f"Text features: keyword rules of `lsm.probes.features` ({', '.join(TEXT_FEATURES)}).", "",
          f"{len(recovered)} of {len(results)} probes beat their baseline by > 0.05.", "",
          format_results(results), "", "![axis recovery](axis_recovery.png)" if latent else "", ""]
    if readout_md:
        md += [readout_md, ""]
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    return text
