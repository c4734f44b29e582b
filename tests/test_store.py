from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import yaml

from lsm.config import shipped, to_yaml
from lsm.society import store
from lsm.society.loop.events import EventSchedule
from lsm.society.scenario import load_scenario
from lsm.society.store import StoreError, TraceFile, TraceWriter
from lsm.society.world import load_world


def test_world_round_trip(world_file, anes_world):
    w = load_world(world_file)
    assert w.n == anes_world.n and w.seed == anes_world.seed
    for a in anes_world.population.categorical:
        np.testing.assert_array_equal(w.population.categorical[a], anes_world.population.categorical[a])
        assert w.population.categories[a] == anes_world.population.categories[a]
    for a in anes_world.population.numeric:
        np.testing.assert_array_equal(w.population.numeric[a], anes_world.population.numeric[a])
    assert list(w.population.categorical) == list(anes_world.population.categorical)  # vocab order kept
    assert w.population.persona == anes_world.population.persona
    np.testing.assert_array_equal(w.graph.edge_index, anes_world.graph.edge_index)
    np.testing.assert_array_equal(w.graph.edge_type, anes_world.graph.edge_type)
    np.testing.assert_array_equal(w.graph.outlet_follow, anes_world.graph.outlet_follow)
    assert w.population_config == anes_world.population_config
    assert w.graph_config == anes_world.graph_config


def _tick(rng, n, c, a, d, k, e, t):
    return {
        "channels": rng.random((n, c), dtype=np.float32),
        "decision": rng.integers(0, a, n).astype(np.int16),
        "decision_dist": rng.dirichlet(np.ones(a), n).astype(np.float32),
        "stance": rng.uniform(-1, 1, n).astype(np.float32),
        "salience": rng.random(n, dtype=np.float32),
        "expression_emb": rng.standard_normal((n, d)).astype(np.float16),
        "shown_neighbors": rng.integers(-1, n, (n, k)).astype(np.int32),
        "exposed_events": np.full((n, e), -1, np.int32),
        "valid": rng.random(n) > 0.1,
        "reasoning": np.array([f"agent {i} thinks at tick {t}" for i in range(n)], dtype=object),
    }


@pytest.fixture
def trace(tmp_path, world_file):
    sc_path = shipped("scenarios", "vaccine_campaign.yaml")
    sc = load_scenario(sc_path)
    w = load_world(world_file)
    n, c, a, d, k, e = w.n, len(sc.channel_names), sc.actions.n, 8, 3, 2
    path = tmp_path / "trace.h5"
    rng = np.random.default_rng(0)
    ticks = [_tick(rng, n, c, a, d, k, e, t) for t in range(3)]
    sched = EventSchedule(sc, w.population, w.graph, seed=0)
    writer = TraceWriter(path, "teacher_trace", world_file, sc_path.read_text(),
                         dims={"N": n, "C": c, "A": a, "D": d, "K": k, "E": e},
                         fields=["decision_dist", "expression_emb", "shown_neighbors", "reasoning"],
                         configs={"teacher": {"backend": "test"}}, seeds={"llm_seed": 1}, ticks_planned=3)
    return path, writer, ticks, sched


def test_append_by_tick_and_read_back(trace):
    path, writer, ticks, sched = trace
    for t, data in enumerate(ticks):
        writer.add_events(sched.events_at(t))
        assert writer.append_tick(data, run_state={"tick": t}) == t
        assert writer.ticks_complete == t + 1 and writer.f["channels"].shape[0] == t + 1
    writer.close()
    with TraceFile(path) as tf:
        assert tf.kind == "teacher_trace" and tf.n_ticks == 3 and tf.seeds["llm_seed"] == 1
        assert tf.configs["teacher"] == {"backend": "test"} and "population" in tf.configs
        tens = tf.tensors()
        assert tens["channels"].shape == (3, tf.n_agents, 8) and tens["expression_emb"].dtype == torch.float16
        for t in range(3):
            np.testing.assert_array_equal(tens["decision"][t].numpy(), ticks[t]["decision"])
            np.testing.assert_array_equal(tens["valid"][t].numpy(), ticks[t]["valid"])
        assert tf.array("reasoning")[2, 5] == "agent 5 thinks at tick 2"
        assert [e["uid"] for e in tf.events()] == [0, 1, 2]
        assert tf.scenario.name == "vaccine_campaign"
        ds = tf.to_dataset(ticks=slice(1, 3))
        assert len(ds) == 2 * tf.n_agents
        row = ds[tf.n_agents + 5]
        assert row["tick"] == 2 and row["agent"] == 5 and row["decision"] in ("vaccinate", "wait", "refuse")
        assert row["reasoning"] == "agent 5 thinks at tick 2" and "party" in row and "trust_peers" in row


def test_tick_with_wrong_shape_or_fields_is_refused(trace):
    path, writer, ticks, _ = trace
    bad = dict(ticks[0])
    bad["channels"] = bad["channels"][:, :3]
    with pytest.raises(ValueError, match=r"field 'channels': shape .*expected"):
        writer.append_tick(bad)
    extra = dict(ticks[0], latent=np.zeros(3))
    with pytest.raises(ValueError, match="undeclared fields"):
        writer.append_tick(extra)
    writer.close()


