"""What the paired loss buys on a teacher corpus with contrasts, at equal training steps.

    python -m lsm.recovery.paired --traces A.h5,B.h5 [--held_out 20] [--steps 300] [--seeds 2] [--contrast_weight 10]
                                  [--models "student + paired loss"] [--json P.json]

The traces' agents are split (a seeded permutation; the last `held_out` are held out of every
model). Three students are trained on the others for the same number of steps, each with
`seeds` seeds: the identity-only model (`graph: false`), the student without the paired loss
(`contrast` weight 0) and with it. On the held-out agents each is scored by its decision KL to
the teacher (replayed along the traces) and by its paired effects against the teacher's
(`train.evaluate.paired_contrast_table`: mean TV of the change under each contrast, their ratio,
and `r`, the correlation of the two changes across agent-ticks).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsm.recovery.capacity import CapacityConfig, held_out_split, train_on_agents
from lsm.train.data import Episode
from lsm.train.datamodule import TraceDataModule
from lsm.train.evaluate import format_contrast_table, paired_contrast_table, unroll

MODELS = {"identity only": ({"graph": False}, False), "student": ({}, False), "student + paired loss": ({}, True)}
"""name -> (student overrides, paired loss)."""


def held_out_kl(model, eps: list[Episode], rows: torch.Tensor) -> float:
    """Mean KL(teacher ‖ student) of the decision over the valid agent-ticks of agents `rows`."""
    kls = []
    for ep in eps:
        probs = torch.stack([torch.softmax(out.decision_logits, -1) for _, out in unroll(model, ep)])  # (T, N, A)
        v = ep.targets["valid"][:, rows]
        p, q = ep.targets["decision_dist"][:, rows][v], probs[:, rows][v].clamp_min(1e-8)
        kls.append((p * (torch.log(p.clamp_min(1e-8)) - torch.log(q))).sum(-1))
    return float(torch.cat(kls).mean())


def only_rows(ep: Episode, rows: torch.Tensor) -> Episode:
    """`ep` with the contrasts of agents other than `rows` blanked (NaN): scored on `rows` only."""
    q = ep.targets["contrast_dist"].clone()
    keep = torch.zeros(ep.n, dtype=torch.bool)
    keep[rows] = True
    q[:, ~keep] = float("nan")
    return replace(ep, targets={**ep.targets, "contrast_dist": q})


def run(traces: list[str], held_out: int = 20, steps: int = 300, seeds: int = 2, preset: str = "small",
        contrast_weight: float = 10.0, models: list[str] | None = None) -> dict[str, Any]:
    dm = TraceDataModule(list(traces))
    dm.setup()
    eps = dm.train_episodes
    if any("contrast_dist" not in e.targets for e in eps):
        raise ValueError("every trace must store paired contrasts (teacher contrast_fraction > 0)")
    sizes = {"categorical_sizes": dm.categorical_sizes, "numeric_dim": dm.numeric_dim, "channels": dm.channels}
    N = eps[0].n
    order = held_out_split(N, 0)
    train_rows, held = order[: N - held_out].sort().values, order[N - held_out:].sort().values
    scored = [only_rows(e, held) for e in eps]
    out: dict[str, Any] = {"traces": list(traces), "held_out_agents": int(held_out), "steps": steps,
                           "contrast_weight": contrast_weight, "models": {}}
    for name, (student, paired) in MODELS.items():
        if models and name not in models:
            continue
        runs = []
        for s in range(seeds):
            t0 = time.perf_counter()
            cfg = CapacityConfig(steps=steps, seed=s, preset=preset, contrast_weight=contrast_weight)
            model = train_on_agents(eps, train_rows, {**sizes, **student}, cfg, paired)
            table = paired_contrast_table(model, scored) if student.get("graph", True) else {}
            runs.append({"seed": s, "kl": held_out_kl(model, eps, held), "contrasts": table,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  {name}, seed {s}: held-out KL {runs[-1]['kl']:.4f}, {runs[-1]['seconds']:.0f} s", flush=True)
        out["models"][name] = runs
    return out


def format_paired(r: dict[str, Any]) -> str:
    lines = [f"Held-out agents: {r['held_out_agents']} of each trace; {r['steps']} steps per model.", "",
             "| model | held-out decision KL (mean over seeds; each seed) |", "|---|---|"]
    for name, runs in r["models"].items():
        kl = [x["kl"] for x in runs]
        lines.append(f"| {name} | {np.mean(kl):.4f} ({', '.join(f'{k:.4f}' for k in kl)}) |")
    for name in ("student", "student + paired loss"):
        if name in r["models"]:
            lines += ["", f"{name}, seed 0:", format_contrast_table(r["models"][name][0]["contrasts"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lsm.recovery.paired", description=__doc__.split("\n")[0])
    ap.add_argument("--traces", required=True, help="teacher traces of one world with paired contrasts, comma-separated")
    ap.add_argument("--held_out", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--contrast_weight", type=float, default=10.0, help="the paired loss's weight")
    ap.add_argument("--models", default="", help="only these models, comma-separated (default: all of MODELS)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    r = run([t for t in a.traces.split(",") if t], a.held_out, a.steps, a.seeds, contrast_weight=a.contrast_weight,
            models=[m for m in a.models.split(",") if m])
    print(format_paired(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
