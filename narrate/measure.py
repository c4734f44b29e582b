"""Narration latency and grounding pass rate over the first agents of a rollout.

    python -m lsm.narrate.measure --ckpt runs/small/checkpoints --rollout vc.h5 --agents 20 --ticks 3
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from lsm.config import load_config, resolve_config
from lsm.data_gen.teacher.config import TeacherConfig, make_backend
from lsm.model.checkpoint import load_checkpoint
from lsm.narrate.narrator import narrate
from lsm.probes.readout import agent_readout

QUESTION = "Why did you decide as you did in the last tick?"


def main(argv: list[str] | None = None) -> None:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--rollout", required=True)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--ticks", type=int, default=3, help="narrate ticks 0..ticks-1")
    ap.add_argument("--teacher", default="embedded")
    args = ap.parse_args(argv)
    student = load_checkpoint(args.ckpt)
    backend = make_backend(load_config(TeacherConfig, resolve_config(args.teacher, "teacher"), kind="teacher config"))
    rows = []
    for i in range(args.agents):
        rec = agent_readout(student, args.rollout, i, range(args.ticks))
        n, q = narrate(rec, backend, seed=0), narrate(rec, backend, question=QUESTION, seed=0)
        rows.append({"agent": i, "narrative_grounded": n.grounded, "narrative_s": round(n.seconds, 2), "narrative_attempts": n.attempts,
                     "interview_grounded": q.grounded, "interview_s": round(q.seconds, 2), "interview_attempts": q.attempts,
                     "flagged": [f"{x.kind}: {x.detail}" for x in n.issues + q.issues]})
        print(json.dumps(rows[-1]), flush=True)
    for kind in ("narrative", "interview"):
        print(f"{kind}: grounded {sum(r[f'{kind}_grounded'] for r in rows)}/{len(rows)}, "
              f"{np.mean([r[f'{kind}_attempts'] for r in rows]):.2f} generations, {np.mean([r[f'{kind}_s'] for r in rows]):.1f} s per agent")


if __name__ == "__main__":
    main()
