"""Random planted societies (`lsm.data_gen.planted.prior`): the prior is seeded, every drawn
configuration passes the planted config's checks, round-trips through YAML and runs in the planted
society on a small world; the tie types' rank order varies; `random:K` specs are parsed strictly."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from lsm.config import UsageError, load_config, read_yaml, resolve_config
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.prior import (
    INFLUENCE_MIN_RATIO,
    RandomSpec,
    draw_planted,
    influence_order,
    parse_random,
    population_attributes,
    scenario_labels,
    write_planted,
)
from lsm.society.scenario import shorten
from lsm.society.world.graph import EDGE_TYPES


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 100-agent world of the default population (what `lsm recovery` builds)."""
    from lsm.data_gen.make_world import make_world

    path = tmp_path_factory.mktemp("prior") / "w100.h5"
    make_world(agents=100, seed=0, out=path, quiet=True)
    return path


@pytest.fixture(scope="module")
def attrs(world):
    return population_attributes(world)


def draw(k, seed=0, attrs=None, scenario="vaccine_campaign"):
    cats, nums = attrs
    actions, channels = scenario_labels(scenario)
    return draw_planted(k, seed, categories=cats, numeric=nums, actions=actions, channels=channels)


def test_the_prior_is_seeded(attrs):
    a, b = draw(3, 0, attrs), draw(3, 0, attrs)
    assert a == b and a.name == "random_0_3"
    assert draw(4, 0, attrs) != a and draw(3, 1, attrs) != a and draw(3, 1, attrs).name == "random_1_3"
    # each part has its own generator: another scenario changes the action biases, nothing else
    other = draw(3, 0, attrs, "product_adoption")
    assert other.influence == a.influence and other.conformity == a.conformity and other.events == a.events
    assert set(other.action_bias) == {"adopt", "consider", "ignore"} and set(a.action_bias) == {"vaccinate", "wait", "refuse"}


@pytest.mark.parametrize("scenario", ["vaccine_campaign", "guessing_game"])
def test_every_drawn_config_passes_the_checks_and_round_trips(attrs, scenario, tmp_path):
    cats, nums = attrs
    actions, channels = scenario_labels(scenario)
    for k in range(20):
        cfg = draw(k, 0, attrs, scenario)  # built through from_dict: a failed check raises
        path = write_planted(cfg, tmp_path / f"{k}.yaml")
        assert load_config(PlantedConfig, path) == cfg
        assert read_yaml(path)["name"] == f"random_0_{k}" and yaml.safe_load(path.read_text())["policy"] == "planted"
        # the documented ranges
        mags = sorted(cfg.influence.values())
        assert set(cfg.influence) == set(EDGE_TYPES) and 0.2 <= mags[0] and mags[-1] <= 2.0
        assert all(hi / lo >= INFLUENCE_MIN_RATIO - 0.01 for lo, hi in zip(mags, mags[1:]))
        if cfg.conformity_attribute is not None:
            assert 2 <= len(cats[cfg.conformity_attribute]) <= 6 and list(cfg.conformity) == cats[cfg.conformity_attribute]
            m = list(cfg.conformity.values())
            assert (m == sorted(m) or m == sorted(m, reverse=True)) and 0.5 <= min(m) <= 0.9 and 1.2 <= max(m) <= 1.6
        assert 0 <= cfg.persistence <= 1.5 and 0.4 <= cfg.events.valence_credibility <= 1.5
        assert all(abs(v) <= 0.3 for v in [*cfg.events.source_type.values(), *cfg.events.framing.values()])
        assert list(cfg.channel_loading) == channels and all(0.2 <= abs(v) <= 1.0 for v in cfg.channel_loading.values())
        assert 0.2 <= cfg.agent_sd <= 0.8 and 0.1 <= cfg.noise_sd <= 0.5
        assert 0.1 <= cfg.channel_agent_sd <= 0.5 and 0.1 <= cfg.channel_noise_sd <= 0.3
        assert set(cfg.identity) == {"party", "education", "area"} and all(
            list(cfg.identity[a]) == cats[a] and all(abs(v) <= 0.5 for v in cfg.identity[a].values()) for a in cfg.identity)
        assert list(cfg.action_bias) == actions
        rare = [a for a, b in cfg.action_bias.items() if b <= -2.5]
        assert len(rare) == 1 and all(abs(b) <= 0.5 for a, b in cfg.action_bias.items() if a not in rare)


def test_the_rank_order_of_the_tie_types_and_the_conformity_attribute_vary(attrs):
    cfgs = [draw(k, 0, attrs) for k in range(20)]
    orders = [influence_order(c) for c in cfgs]
    assert len(set(orders)) >= 15 and len({o[0] for o in orders}) >= 3  # 120 orders, uniformly
    found = [c.conformity_attribute for c in cfgs]
    assert None in found and len(set(found) - {None}) >= 3
    signs = np.sign([list(c.channel_loading.values()) for c in cfgs])
    assert (signs > 0).any(axis=0).all() and (signs < 0).any(axis=0).all()  # every channel drawn with either sign


@pytest.mark.parametrize("spec", ["random", "random:", "random:x", "random:0", "random:101", "random:3@", "random:3@-1",
                                  "random:3@x", "random: 3", "Random:3", "random_3", "random:3:4"])
