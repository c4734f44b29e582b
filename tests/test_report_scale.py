"""The report at scale: k-means fitted on a sample, vectorised group tables, a lean `RunView.read`.

Each test compares the fast path with a plain reference: full-data k-means, per-group loops, the
full world read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from lsm.society.store import TraceFile
from lsm.infer.report import (FIT_SAMPLE, RunView, cluster_agents, cluster_profiles, group_table, profile_features,
                              shares, write_run_report)

CORPUS = Path(__file__).resolve().parents[1] / "data_gen/corpus/n20"


def _blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5) four well-separated Gaussian blobs on columns of very different scales, (N,) truth."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (4, 5))  # (4, 5) in units of the blob std
    truth = rng.integers(0, 4, n)
    x = centres[truth] + rng.normal(0, 1, (n, 5))
    return (x * [1.0, 10.0, 0.01, 100.0, 3.0] + [0, 5, -2, 50, 0]).astype(np.float32), truth


def test_sample_fit_equals_full_fit_on_planted_blobs():
    x, truth = _blobs(200_000)
    sampled = cluster_agents(x, 4, seed=0)  # fitted on FIT_SAMPLE agents, all assigned
    full = cluster_agents(x, 4, seed=0, sample=len(x))  # plain k-means on everything
    assert len(x) > FIT_SAMPLE and sampled.shape == (len(x),)
    assert adjusted_rand_score(full, sampled) >= 0.999
    assert adjusted_rand_score(truth, sampled) >= 0.999
    assert np.array_equal(sampled, cluster_agents(x, 4, seed=0))  # seeded


def test_below_the_sample_size_labels_are_plain_kmeans():
    x, _ = _blobs(3_000, seed=1)
    x[:, 2] = 7.0  # a constant column: divided by 1, as before
    z = x.astype(np.float64)
    sd = z.std(0)
    z = (z - z.mean(0)) / np.where(sd > 1e-9, sd, 1.0)
    for k, seed in ((4, 0), (3, 5)):
        ref = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(z)
        assert np.array_equal(cluster_agents(x, k, seed), ref)
        assert np.array_equal(cluster_agents(x, k, seed, sample=len(x)), ref)  # N == sample: still all agents
    assert cluster_agents(np.ones((10, 2), np.float32), 4).max() == 0  # k capped by the distinct rows


def _random_run(N: int = 400, T: int = 3, A: int = 3, C: int = 2, seed: int = 0) -> RunView:
    rng = np.random.default_rng(seed)
    decision = rng.integers(-1, A, (T, N))  # (T, N)
    decision[0, :7] = A  # out of range: counted among the valid decisions, in no action's share (as before)
    valid = rng.random((T, N)) < 0.8
    channels = rng.random((T, N, C)).astype(np.float32)
    labels = np.asarray(["b", "a", "d", "c"], dtype=object)[rng.integers(0, 4, N)]
    valid[1, labels == "c"] = False  # a group with no valid agent at tick 1
    channels[1, labels == "c"] = np.nan  # ... whose (invalid) channels must not leak into the means
    return RunView("x.h5", "student_rollout", [f"a{i}" for i in range(A)], [f"c{i}" for i in range(C)],
                   decision, valid, channels, None, {"g": labels, "h": np.asarray(["x", "y"], dtype=object)[rng.integers(0, 2, N)]})


def _reference(run: RunView, attr: str) -> tuple[list, np.ndarray, np.ndarray]:
    """Per group, per tick, straight from the definitions: (groups, (T, G, A) shares, (T, G, C) means)."""
    labels, A, C = run.groups[attr], len(run.actions), len(run.channels_names)
    groups = sorted(set(labels))
    sh, mean = np.zeros((run.ticks, len(groups), A)), np.full((run.ticks, len(groups), C), np.nan)
    for t in range(run.ticks):
        for i, g in enumerate(groups):
            d = [run.decision[t, j] for j in range(run.n) if labels[j] == g and run.valid[t, j] and run.decision[t, j] >= 0]
            for a in range(A):
                sh[t, i, a] = d.count(a) / len(d) if d else 0.0
            ch = [run.channels[t, j] for j in range(run.n) if labels[j] == g and run.valid[t, j]]
            if ch:
                mean[t, i] = np.mean(ch, 0)
    return groups, sh, mean


def test_group_tables_equal_a_per_group_loop(tmp_path):
    run = _random_run()
    for attr in run.groups:
        groups, sh, mean = _reference(run, attr)
        gt = group_table(run, attr)
        assert gt.groups == groups
        assert gt.size.tolist() == [int((run.groups[attr] == g).sum()) for g in groups]
        np.testing.assert_allclose(gt.shares, sh, atol=1e-12)
        np.testing.assert_allclose(gt.channel_means, mean, rtol=1e-6, equal_nan=True)
    assert np.isnan(group_table(run, "g").channel_means[1, 2]).all()  # "c" (a, b, c, d): no valid agent at tick 1
    np.testing.assert_allclose(shares(run.decision, run.valid, 3), _reference(
        RunView(run.path, run.kind, run.actions, run.channels_names, run.decision, run.valid, run.channels, None,
                {"all": np.zeros(run.n, dtype=object)}), "all")[1][:, 0], atol=1e-12)

    # the CSV: group-major rows, one per (group, tick)
    write_run_report(run, tmp_path, by=["g"], clusters=3)
    rows = [r.split(",") for r in (tmp_path / "decision_shares_by_g.csv").read_text().splitlines()]
    assert rows[0] == ["tick", "g", "a0", "a1", "a2"]
    groups, sh, _ = _reference(run, "g")
    expected = [[str(t), g, *[f"{v:.4f}" for v in sh[t, i]]] for i, g in enumerate(groups) for t in range(run.ticks)]
    assert rows[1:] == expected
    assert "fitted on all 400 agents" in (tmp_path / "summary.md").read_text()


def test_cluster_profiles_equal_masks():
    run = _random_run(seed=2)
    labels = np.random.default_rng(3).integers(0, 3, run.n)
    for row in cluster_profiles(run, labels):
        m = labels == row["cluster"]
        assert row["size"] == int(m.sum())
        assert row["ch_c0"] == pytest.approx(float(run.channels[-1][m, 0].mean()), rel=1e-6)
        d = run.decision[-1][m & run.valid[-1] & (run.decision[-1] >= 0)]
        assert row["share_a2"] == pytest.approx(float((d == 2).mean()))


def test_profile_features_with_and_without_latent():
    run = _random_run(N=50)
    assert profile_features(run).shape == (50, 2)
    run.latent = np.random.default_rng(0).random((run.ticks, 50, 6)).astype(np.float32)  # (T, N, Z)
    f = profile_features(run)
    assert f.shape == (50, 8) and np.array_equal(f[:, 2:], run.latent[-1])


def test_read_takes_groups_from_the_codes_alone():
    path = CORPUS / "vaccine_campaign_s0.h5"
    run = RunView.read(path)
    with TraceFile(path) as tf:
        pop, _ = tf.world()
        assert run.latent is None and "latent" not in tf.fields
        assert run.decision.shape == (tf.n_ticks, tf.n_agents) and run.channels.shape[:2] == run.decision.shape
    assert list(run.groups) == list(pop.categorical)
    for a, labels in run.groups.items():
        assert labels.tolist() == pop.labels(a).tolist()