def test_incomplete_file_is_reported(trace):
    path, writer, ticks, _ = trace
    writer.append_tick(ticks[0])
    writer.f.flush()
    writer.f.close()  # the run "died" after one tick
    with pytest.raises(StoreError, match=r"incomplete teacher_trace: 1 of 3 ticks.*resume"):
        TraceFile(path)
    with TraceFile(path, allow_partial=True) as tf:
        assert tf.n_ticks == 1


def test_unknown_schema_version_is_refused(trace):
    path, writer, ticks, _ = trace
    writer.append_tick(ticks[0])
    writer.close()
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = "9.0"
    with pytest.raises(StoreError, match=r"schema_version 9.0 is not readable"):
        TraceFile(path)


def test_newer_minor_schema_version_is_refused_older_and_equal_are_read(trace, monkeypatch):
    """Within our major version a file of an older or equal minor version reads; a newer minor
    (written by a newer lsm) is refused with a message naming the versions (docs/formats.md#hdf5-files)."""
    path, writer, ticks, _ = trace
    writer.append_tick(ticks[0])
    writer.close()
    monkeypatch.setattr(store, "SCHEMA_VERSION", "1.3")  # pretend we are at 1.3, so 1.2 is an older minor

    def reopen(version):
        with h5py.File(path, "a") as f:
            f.attrs["schema_version"] = version
        return TraceFile(path)

    for version in ("1.0", "1.2", "1.3"):
        with reopen(version) as tf:
            assert tf.n_ticks == 1
    with pytest.raises(StoreError, match=r"trace\.h5: schema_version 1\.4 is not readable by this LSM \(reads 1\.0-1\.3\); upgrade lsm"):
        reopen("1.4")


def test_newer_minor_than_the_shipped_schema_is_refused(trace):
    """The same rule at the real SCHEMA_VERSION: one minor version ahead is refused."""
    path, writer, ticks, _ = trace
    writer.append_tick(ticks[0])
    writer.close()
    major, minor = (int(x) for x in store.SCHEMA_VERSION.split("."))
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = f"{major}.{minor + 1}"
    with pytest.raises(StoreError, match=rf"schema_version {major}\.{minor + 1} is not readable .*reads {major}\.0-{major}\.{minor}\)"):
        TraceFile(path)


def test_missing_dataset_is_reported(trace):
    path, writer, ticks, _ = trace
    writer.append_tick(ticks[0])
    writer.close()
    with h5py.File(path, "a") as f:
        del f["salience"]
    with pytest.raises(StoreError, match=r"missing dataset '/salience'"):
        TraceFile(path)


def test_truncated_and_foreign_files_are_reported(tmp_path, world_file):
    cut = tmp_path / "cut.h5"
    data = world_file.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="truncated"):
        load_world(cut)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(StoreError, match="not an HDF5 file"):
        load_world(junk)
    with pytest.raises(StoreError, match="no such file"):
        load_world(tmp_path / "missing.h5")
    with pytest.raises(StoreError, match="is a 'world' file; expected 'teacher_trace'"):
        TraceFile(world_file)


def test_rollout_scale_streaming_writes_one_tick_at_a_time(tmp_path, world_file):
    """Chunks hold one tick, so appending tick 1 leaves tick 0's stored chunk (its bytes and its
    place in the file) exactly as it was; each tick reads back its own values, and the embedded
    scenario is the one written."""
    sc_path = shipped("scenarios", "guessing_game.yaml")
    w = load_world(world_file)
    n = w.n
    path = tmp_path / "rollout.h5"

    def tick(t):
        rng = np.random.default_rng(t)
        return {
            "channels": rng.random((n, 8), dtype=np.float32), "decision": rng.integers(0, 10, n).astype(np.int16),
            "decision_value": np.full(n, 42.0 + t, np.float32), "stance": rng.uniform(-1, 1, n).astype(np.float32),
            "salience": rng.random(n, dtype=np.float32), "exposed_events": np.full((n, 1), t, np.int32),
            "valid": rng.random(n) > 0.5, "latent": rng.standard_normal((n, 4)).astype(np.float16),
        }

    ticks = [tick(0), tick(1)]

    def chunk0(ds):
        origin = (0,) * ds.ndim
        return ds.id.get_chunk_info_by_coord(origin).byte_offset, ds.id.read_direct_chunk(origin)

    with TraceWriter(path, "student_rollout", world_file, sc_path.read_text(),
                     dims={"N": n, "C": 8, "A": 10, "E": 1, "Z": 4}, fields=["decision_value", "latent"]) as wr:
        assert wr.f["channels"].chunks == (1, n, 8)
        wr.append_tick(ticks[0])
        before = {name: chunk0(wr.f[name]) for name in wr.fields}
        wr.append_tick(ticks[1])
        for name in wr.fields:
            assert chunk0(wr.f[name]) == before[name], f"appending tick 1 rewrote tick 0 of '{name}'"
    with TraceFile(path) as tf:
        assert tf.kind == "student_rollout" and tf.n_ticks == 2
        for t, data in enumerate(ticks):
            for name, values in data.items():
                np.testing.assert_array_equal(tf.array(name)[t], values, err_msg=f"{name} at tick {t}")
        assert yaml.safe_load(to_yaml(tf.scenario)) == yaml.safe_load(to_yaml(load_scenario(sc_path)))
