"""Determinism and integrity (issue 14): two student rollouts with the same seed are bitwise
identical on CPU, and every file carries a content checksum that `lsm info --verify` checks."""
from __future__ import annotations

import h5py
import numpy as np

from lsm.cli import main
from lsm.data_gen.store import content_checksums


def _datasets(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _rollout(trained, out, seed):
    _, ckpt, world = trained
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--ticks", "3",
                 "--seed", str(seed), "--out", str(out), "--quiet", "true", "--clusters", "2"]) == 0


def test_two_rollouts_with_one_seed_are_bitwise_identical(trained, tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    _rollout(trained, a, 5)
    _rollout(trained, b, 5)
    _rollout(trained, c, 6)
    da, db = _datasets(a), _datasets(b)
    assert sorted(da) == sorted(db) and len(da) > 20
    for name in da:
        x, y = np.asarray(da[name]), np.asarray(db[name])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype == object:
            assert x.tolist() == y.tolist(), name
        else:  # bytes, so -0.0 vs 0.0 and NaN payloads count too
            assert x.tobytes() == y.tobytes(), name
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
        assert fa.attrs["content_checksum"] == fb.attrs["content_checksum"] != fc.attrs["content_checksum"]
        assert fa.attrs["content_checksum"] == "sha256:" + content_checksums(fa)[0]


def test_info_verify_names_the_dataset_that_changed(trained, tmp_path, capsys):
    out = tmp_path / "r.h5"
    _rollout(trained, out, 0)
    _, _, world = trained
    for path in (world, out):
        assert main(["info", str(path), "--verify", "true"]) == 0
        assert "checksum: OK (sha256 " in capsys.readouterr().out
    with h5py.File(out, "a") as f:  # an attribute is metadata: still OK
        f.attrs["note"] = "added later"
    assert main(["info", str(out), "--verify", "true"]) == 0
    with h5py.File(out, "a") as f:
        f["stance"][1, 3] += np.float16(0.25)
    capsys.readouterr()
    assert main(["info", str(out), "--verify", "true"]) == 2
    err = capsys.readouterr().err
    assert "content checksum mismatch" in err and "first changed dataset: stance" in err and "Traceback" not in err, err
    # a file from before checksums (the committed corpus) is described and says so
    from lsm.config import CONFIG_ROOT

    corpus = CONFIG_ROOT.parent / "data_gen/corpus/n20/world.h5"
    assert main(["info", str(corpus), "--verify", "true"]) == 0
    assert "none stored" in capsys.readouterr().out
