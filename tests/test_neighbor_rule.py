"""Who hears whom has one owner (`NeighborRule`): configs hold it, traces and checkpoints record it,
and a rollout takes it from its checkpoint unless told otherwise."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from lsm.config import CONFIG_ROOT, ConfigError, load_config
from lsm.data_gen.gen import neighbor_rule_of
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.teacher.config import TeacherConfig
from lsm.model.checkpoint import load_checkpoint
from lsm.society.loop.neighbors import NeighborRule, recorded_rule
from lsm.society.store import TraceFile

CORPUS = Path(__file__).resolve().parents[1] / "data_gen/corpus"


@pytest.mark.parametrize("cls, extra", [(TeacherConfig, ""), (PlantedConfig, "policy: planted\n")])
def test_the_flat_spelling_of_older_configs_loads_as_the_nested_rule(tmp_path, cls, extra):
    flat, nested = tmp_path / "flat.yaml", tmp_path / "nested.yaml"
    flat.write_text(extra + "neighbors: 3\nvary_neighbors: false\nneighbor_weights: {household: 5.0, friend: 1.0}\n")
    nested.write_text(extra + "neighbors: {k: 3, vary: false, weights: {household: 5.0, friend: 1.0}}\n")
    a, b = load_config(cls, flat), load_config(cls, nested)
    assert a == b and a.neighbors == NeighborRule(3, {"household": 5.0, "friend": 1.0}, False)
    assert load_config(cls, _write(tmp_path / "none.yaml", extra or "backend: embedded\n")).neighbors == NeighborRule()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_bad_rule_names_its_field(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(TeacherConfig, _write(tmp_path / "t.yaml", "neighbors: {k: -1, weights: {friends: 1}}\n"))
    assert "neighbors.k" in str(e.value) and "neighbors.weights.friends" in str(e.value)


def test_a_rule_file_or_a_teacher_config_gives_the_rule(tmp_path):
    rule = _write(tmp_path / "rule.yaml", "k: 2\nvary: false\n")
    assert neighbor_rule_of(rule) == NeighborRule(k=2, vary=False)
    assert neighbor_rule_of(CONFIG_ROOT / "teacher/planted.yaml") == NeighborRule(k=4, vary=True)
    assert neighbor_rule_of(CONFIG_ROOT / "teacher/debug.yaml").k == 2


def test_traces_record_their_rule_and_older_ones_fall_back_to_their_teacher_config():
    with TraceFile(CORPUS / "n200/vaccine_campaign_s0.h5") as tf:  # recorded since 2026-12
        assert recorded_rule(tf.f.attrs, "n200") == NeighborRule(k=4, vary=True)
    with TraceFile(CORPUS / "n20/vaccine_campaign_s0.h5") as tf:  # before: the teacher config's K, no varied counts
        assert recorded_rule(tf.f.attrs, "n20") == NeighborRule(k=4, vary=False)


def test_training_on_traces_of_two_rules_is_refused():
    from lsm.config import UsageError
    from lsm.train.datamodule import training_rule

    with pytest.raises(UsageError, match="different neighbour rules"):
        training_rule([str(CORPUS / "n20/vaccine_campaign_s0.h5"), str(CORPUS / "n200/vaccine_campaign_s0.h5")])


def test_a_rollout_takes_the_checkpoints_rule_and_equals_one_given_it_explicitly(trained, tmp_path):
    from lsm.cli import main

    _, ckpt, world = trained
    rule = load_checkpoint(ckpt).neighbor_rule
    with TraceFile(CORPUS / "n20/vaccine_campaign_s0.h5") as tf:
        assert rule == recorded_rule(tf.f.attrs, "n20")  # the rule of its training trace
    explicit = _write(tmp_path / "rule.yaml", json.dumps(asdict(rule)))
    other = _write(tmp_path / "other.yaml", json.dumps({**asdict(rule), "vary": not rule.vary}))
    runs = {}
    for name, extra in (("own", []), ("explicit", ["--neighbors", str(explicit)]), ("other", ["--neighbors", str(other)])):
        out = tmp_path / f"{name}.h5"
        assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign",
                     "--out", str(out), "--ticks", "3", "--quiet", "true", *extra]) == 0
        with TraceFile(out) as f:
            runs[name] = (f.array("shown_neighbors"), f.array("decision"), json.loads(f.f.attrs["neighbor_rule"]))
    np.testing.assert_array_equal(runs["own"][0], runs["explicit"][0])  # the same neighbours shown
    np.testing.assert_array_equal(runs["own"][1], runs["explicit"][1])  # the same decisions drawn
    assert runs["own"][2] == runs["explicit"][2] == asdict(rule)
    assert not np.array_equal(runs["own"][0], runs["other"][0])  # the rule is what decides who is shown
