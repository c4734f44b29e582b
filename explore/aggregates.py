"""What the Overview shows of one file, computed once per file and cached beside it.

A trace or rollout is read one tick at a time and only in the fields an overview needs
(decision, valid, channels, exposures and the population's category codes), so a 10^6-agent
rollout opens without loading it whole. The result is written as `<file>.overview.explore.json` next to
the file (or kept in memory when the folder is read-only), keyed by the file's size, mtime and
content checksum: a rewritten file is recomputed, an unchanged one is served from the cache.

Legend: N agents | T ticks | A actions | C channels | G groups of one attribute | U event uids.
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsm.infer.report import RunView, _categorical_labels, group_codes, means_by, shares_by
from lsm.infer.validate import HIGHER_IS_BETTER
from lsm.infer.validate import compare as metrics
from lsm.society.store import TraceFile

CACHE_SUFFIX = ".explore.json"
CACHE_VERSION = 2
MAX_GROUPS = 24
"""Attributes with more categories than this are not offered for the by-attribute view."""

_memory: dict[str, tuple[str, dict]] = {}
_lock = threading.Lock()


def _key(path: Path) -> str:
    import h5py

    st = path.stat()
    with h5py.File(path, "r") as f:
        checksum = str(f.attrs.get("content_checksum", ""))
    return f"{CACHE_VERSION}:{st.st_size}:{st.st_mtime_ns}:{checksum}"


def _finite(x: Any) -> Any:
    """JSON has no NaN: None instead, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def cached(path: Path, what: str, compute) -> dict[str, Any]:
    """`compute(path)` once per file and `what` (see the module docstring): from memory, else from
    `<file>.<what>.explore.json` when its key matches, else computed and written there."""
    key = _key(path)
    cache = path.with_name(f"{path.name}.{what}{CACHE_SUFFIX}")
    with _lock:
        hit = _memory.get(str(cache))
        if hit and hit[0] == key:
            return hit[1]
        if cache.is_file():
            try:
                stored = json.loads(cache.read_text())
                if stored.get("key") == key:
                    _memory[str(cache)] = (key, stored["value"])
                    return stored["value"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is recomputed
    t0 = time.perf_counter()
    result = _finite(compute(path))
    result["compute_seconds"] = round(time.perf_counter() - t0, 3)
    with _lock:
        _memory[str(cache)] = (key, result)
        try:
            tmp = cache.with_name(cache.name + ".tmp")
            tmp.write_text(json.dumps({"key": key, "value": result}))
            tmp.replace(cache)
        except OSError:
            pass  # a read-only folder: the memory cache serves
    return result


def overview(path: Path) -> dict[str, Any]:
    """The overview of a trace or rollout (cached: see the module docstring)."""
    return cached(path, "overview", compute_overview)


def compute_overview(path: Path) -> dict[str, Any]:
    with TraceFile(path) as tf:
        sc = tf.scenario
        actions, channels = list(sc.actions.labels), list(sc.channel_names)
        T, N, A, C = tf.n_ticks, tf.n_agents, len(actions), len(channels)
        attrs = {}
        for a, labels in _categorical_labels(tf).items():
            groups, codes = group_codes(labels)
            if len(groups) <= MAX_GROUPS:
                attrs[a] = (groups, codes)
        shares = np.zeros((T, A))  # (T, A)
        by = {a: {"groups": [str(g) for g in groups], "size": np.bincount(codes, minlength=len(groups)).tolist(),
                  "shares": [], "channel_means": []} for a, (groups, codes) in attrs.items()}
        ch_mean, ch_std, ch_q = np.full((T, C), np.nan), np.full((T, C), np.nan), np.full((T, C, 3), np.nan)
        valid_share = np.zeros(T)
        events = tf.events()
        reach = np.zeros(max([e["uid"] for e in events], default=-1) + 1, np.int64)  # (U,)
        has_exposure = "exposed_events" in tf.fields
        has_dist = "decision_dist" in tf.fields
        prob_mean = np.full((T, A), np.nan)  # (T, A) mean decision probabilities of the valid agents
        for t in range(T):
            sl = slice(t, t + 1)
            d = tf.f["decision"][sl][0].astype(np.int64)  # (N,)
            v = tf.f["valid"][sl][0].astype(bool)  # (N,)
            ch = np.nan_to_num(tf.f["channels"][sl][0].astype(np.float32))  # (N, C)
            valid_share[t] = v.mean() if N else 0.0
            shares[t] = shares_by(np.zeros(N, np.int64), 1, d[None], v[None], A)[0, 0]
            for a, (groups, codes) in attrs.items():
                by[a]["shares"].append(shares_by(codes, len(groups), d[None], v[None], A)[0].tolist())  # (G, A)
                by[a]["channel_means"].append(means_by(codes, len(groups), ch, v).tolist())  # (G, C)
            if v.any():
                ch_mean[t], ch_std[t] = ch[v].mean(0), ch[v].std(0)
                ch_q[t] = np.percentile(ch[v], [25, 50, 75], axis=0).T
            if has_dist and v.any():
                dist = tf.f["decision_dist"][sl][0]  # (N, A')
                prob_mean[t, : min(A, dist.shape[1])] = dist[v].astype(np.float64).mean(0)[:A]
            if has_exposure and len(reach):
                u = tf.f["exposed_events"][sl][0].reshape(-1)
                u = u[u >= 0]
                reach += np.bincount(u, minlength=len(reach))[: len(reach)]
        for e in events:
            e["reach"] = int(reach[e["uid"]]) if has_exposure else None
        summary = json.loads(tf.f.attrs["summary"]) if "summary" in tf.f.attrs else {}
        return {
            "kind": tf.kind, "agents": N, "ticks": T, "actions": actions, "channels": channels,
            "scenario": sc.name, "tick_length": getattr(sc, "tick_length", ""),
            "seeds": tf.seeds, "fields": tf.fields,
            "valid_share": valid_share.tolist(),
            "decision_shares": shares.tolist(),
            "decision_prob_mean": prob_mean.tolist() if has_dist else None,
            "channel_mean": ch_mean.tolist(), "channel_std": ch_std.tolist(),
            "channel_quartiles": ch_q.tolist(),
            "by": by,
            "events": events,
            "triggers_fired": [e for e in events if str(e["origin"]).startswith("trigger")],
            "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
        }


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Two runs of one world and scenario side by side: B - A decision shares and channel means
    per tick, and every `lsm validate` metric of B against A (A the reference)."""

    oa, ob = overview(a), overview(b)
    if oa["actions"] != ob["actions"]:
        raise ValueError(f"the two files have different actions ({', '.join(oa['actions'])} / {', '.join(ob['actions'])}): "
                         "only runs of one scenario's action space compare")
    if oa["agents"] != ob["agents"]:
        raise ValueError(f"the two files have {oa['agents']} and {ob['agents']} agents: only runs of one world compare")
    T = min(oa["ticks"], ob["ticks"])
    diff = (np.asarray(ob["decision_shares"][:T]) - np.asarray(oa["decision_shares"][:T])).tolist()
    ch = (np.asarray(ob["channel_mean"][:T], dtype=float) - np.asarray(oa["channel_mean"][:T], dtype=float)).tolist()
    probs = None
    if oa.get("decision_prob_mean") is not None and ob.get("decision_prob_mean") is not None:
        # the mean decision probabilities move where the sampled decisions may not (a small shift
        # changes an agent's draw only near a boundary)
        probs = (np.asarray(ob["decision_prob_mean"][:T], dtype=float) - np.asarray(oa["decision_prob_mean"][:T], dtype=float)).tolist()
    with_metrics = max(oa["agents"], ob["agents"]) <= 200_000  # the k-means and W1 over every agent
    m = metrics(RunView.read(a), RunView.read(b)) if with_metrics else {}
    return _finite({"ticks": T, "actions": oa["actions"], "channels": oa["channels"], "a": oa, "b": ob,
                    "share_difference": diff, "prob_difference": probs, "channel_mean_difference": ch,
                    "metrics": [{"metric": k, "value": v, "better": "higher" if k in HIGHER_IS_BETTER else "lower"}
                                for k, v in m.items()]})
