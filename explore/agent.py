"""The Agent panel's data: one agent's whole record in a trace or rollout, read without loading
the file (one agent's row of each field per tick).

The tie type of each shown neighbour comes from the file's graph, held in memory per file as
receiver-sorted CSR (`probes.readout.file_ties`), so a 10^6-agent file reads its 2 x 10^7 edges once, not per click.
Attention weights (student rollouts) need the checkpoint and a replay: `attention`.

Legend: N agents | T ticks | K shown neighbours | E events per agent-tick | A actions | C channels.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lsm.probes.readout import agent_readout, file_ties, identity_of
from lsm.society.scenario import EVENT_FEATURES
from lsm.society.store import TRACE_FIELDS, TraceFile

TEXT_FIELDS = ("reasoning", "expression", "salient_memory", "error")


def _one(ds: h5py.Dataset, i: int) -> Any:
    v = ds[i]
    return v.decode() if isinstance(v, bytes) else v


def identity(f: h5py.File, i: int) -> dict[str, Any]:
    """Agent i's identity, persona and backstory, read from the population group alone."""
    pop = f["population"]
    return {"identity": identity_of(f, i), "persona": _one(pop["persona"], i),
            "backstory": _one(pop["backstory"], i) if "backstory" in pop else None}


def agent_record(path: Path, i: int) -> dict[str, Any]:
    """Everything the file holds about agent i, tick by tick."""
    with TraceFile(path) as tf:
        n = tf.n_agents
        if not 0 <= i < n:
            raise IndexError(f"agent {i} is not in this file (agents 0..{n - 1})")
        sc = tf.scenario
        actions, channels = list(sc.actions.labels), list(sc.channel_names)
        f = tf.f
        events = {e["uid"]: e for e in tf.events()}
        names = f["population/names"]
        tw = file_ties(path)
        out = {"agent": i, "kind": tf.kind, "actions": actions, "channels": channels, **identity(f, i),
               "ties": tw.degree_by_type(i), "ticks": []}
        for t in range(tf.n_ticks):
            row: dict[str, Any] = {"tick": t}
            for name in tf.fields:
                if name in ("expression_emb", "reasoning_emb", "latent", "memory"):
                    continue
                v = f[name][t, i]
                if TRACE_FIELDS[name].dtype == "str":
                    row[name] = v.decode() if isinstance(v, bytes) else str(v)
                elif np.ndim(v):
                    row[name] = np.asarray(v, dtype=float if v.dtype.kind == "f" else int).tolist()
                else:
                    row[name] = v.item()
            d = int(row["decision"])
            row["decision_label"] = actions[d] if 0 <= d < len(actions) else None
            if "shown_neighbors" in row:
                row["shown"] = [{"agent": int(j), "name": _one(names, int(j)), "tie": tw.tie(int(j), i),
                                 "their_decision": actions[int(f["decision"][t - 1, int(j)])]
                                 if t > 0 and 0 <= int(f["decision"][t - 1, int(j)]) < len(actions) else None}
                                for j in row.pop("shown_neighbors") if j >= 0]
            if "exposed_events" in row:
                row["events"] = [{k: events[int(u)][k] for k in ("uid", "tick", "origin", "source", *EVENT_FEATURES, "text")}
                                 for u in row.pop("exposed_events") if u >= 0 and int(u) in events]
            out["ticks"].append(row)
    return out


def find_checkpoint(path: Path, override: str | Path | None) -> Path | None:
    """The checkpoint that wrote a rollout: `override` if given, else the one its config records
    (as written, then relative to the rollout's folder and its parents), else `runs/checkpoints`
    beside the rollout."""
    if override:
        return Path(override)
    with h5py.File(path, "r") as f:
        rec = json.loads(str(f.attrs.get("config.student", "{}"))).get("checkpoint") if "config.student" in f.attrs else None
    candidates = []
    if rec:
        p = Path(rec)
        candidates.append(p)
        if not p.is_absolute():
            here = path.parent.resolve()
            candidates += [parent / p for parent in (here, *here.parents)]
    candidates.append(path.parent / "runs" / "checkpoints")
    return next((c for c in candidates if c.exists()), None)


def attention(student, path: Path, i: int) -> list[dict[str, Any]]:
    """Per tick: the agent's attention (last layer, mean over heads) over its shown neighbours and
    itself, summed by tie type, and the top neighbours (`probes.readout.agent_readout`)."""

    r = agent_readout(student, path, i)
    out = []
    for t in r.ticks:
        by_tie: dict[str, float] = {}
        for a in t.attention:
            by_tie[a["tie"]] = by_tie.get(a["tie"], 0.0) + a["weight"]
        out.append({"tick": t.tick, "by_tie": by_tie, "top": t.attention[:5], "write_slot": t.write_slot,
                    "salience": t.salience})
    return out
