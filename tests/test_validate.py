"""Fidelity metrics on hand-made distributions with known answers, and `lsm validate` end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from lsm.infer.report import RunView
from lsm.infer.validate import (METRICS, adjusted_rand, compare, jsd, matched_centroid_distance, tail_survival,
                                wasserstein1)

CORPUS = Path(__file__).resolve().parents[1] / "data_gen/corpus/n20"


def test_jsd_known_values():
    assert jsd([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-12)
    assert jsd([1, 0], [0, 1]) == pytest.approx(math.log(2))
    assert jsd([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(0.5 * math.log(2))
    assert jsd([0.9, 0.1], [0.1, 0.9]) == pytest.approx(jsd([0.1, 0.9], [0.9, 0.1]))  # symmetric


def test_wasserstein_tail_ari_and_centroids():
    x = np.array([0.1, 0.2, 0.3])
    assert wasserstein1(x, x + 0.25) == pytest.approx(0.25)
    assert wasserstein1(x, x) == 0.0
    assert tail_survival(np.array([0.6, 0.35, 0.05]), np.array([0.6, 0.38, 0.02])) == pytest.approx(0.4)
    assert tail_survival(np.array([0.6, 0.35, 0.05]), np.array([0.5, 0.4, 0.1])) == 1.0
    assert math.isnan(tail_survival(np.array([0.5, 0.5]), np.array([0.5, 0.5])))
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand(a, a) == 1.0 and adjusted_rand(a, (a + 1) % 3) == 1.0  # labels are names only
    assert adjusted_rand(a, np.array([0, 1, 0, 1, 0, 1])) < 0.1
    pts = np.array([[0.0, 0], [0, 1], [5, 5], [5, 6]])
    assert matched_centroid_distance(pts, np.array([0, 0, 1, 1]), pts + [3, 4], np.array([1, 1, 0, 0])) == pytest.approx(5.0)


def _run(decision, channels, actions=("a", "b")):
    decision = np.asarray(decision)
    T, N = decision.shape
    return RunView("x", "student_rollout", list(actions), ["c0"], decision, np.ones((T, N), bool),
                   np.asarray(channels, dtype=np.float32).reshape(T, N, 1), None, {})


def test_compare_on_hand_made_runs():
    ref = _run([[0, 0, 1, 1]] * 2, [[0.1, 0.2, 0.3, 0.4]] * 2)
    same = compare(ref, ref, clusters=2)
    assert same["decision_jsd_mean"] == 0 and same["channel_w1_mean"] == 0 and same["channel_mae"] == 0
    assert same["agent_decision_agreement"] == 1 and same["cluster_ari"] == 1 and same["cluster_centroid_distance"] == 0
    flipped = _run([[1, 1, 0, 0]] * 2, [[0.1, 0.2, 0.3, 0.4]] * 2)
    m = compare(ref, flipped, clusters=2)
    assert m["decision_jsd_mean"] == 0  # same shares, ...
    assert m["agent_decision_agreement"] == 0  # ... every agent different
    all_a = _run([[0, 0, 0, 0]] * 2, [[0.6, 0.7, 0.8, 0.9]] * 2)
    m = compare(ref, all_a, clusters=2)
    assert m["decision_jsd_final"] == pytest.approx(jsd([0.5, 0.5], [1, 0]))
    assert m["channel_w1_mean"] == pytest.approx(0.5) and m["channel_mae"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="share the scenario"):
        compare(ref, _run([[0, 0, 1, 1]] * 2, [[0.1] * 4] * 2, actions=("x", "y")))


def _read(path):
    """(T, N) decision, (T, N) valid, (T, N, C) channels straight from the HDF5 file (NaN -> 0, as RunView)."""
    with h5py.File(path, "r") as f:
        return f["decision"][:].astype(np.int64), f["valid"][:].astype(bool), np.nan_to_num(f["channels"][:].astype(np.float64))


def _w1_by_hand(x, y):
    """Wasserstein-1 of two 1-D samples: the integral of |F_x - F_y| between consecutive pooled points."""
    pts = np.sort(np.concatenate([x, y]))
    fx = np.searchsorted(np.sort(x), pts[:-1], side="right") / len(x)
    fy = np.searchsorted(np.sort(y), pts[:-1], side="right") / len(y)
    return float((np.abs(fx - fy) * np.diff(pts)).sum())


def _metrics_by_hand(a, b, actions=3):
    """The documented definitions (module docstring of `lsm.infer.validate`), recomputed with numpy/scipy."""
    from scipy.spatial.distance import jensenshannon

    (da, va, ca), (db, vb, cb) = a, b
    T = min(len(da), len(db))

    def share(d, v):  # decision shares among the valid agents of one tick
        return np.bincount(d[v], minlength=actions) / v.sum()

    per_tick = [jensenshannon(share(da[t], va[t]), share(db[t], vb[t])) ** 2 for t in range(T)]  # natural log
    both = va[:T] & vb[:T]
    return {"decision_jsd_mean": np.mean(per_tick), "decision_jsd_final": per_tick[-1],
            "agent_decision_agreement": (da[:T] == db[:T])[both].mean(),
            "channel_mae": np.abs(ca[:T] - cb[:T])[both].mean(),
            "channel_w1_mean": np.mean([_w1_by_hand(ca[t][va[t], c], cb[t][vb[t], c])
                                        for t in range(T) for c in range(ca.shape[2])])}


def test_lsm_validate_on_the_reference_corpus(tmp_path, capsys):
    from lsm.cli import main

    out = tmp_path / "v.json"
    # the teacher's two LLM seeds against each other: the student slot holds the repeat, so ratios are 1
    assert main(["validate", "--reference", str(CORPUS / "vaccine_campaign_s0.h5"), "--repeat",
                 str(CORPUS / "vaccine_campaign_s1.h5"), "--student", str(CORPUS / "vaccine_campaign_s1.h5"),
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == set(METRICS)
    for k in ("decision_jsd_mean", "decision_jsd_final", "channel_w1_mean", "agent_decision_agreement", "channel_mae"):
        assert res[k]["student"] == pytest.approx(res[k]["floor"]) and res[k]["ratio"] == pytest.approx(1.0)
    # and the figure is the files' own, recomputed from its definition (not by the code under test):
    # per tick, the Jensen-Shannon divergence (natural log) of the valid agents' decision shares, averaged
    def shares(path):
        with h5py.File(path, "r") as f:
            d, v = f["decision"][()], f["valid"][()].astype(bool)
            A = f["decision_dist"].shape[-1]  # the action count
        return np.stack([np.bincount(d[t][v[t]], minlength=A) / max(int(v[t].sum()), 1) for t in range(len(d))])

    def js(p, q):
        m = (p + q) / 2
        kl = lambda a, b: float(sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0))  # noqa: E731
        return 0.5 * kl(p, m) + 0.5 * kl(q, m)

    a, b = shares(CORPUS / "vaccine_campaign_s0.h5"), shares(CORPUS / "vaccine_campaign_s1.h5")
    by_hand = [js(a[t], b[t]) for t in range(len(a))]
    assert res["decision_jsd_mean"]["floor"] == pytest.approx(np.mean(by_hand), abs=1e-9) and np.mean(by_hand) > 0
    assert res["decision_jsd_final"]["floor"] == pytest.approx(by_hand[-1], abs=1e-9)
    assert "| decision_jsd_mean | lower |" in capsys.readouterr().out
    assert main(["validate", "--reference", str(CORPUS / "vaccine_campaign_s0.h5"), "--repeat",
                 str(CORPUS / "vaccine_campaign_s1.h5"), "--student", str(CORPUS / "product_adoption_s0.h5")]) == 2
    assert "share the scenario" in capsys.readouterr().err


def test_lsm_validate_values_of_a_student_that_differs_from_the_repeat(tmp_path):
    """A "student" = the teacher's repeat with the decisions of ticks 5-7 rotated and channel 0 raised
    by 0.05 (valid agent-ticks only): every reported value equals a numpy computation from the files."""
    import shutil

    from lsm.cli import main

    teacher, repeat = CORPUS / "vaccine_campaign_s0.h5", CORPUS / "vaccine_campaign_s1.h5"
    student = tmp_path / "student.h5"
    shutil.copy(repeat, student)
    with h5py.File(student, "r+") as f:
        d, v, ch = f["decision"][:], f["valid"][:], f["channels"][:]
        d[5:] = np.where(v[5:], (d[5:] + 1) % 3, d[5:])
        ch[..., 0] = np.where(v, ch[..., 0] + 0.05, ch[..., 0])
        f["decision"][...], f["channels"][...] = d, ch
    out = tmp_path / "v.json"
    assert main(["validate", "--reference", str(teacher), "--repeat", str(repeat), "--student", str(student),
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    ref = _read(teacher)
    want_student, want_floor = _metrics_by_hand(ref, _read(student)), _metrics_by_hand(ref, _read(repeat))
    for k in want_student:
        assert res[k]["student"] == pytest.approx(want_student[k], rel=1e-5, abs=1e-9), k
        assert res[k]["floor"] == pytest.approx(want_floor[k], rel=1e-5, abs=1e-9), k
        assert res[k]["ratio"] == pytest.approx(want_student[k] / want_floor[k], rel=1e-5), k
    # the edits moved the student away from the repeat: the check compares different numbers
    for k in want_student:
        assert abs(want_student[k] - want_floor[k]) > 1e-3, k
    assert want_floor["decision_jsd_mean"] > 0  # the teacher is not deterministic
