"""`lsm evaluate`: a student checkpoint on held-out traces, beside the baselines of `train.evaluate`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lsm.config import UsageError


@dataclass
class HeldOutResult:
    metrics: dict[str, dict[str, float]]
    """predictor -> metric -> mean over the held-out episodes (see `train.evaluate.evaluate`)."""
    ablations: dict[str, dict[str, float]]
    """paired ablation -> the student's TV per agent-tick and its interval (`paired_ablation_table`)."""
    held_out: list[str]
    train: list[str]
    text: str
    """The markdown table `lsm evaluate` prints."""


def _paths(files: str | Sequence[str]) -> list[str]:
    from lsm.train.datamodule import expand_patterns

    return expand_patterns(files.split(",") if isinstance(files, str) else list(files))


def evaluate_checkpoint(checkpoint: str | Path, held_out: str | Sequence[str], mlp: str | Path | None = None,
                        train: str | Sequence[str] | None = None) -> HeldOutResult:
    """Evaluate a checkpoint (file or run folder) on held-out trace files (a list, or one string
    of comma-separated files and globs); the marginal baseline comes from `train` (default: the
    checkpoint's own training files), the identity-only baseline from the `mlp` checkpoint."""
    from lsm.model.checkpoint import load_checkpoint
    from lsm.train.data import load_episode
    from lsm.train.evaluate import evaluate, format_table, paired_ablation_table

    student = load_checkpoint(checkpoint)
    train_paths = _paths(train) if train else student.train_paths
    if not train_paths:
        raise UsageError(f"{checkpoint} does not record its training files; pass --train")
    held_paths = _paths(held_out)
    train_eps = [load_episode(p, student.vocab) for p in train_paths]
    held_eps = [load_episode(p, student.vocab) for p in held_paths]
    baseline = load_checkpoint(mlp).model if mlp else None
    metrics = evaluate(student.model, train_eps, held_eps, baseline)
    abl = paired_ablation_table(student.model, held_eps)
    text = [format_table(metrics, f"held out: {', '.join(held_paths)}"), "",
            "Paired ablations: the student's TV per agent-tick between its factual and changed decision distributions "
            "(ticks >= 1; 95 % bootstrap interval over agents). The teacher's own: `lsm sensitivity TRACE`.", "",
            "| change | student TV | 95 % interval |", "|---|---|---|"]
    text += [f"| {k} | {v['student_tv']:.4f} | [{v['low']:.4f}, {v['high']:.4f}] |" for k, v in abl.items()]
    return HeldOutResult(metrics, abl, held_paths, list(train_paths), "\n".join(text))
