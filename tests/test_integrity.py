"""Determinism and integrity: two student rollouts with the same seed are bitwise
identical on CPU, and every file carries a content checksum that `lsm info --verify` checks."""
from __future__ import annotations

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest

from lsm.cli import main
from lsm.config import CONFIG_ROOT, shipped
from lsm.society import store
from lsm.society.store import EVENT_COLUMNS, TRACE_FIELDS, TraceWriter, content_checksums
from lsm.society.world import build_world, save_world


def _datasets(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _rollout(trained, out, seed):
    _, ckpt, world = trained
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--ticks", "3",
                 "--seed", str(seed), "--out", str(out), "--quiet", "true", "--clusters", "2"]) == 0


def _stored(path):
    with h5py.File(path) as f:
        return str(f.attrs["content_checksum"])


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
    assert _stored(a) == _stored(b) != _stored(c)
    with h5py.File(a) as fa:  # the digests hashed while writing are those of the bytes read back
        assert fa.attrs["content_checksum"] == "sha256:" + content_checksums(fa)[0]


def _every_field_tick(rng, dims, t):
    """One tick of every TRACE_FIELDS field, with the awkward values: NaN, -0.0, non-ASCII and
    empty strings."""
    out = {}
    for name, spec in TRACE_FIELDS.items():
        shape = tuple(dims[d] for d in spec.dims)
        if spec.dtype == "str":
            out[name] = np.array([["", f"tick {t} é ✓ 🙂", "x" * 300][i % 3] for i in range(shape[0])], dtype=object)
        elif spec.dtype == "bool":
            out[name] = rng.random(shape) > 0.5
        else:
            v = (rng.standard_normal(shape) * 50).astype(spec.dtype)
            if v.dtype.kind == "f":
                v.flat[:3] = [np.nan, -0.0, np.inf]
            out[name] = v
    return out


def test_checksums_hashed_while_writing_equal_those_read_back(world_file, tmp_path, monkeypatch):
    """TraceWriter hashes each tick as it appends it; the digests equal those of the file read back
    block by block (also with tiny blocks: rows split along axis 1), for every field type, and
    after an append that failed half-way (the file is then read back)."""
    n = int(h5py.File(world_file)["population"].attrs["n"])
    dims = {"N": n, "C": 3, "R": 11, "A": 4, "D": 8, "K": 2, "E": 2, "Z": 4, "H": 5, "X": 3}
    sc = shipped("scenarios", "vaccine_campaign.yaml").read_text()
    rng = np.random.default_rng(0)
    paths = {}
    for case in ("clean", "failed_append"):
        paths[case] = path = tmp_path / f"{case}.h5"
        w = TraceWriter(path, "teacher_trace", world_file, sc, dims, list(TRACE_FIELDS))
        for t in range(3):
            w.append_tick(_every_field_tick(rng, dims, t))
        if case == "failed_append":  # h5py refuses the NUL after the numeric fields of tick 3 were written
            bad = _every_field_tick(rng, dims, 3)
            bad["reasoning"][0] = "a\0b"
            with pytest.raises(ValueError, match="NUL"):
                w.append_tick(bad)
            assert w._hashes is None
        w.close()
    for path in paths.values():
        with h5py.File(path) as f:
            stored, per = f.attrs["content_checksum"], json.loads(f.attrs["dataset_checksums"])
            assert stored == "sha256:" + content_checksums(f)[0], path
            monkeypatch.setattr(store, "_HASH_BLOCK_BYTES", 4096)
            assert (stored, per) == ("sha256:" + content_checksums(f)[0], content_checksums(f)[1]), path
            monkeypatch.undo()
            assert set(per) >= set(TRACE_FIELDS) | {"population/names", "graph/edge_index", "events/uid"}
    assert main(["info", str(paths["failed_append"]), "--verify", "true"]) == 0


def test_info_verify_on_world_trace_and_rollout_names_the_dataset_that_changed(trained, tmp_path, capsys):
    _, _, world = trained
    rollout, trace = tmp_path / "r.h5", tmp_path / "t.h5"
    _rollout(trained, rollout, 0)
    assert main(["gen", "--world", str(world), "--scenario", "vaccine_campaign", "--teacher", "planted", "--seed", "0",
                 "--quiet", "true", "--out", str(trace)]) == 0
    capsys.readouterr()
    for path in (world, trace, rollout):
        assert main(["info", str(path), "--verify", "true"]) == 0
        assert "checksum: OK (sha256 " in capsys.readouterr().out, path
    with h5py.File(rollout, "a") as f:  # an attribute is metadata (`lsm sensitivity --write` adds one): still OK
        f.attrs["note"] = "added later"
    assert main(["info", str(rollout), "--verify", "true"]) == 0
    capsys.readouterr()
    world = shutil.copy(world, tmp_path / "w.h5")  # the session's world stays intact
    for path, name in ((rollout, "stance"), (trace, "decision"), (world, "population/numeric/age")):
        with h5py.File(path, "a") as f:  # one element changed through h5py
            f[name][(0,) * f[name].ndim] += 1
        assert main(["info", str(path), "--verify", "true"]) == 2, path
        err = capsys.readouterr().err
        assert "content checksum mismatch" in err and f"first changed dataset: {name} " in err, err
        assert str(path) in err and "Traceback" not in err, err


