"""`lsm evaluate`: a student checkpoint on held-out traces, beside the baselines of `train.evaluate`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lsm.config import ConfigError, UsageError
from lsm.documents import read_document
from lsm.model.checkpoint import load_checkpoint
from lsm.society import interventions, stats
from lsm.train.data import load_episode
from lsm.train.datamodule import expand_patterns
from lsm.train.evaluate import evaluate, format_contrast_table, format_table, paired_ablation_table, paired_contrast_table
from lsm.train.replay import replay


@dataclass
class HeldOutResult:
    metrics: dict[str, dict[str, float]]
    """predictor -> metric -> mean over the held-out episodes (see `train.evaluate.evaluate`)."""
    ablations: dict[str, dict[str, float]]
    """paired ablation -> the student's TV per agent-tick and its interval (`paired_ablation_table`)."""
    contrasts: dict[str, dict]
    """paired contrast -> the teacher's and the student's TV and their ratio (`paired_contrast_table`;
    {} when no held-out trace stores contrasts)."""
    held_out: list[str]
    train: list[str]
    text: str
    """The markdown table `lsm evaluate` prints."""


def _paths(files: str | Sequence[str]) -> list[str]:

    return expand_patterns(files.split(",") if isinstance(files, str) else list(files))


def beside_sensitivity(model, held_paths: list[str], held_eps: list, sensitivity: str | Path) -> str:
    """The teacher's own TV (`lsm sensitivity --json`) beside the student's for the same agents and tick."""
    import numpy as np



    try:
        r = read_document(sensitivity, kind="sensitivity JSON")  # a ConfigError (its own paragraph) if unreadable
        tick, ids = int(r["tick"]), [int(i) for i in r["agent_ids"]]
        str(r["trace"])
    except (ValueError, KeyError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise UsageError(f"--sensitivity {sensitivity}: not a JSON from `lsm sensitivity TRACE --json FILE` "
                         f"with its tick and agent_ids ({err})") from None
    match = [k for k, p in enumerate(held_paths) if Path(p).resolve() == Path(r["trace"]).resolve()]
    if not match:
        raise UsageError(f"--sensitivity {sensitivity} measured {r['trace']}, which is not among the held-out files")
    ep = held_eps[match[0]]
    pairs = {"no_messages": interventions.no_messages, "opposite_messages": interventions.opposite_stance}
    res = replay(model, ep, {k: interventions.as_edit(e, ep.targets["stance"]) for k, e in pairs.items()}, samples=8)
    rows = ["| change | teacher TV (lsm sensitivity) | student TV, same agents and tick | student 95 % interval |", "|---|---|---|---|"]
    for name in pairs:
        tv = stats.paired_tv(res["factual"]["probs"].numpy(), res[name]["probs"].numpy()).mean(0)[tick, ids]  # (agents,)
        est, lo, hi = stats.bootstrap(tv, np.arange(len(ids)))
        rows.append(f"| {name.replace('_', ' ')} | {r['variants'][name]['mean_tv']:.4f} | {est:.4f} | [{lo:.4f}, {hi:.4f}] |")
    return "\n".join([f"The teacher's own neighbour effect beside the student's: {r['trace']}, tick {tick}, {len(ids)} agents "
                      "(the teacher's opposite messages are the pool's most opposite, the student's each sender's nearest opposite).",
                      "", *rows])


def evaluate_checkpoint(checkpoint: str | Path, held_out: str | Sequence[str], mlp: str | Path | None = None,
                        train: str | Sequence[str] | None = None, sensitivity: str | Path | None = None) -> HeldOutResult:
    """Evaluate a checkpoint (file or run folder) on held-out trace files (a list, or one string
    of comma-separated files and globs); the marginal baseline comes from `train` (default: the
    checkpoint's own training files), the identity-only baseline from the `mlp` checkpoint."""

    student = load_checkpoint(checkpoint)
    train_paths = _paths(train) if train else student.train_paths
    if not train_paths:
        raise UsageError(f"{checkpoint} does not record its training files; pass --train")
    held_paths = _paths(held_out)
    train_eps = [load_episode(p, identity=student.identity) for p in train_paths]
    held_eps = [load_episode(p, identity=student.identity) for p in held_paths]
    baseline = load_checkpoint(mlp).model if mlp else None
    metrics = evaluate(student.model, train_eps, held_eps, baseline)
    abl = paired_ablation_table(student.model, held_eps)
    text = [format_table(metrics, f"held out: {', '.join(held_paths)}"), "",
            "Paired ablations: the student's TV per agent-tick between its factual and changed decision distributions "
            "(ticks >= 1; 95 % bootstrap interval over agents). The teacher's own: `lsm sensitivity TRACE`.", "",
            "| change | student TV | 95 % interval |", "|---|---|---|"]
    text += [f"| {k} | {v['student_tv']:.4f} | [{v['low']:.4f}, {v['high']:.4f}] |" for k, v in abl.items()]
    contrasts = paired_contrast_table(student.model, held_eps)
    if contrasts:
        text += ["", format_contrast_table(contrasts)]
    if sensitivity:
        text += ["", beside_sensitivity(student.model, held_paths, held_eps, sensitivity)]
    return HeldOutResult(metrics, abl, contrasts, held_paths, list(train_paths), "\n".join(text))
