"""Describe the reference corpus: size, throughput, invalid and repair rates, one example per file.

    python -m lsm.data_gen.corpus.describe data_gen/corpus/n20
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from lsm.society.store import TraceFile


def describe(folder: str | Path, examples: bool = True) -> str:
    folder = Path(folder)
    lines = [f"{'file':<26} {'agent-ticks':>11} {'invalid':>8} {'repaired':>9} {'agent-ticks/s':>13} {'tokens/s':>9} {'MiB':>6}"]
    out_examples = []
    total = 0
    for path in sorted(folder.glob("*_s*.h5")):
        size = path.stat().st_size / 2**20
        total += path.stat().st_size
        with TraceFile(path) as tf:
            s = json.loads(tf.f.attrs["summary"])
            lines.append(f"{path.name:<26} {s['agent_ticks']:>11} {s['invalid_rate']:>8.1%} {s['repaired'] / max(s['agent_ticks'], 1):>9.1%} "
                         f"{s['agent_ticks_per_llm_second']:>13.3f} {s['tokens_per_llm_second']:>9.0f} {size:>6.2f}")
            if examples and path.name.endswith("_s0.h5"):
                t = min(1, tf.n_ticks - 1)
                v = np.nonzero(tf.array("valid")[t])[0]
                if len(v):
                    i = int(v[0])
                    sc = tf.scenario
                    dist = tf.array("decision_dist")[t, i]
                    ch = tf.array("channels")[t, i]
                    ex = {
                        "tick": t, "agent": i, "reasoning": tf.array("reasoning")[t, i], "message": tf.array("expression")[t, i],
                        "stance": round(float(tf.array("stance")[t, i]), 2),
                        "decision": sc.actions.labels[int(tf.array("decision")[t, i])],
                        "decision_dist": {k: round(float(p), 3) for k, p in zip(sc.actions.labels, dist)},
                        "channels": {k: round(float(c), 2) for k, c in zip(sc.channel_names, ch)},
                        "memory": tf.array("salient_memory")[t, i], "salience": round(float(tf.array("salience")[t, i]), 2),
                    }
                    if "decision_value" in tf.fields:
                        ex["decision_value"] = float(tf.array("decision_value")[t, i])
                    out_examples.append(f"{sc.name}:\n" + json.dumps(ex, indent=1, ensure_ascii=False))
    lines.append(f"total size {total / 2**20:.2f} MiB")
    return "\n".join(lines + [""] + out_examples)


if __name__ == "__main__":
    print(describe(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "n20"))