def test_info_verify_on_a_byte_flipped_on_disk(trained, tmp_path, capsys):
    """One byte of a stored (gzip'd) chunk flipped on disk: exit 2 naming the dataset, no traceback."""
    out = tmp_path / "r.h5"
    _rollout(trained, out, 0)
    with h5py.File(out) as f:
        info = f["channels"].id.get_chunk_info_by_coord((0, 0, 0))
    with open(out, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    capsys.readouterr()
    assert main(["info", str(out), "--verify", "true"]) == 2
    err = capsys.readouterr().err
    assert "channels" in err and str(out) in err and "Traceback" not in err, err


def test_info_verify_on_files_without_a_checksum(capsys):
    """The committed corpus predates checksums: described, 'unverifiable', exit 0 (the files are valid)."""
    corpus = CONFIG_ROOT.parent / "data_gen/corpus/n20"
    for path in (corpus / "world.h5", corpus / "vaccine_campaign_s0.h5"):
        assert main(["info", str(path), "--verify", "true"]) == 0
        assert "checksum: none stored (the file was written before lsm stored checksums); unverifiable" in capsys.readouterr().out


def _recomputed(path):
    """(content_checksum, dataset_checksums) of a file, recomputed from their definition in
    docs/formats.md#integrity with hashlib and h5py alone (not lsm's own hashing code)."""
    per = {}
    with h5py.File(path) as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in sorted(names):
            ds = f[name]
            if h5py.check_string_dtype(ds.dtype) is not None:  # variable-length strings read as bytes
                values = b"".join(v + b"\0" for v in np.asarray(ds[()], dtype=object).reshape(-1))
            else:  # the bytes in the dtype's own byte order, C order
                values = np.ascontiguousarray(ds[()]).tobytes()
            text = f"/{name}\0{ds.dtype.str}\0{ds.shape}\0{hashlib.sha256(values).hexdigest()}"
            per[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    whole = hashlib.sha256("".join(f"{name}\0{digest}\0" for name, digest in per.items()).encode("utf-8"))
    return "sha256:" + whole.hexdigest(), per


@pytest.fixture
def tiny_world(tmp_path):
    """A 12-agent world file: strings, int and float arrays, 2-D arrays and an empty dataset."""
    path = tmp_path / "w12.h5"
    save_world(build_world(shipped("population", "generic.yaml"), shipped("graph", "default.yaml"), 12, 3), path)
    return path


def _stored_pair(path):
    with h5py.File(path) as f:
        return str(f.attrs["content_checksum"]), json.loads(f.attrs["dataset_checksums"])


def test_stored_checksums_equal_their_documented_definition(tiny_world, tmp_path):
    """A world, and a trace with every field (bool, 3-D, NaN, -0.0, non-ASCII and empty strings),
    hashed by the writer while writing: both stored checksums are what the documented definition
    gives, so another program can check a file without lsm."""
    dims = {"N": 12, "C": 3, "R": 11, "A": 4, "D": 8, "K": 2, "E": 2, "Z": 4, "H": 5, "X": 3}
    trace = tmp_path / "t.h5"
    rng = np.random.default_rng(1)
    with TraceWriter(trace, "teacher_trace", tiny_world, shipped("scenarios", "vaccine_campaign.yaml").read_text(),
                     dims, list(TRACE_FIELDS)) as w:
        for t in range(2):
            w.append_tick(_every_field_tick(rng, dims, t))
    for path, n_datasets in ((tiny_world, 24), (trace, 24 + len(TRACE_FIELDS) + len(EVENT_COLUMNS))):
        stored, per = _stored_pair(path)
        assert (stored, per) == _recomputed(path), path
        assert len(per) == n_datasets, (path, sorted(per))


def test_info_verify_names_a_changed_string_dataset(tiny_world, capsys):
    """Strings are content too: one name or persona changed (same length, or longer) is a mismatch
    naming that dataset; an attribute added is metadata and still verifies."""
    with h5py.File(tiny_world, "a") as f:
        f.attrs["note"] = "added later"
        original = {name: f[name][0] for name in ("population/names", "population/persona")}
    assert main(["info", str(tiny_world), "--verify", "true"]) == 0
    capsys.readouterr()
    for name, changed in (("population/names", original["population/names"][:-1] + b"!"),
                          ("population/persona", original["population/persona"] + b" ")):
        with h5py.File(tiny_world, "a") as f:
            f[name][0] = changed
        assert main(["info", str(tiny_world), "--verify", "true"]) == 2, name
        err = capsys.readouterr().err
        assert f"first changed dataset: {name} " in err and "Traceback" not in err, err
        with h5py.File(tiny_world, "a") as f:
            f[name][0] = original[name]
        assert main(["info", str(tiny_world), "--verify", "true"]) == 0, f"{name} restored"
        capsys.readouterr()
