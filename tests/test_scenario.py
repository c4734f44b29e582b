"""Malformed scenarios each give one readable error naming file, field, value and expectation."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from lsm.config import shipped
from lsm.society.scenario import ScenarioError, check_against_world, load_scenario, timeline

BASE = yaml.safe_load(shipped("scenarios", "vaccine_campaign.yaml").read_text())


def _set(data, path, value):
    keys = path.split(".")
    for k in keys[:-1]:
        data = data[int(k)] if k.isdigit() else data[k]
    last = keys[-1]
    if value is _DELETE:
        del data[last]
    elif isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


_DELETE = object()

CASES = [
    # (mutation path, new value, expected fragments of the message)
    ("events.0.valence", 1.7, ["events[0].valence", "1.7", "between -1 and 1"]),
    ("events.1.credibility", -0.2, ["events[1].credibility", "-0.2", "between 0 and 1"]),
    ("events.2.tick", 99, ["events[2].tick", "99", "between 0 and 7"]),
    ("events.0.framing", "feer", ["events[0].framing", "'feer'", "did you mean 'fear'"]),
    ("events.0.channel", "carrier_pigeon", ["events[0].channel", "carrier_pigeon", "one of"]),
    ("question", _DELETE, ["question", "(missing)"]),
    ("ticks", "ten", ["ticks", "'ten'", "an integer"]),
    ("actions.options", [{"name": "only"}], ["actions.options", "at least two options"]),
    ("actions.type", "numeric", ["actions", "no options on a numeric action space"]),
    ("events.0.exposure.fraction", 1.5, ["events[0].exposure.fraction", "1.5", "a share in [0, 1]"]),
    ("triggers.0.when.action", "teleport", ["triggers[0].when.action", "teleport", "an action among"]),
    ("triggers.0.event.text", "Now {missing_value} people", ["triggers[0].event.text", "{missing_value}", "compute"]),
    ("triggers.0.when.metric", "mean_decision", ["triggers[0].when.metric", "categorical"]),
    ("events.0.valance", 0.3, ["events[0].valance", "did you mean 'valence'"]),
    ("channels", [{"name": "x"}, {"name": "x"}], ["channels", "distinct channel names"]),
]


@pytest.mark.parametrize("path, value, fragments", CASES, ids=[c[0] for c in CASES])
def test_malformed_scenario_message(tmp_path, path, value, fragments):
    data = copy.deepcopy(BASE)
    _set(data, path, value)
    f = tmp_path / "broken.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as err:
        load_scenario(f)
    msg = str(err.value)
    assert str(f) in msg and "\n" not in msg  # one readable paragraph
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_all_problems_reported_at_once(tmp_path):
    data = copy.deepcopy(BASE)
    data["events"][0]["valence"] = 3
    data["events"][1]["credibility"] = 2
    f = tmp_path / "two.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match="2 problems") as err:
        load_scenario(f)
    assert "events[0].valence" in str(err.value) and "events[1].credibility" in str(err.value)


def test_yaml_syntax_error_and_missing_file(tmp_path):
    f = tmp_path / "syntax.yaml"
    f.write_text("name: x\nticks: [1, 2\n")
    with pytest.raises(ScenarioError, match=r"syntax\.yaml.*YAML syntax error at line"):
        load_scenario(f)
    with pytest.raises(ScenarioError, match="expected an existing scenario file"):
        load_scenario(tmp_path / "nope.yaml")


def test_exposure_rules_checked_against_world(tmp_path, anes_world):
    data = copy.deepcopy(BASE)
    data["events"][0]["exposure"] = {"where": {"party": ["whig"], "height": {"min": 2}}, "followers_of": ["pravda"]}
    f = tmp_path / "w.yaml"
    f.write_text(yaml.safe_dump(data))
    sc = load_scenario(f)
    with pytest.raises(ScenarioError) as err:
        check_against_world(sc, anes_world.population, anes_world.graph, source=f)
    msg = str(err.value)
    assert "'whig'" in msg and "a category of 'party'" in msg
    assert "events[0].exposure.where.height" in msg and "pravda" in msg


def test_numeric_actions_bins_and_timeline():
    sc = load_scenario(shipped("scenarios", "guessing_game.yaml"))
    a = sc.actions
    assert a.n == 10 and a.labels[0] == "0-10" and a.labels[-1] == "90-100"
    np.testing.assert_array_equal(a.bin_of(np.array([0, 9.99, 10, 55, 100])), [0, 0, 1, 5, 9])
    text = timeline(sc)
    assert "announce_winner" in text and "tick   0" in text
