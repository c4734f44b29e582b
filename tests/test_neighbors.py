"""The teacher's neighbour rule, vectorised for rollouts, equals the per-agent loop it replaced."""
from __future__ import annotations

import numpy as np

from lsm.society.loop.neighbors import NeighborIndex


def loop_reference(idx: NeighborIndex, keys: np.ndarray, k: int) -> np.ndarray:
    n = len(idx.ptr) - 1
    out = np.full((n, k), -1, dtype=np.int32)
    for i in range(n):
        lo, hi = idx.ptr[i], idx.ptr[i + 1]
        chosen: list[int] = []
        for o in np.argsort(-keys[lo:hi], kind="stable"):
            if not np.isfinite(keys[lo + o]) or len(chosen) == k:
                break
            s = int(idx.sender[lo + o])
            if s != i and s not in chosen:
                chosen.append(s)
        out[i, : len(chosen)] = chosen
    return out


def test_vectorised_top_k_equals_the_loop():
    rng = np.random.default_rng(0)
    n, e = 300, 4000
    recv = np.sort(rng.integers(0, n, e))
    sender = rng.integers(0, n, e)  # includes self loops and repeated senders (multi-typed ties)
    etype = rng.integers(0, 5, e)
    log_w = np.log(np.array([1.0, 0.5, 1.0, 2.0, 1.0]))[etype]
    log_w[etype == 2] = -np.inf  # a type that is never shown
    idx = NeighborIndex(np.searchsorted(recv, np.arange(n + 1)), sender, etype, log_w)
    has = rng.random(n) < 0.8
    for k in (1, 3, 8):
        for seed in range(3):
            keys = log_w + np.random.default_rng(seed).gumbel(size=e)
            keys[~has[sender]] = -np.inf
            got = idx.sample(k, has, np.random.default_rng(seed))
            np.testing.assert_array_equal(got, loop_reference(idx, keys, k))
            assert (got >= 0).sum() > 0


def test_top_k_breaks_ties_by_the_lower_sender_and_skips_receivers_without_candidates():
    rng = np.random.default_rng(1)
    n, e = 200, 3000
    recv = np.sort(rng.integers(0, n, e))
    sender = rng.integers(0, n, e)
    recv[recv == 7] = 8  # receiver 7 has no in-edges at all
    recv = np.sort(recv)
    log_w = np.zeros(e)
    idx = NeighborIndex(np.searchsorted(recv, np.arange(n + 1)), sender, np.zeros(e, dtype=np.int64), log_w)
    for k in (1, 4):
        keys = np.zeros(e)  # every key equal: the k lowest distinct sender ids, self excluded
        got = idx.top_k(keys, k)
        for i in range(n):
            want = sorted({int(s) for s in sender[idx.ptr[i]:idx.ptr[i + 1]] if s != i})[:k]
            assert got[i, :len(want)].tolist() == want and (got[i, len(want):] == -1).all(), i
        assert (got[7] == -1).all()