def test_malformed_random_specs_are_refused_in_one_paragraph(spec):
    with pytest.raises(UsageError) as err:
        parse_random(spec)
    text = str(err.value)
    assert "\n" not in text and repr(spec) in text and "random:K@SEED" in text


def test_random_specs_and_plain_names_parse():
    assert parse_random("random:8") == RandomSpec(8, 0) and parse_random("random:3@17") == RandomSpec(3, 17)
    assert parse_random("planted") is None and parse_random(str(resolve_config("planted", "teacher"))) is None


def test_a_malformed_spec_stops_lsm_recovery_before_anything_is_built(tmp_path, capsys):
    from lsm.cli import main

    assert main(["recovery", "--out", str(tmp_path / "rec"), "--planted", "random:two"]) == 2
    err = capsys.readouterr().err
    assert "random:K@SEED" in err and "Traceback" not in err and not (tmp_path / "rec").exists()


def test_a_resumed_folder_of_another_prior_seed_is_refused(tmp_path, attrs):
    from lsm.recovery.experiment import random_config

    path = tmp_path / "random_0/planted.yaml"
    first = random_config(path, 0, RandomSpec(2, 5), lambda: draw(0, 5, attrs))
    assert random_config(path, 0, RandomSpec(2, 5), lambda: pytest.fail("drawn again")) == first  # reused on resume
    with pytest.raises(UsageError, match="another prior seed"):
        random_config(path, 0, RandomSpec(2, 6), lambda: draw(0, 6, attrs))


@pytest.mark.parametrize("scenario", ["vaccine_campaign", "product_adoption", "policy_announcement"])
def test_a_drawn_config_runs_in_the_planted_society(world, attrs, scenario, tmp_path):
    from lsm.data_gen.gen import generate
    from lsm.society.store import TraceFile

    sc = tmp_path / "sc.yaml"
    sc.write_text(yaml.safe_dump(shorten(read_yaml(resolve_config(scenario, "scenarios")), 1)))
    cfg = draw(7, 0, attrs, scenario)
    summary = generate(world, sc, write_planted(cfg, tmp_path / "p.yaml"), 0, tmp_path / "p.h5", quiet=True)
    assert summary["backend"] == "planted:random_0_7" and summary["ticks"] == 1
    with TraceFile(tmp_path / "p.h5") as tf:
        dist = tf.array("decision_dist")
    assert dist.shape[:2] == (1, 100) and np.allclose(dist.sum(-1), 1, atol=1e-5)
    # the shipped config names actions and channels of the vaccine campaign: on another scenario they are ignored
    shipped = generate(world, sc, resolve_config("planted", "teacher"), 0, tmp_path / "s.h5", quiet=True)
    assert shipped["ticks"] == 1 and shipped["backend"] == "planted:planted"


def test_random_recovery_runs_each_configuration_in_its_folder_on_shared_worlds(tmp_path, monkeypatch):
    """`--planted random:K`: the layout, the configurations handed to each experiment and the JSON
    (the experiment itself is replaced by a stub: training is covered in test_recovery)."""
    import json

    from lsm.recovery import experiment as ex

    seen = []

    def fake(out, cfg, say=print):
        pc = load_config(PlantedConfig, cfg.planted)
        seen.append((out, pc.name))
        assert (out / "worlds/held_out_n100.h5").samefile(tmp_path / "rec/worlds/held_out_n100.h5")
        return {"agents": 100, "ablation_tv_ratio": 1.0 if pc.name.endswith("_0") else 2.0, "rows": []}

    monkeypatch.setattr(ex, "run_recovery", fake)
    cfg = ex.RecoveryConfig(agents=[100], held_out_agents=100, planted="random:2@4")
    r = ex.run_random_recovery(tmp_path / "rec", cfg, parse_random(cfg.planted), say=lambda s: None)
    assert seen == [(tmp_path / "rec/random_0", "random_4_0"), (tmp_path / "rec/random_1", "random_4_1")]
    assert [c["name"] for c in r["configs"]] == ["random_4_0", "random_4_1"] and r["prior_seed"] == 4
    assert r["configs"][1]["planted"] == json.loads(json.dumps(r["configs"][1]["planted"]))
    assert load_config(PlantedConfig, tmp_path / "rec/random_1/planted.yaml").influence == r["configs"][1]["planted"]["influence"]
    assert r["goals_met"]["ablation_tv_ratio"] == {"goal": ex.GOALS["ablation_tv_ratio"][0], "met": 1, "scored": 2}
    assert json.loads((tmp_path / "rec/recovery.json").read_text())["configs"][0]["result"]["ablation_tv_ratio"] == 1.0


def test_any_shipped_scenario_with_the_measured_events_is_accepted_and_others_refused_early(world):
    from lsm.recovery.experiment import check_interventions

    for name in ("vaccine_campaign", "product_adoption", "policy_announcement"):
        check_interventions(resolve_config(name, "scenarios"), world)
    with pytest.raises(UsageError, match="at least three scheduled events"):  # one event: events[2] is not there
        check_interventions(resolve_config("guessing_game", "scenarios"), world)
