"""Every shipped config parses, and every name in it resolves (litgpt's test_config_hub)."""
from __future__ import annotations

import pytest

from lsm.config import CONFIG_ROOT, shipped
from lsm.data_gen.world.graph import load_graph_config
from lsm.data_gen.world.population import load_population_config
from lsm.data_gen.scenario import check_against_world, load_scenario
from lsm.data_gen.world import build_world

POPULATIONS = sorted((CONFIG_ROOT / "population").glob("*.yaml"))
GRAPHS = sorted((CONFIG_ROOT / "graph").glob("*.yaml"))
SCENARIOS = sorted((CONFIG_ROOT / "scenarios").glob("*.yaml"))


def test_required_configs_are_shipped():
    names = {p.stem for p in SCENARIOS}
    assert {"vaccine_campaign", "policy_announcement", "product_adoption", "guessing_game"} <= names
    assert {"generic", "anes96"} <= {p.stem for p in POPULATIONS}
    assert shipped("graph", "default.yaml").is_file()


@pytest.mark.parametrize("path", POPULATIONS, ids=lambda p: p.stem)
def test_population_parses(path):
    cfg = load_population_config(path)
    assert cfg.name == path.stem


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_parses(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert len(sc.channel_names) >= 1 and sc.actions.n >= 2


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda p: p.stem)
@pytest.mark.parametrize("population", POPULATIONS, ids=lambda p: p.stem)
def test_every_graph_resolves_on_every_population(population, graph):
    """Every attribute a graph config names exists in every shipped population, and every
    scenario's exposure rules resolve against the resulting world."""
    load_graph_config(graph)
    w = build_world(population, graph, agents=200, seed=0)
    assert w.graph.num_edges > 0
    for path in SCENARIOS:
        check_against_world(load_scenario(path), w.population, w.graph, source=path)


TEACHERS = sorted((CONFIG_ROOT / "teacher").glob("*.yaml"))
PLANTED = [p for p in TEACHERS if p.stem.startswith("planted")]


@pytest.mark.parametrize("path", [p for p in TEACHERS if p not in PLANTED], ids=lambda p: p.stem)
def test_teacher_config_parses(path):
    from lsm.config import load_config
    from lsm.data_gen.teacher.config import TeacherConfig

    cfg = load_config(TeacherConfig, path)
    assert {"embedded", "debug", "openai", "vllm", "planted", "planted_null"} <= {p.stem for p in TEACHERS}
    assert getattr(cfg, cfg.backend) is not None


@pytest.mark.parametrize("path", PLANTED, ids=lambda p: p.stem)
def test_planted_config_parses_and_every_name_resolves(path):
    """Every attribute, category, action label and channel a planted config names exists in a
    shipped population or scenario: a misspelt name would silently contribute nothing."""
    from lsm.config import load_config
    from lsm.data_gen.gen import is_planted
    from lsm.data_gen.planted.config import PlantedConfig
    from lsm.data_gen.scenario import DEFAULT_CHANNELS

    assert is_planted(path)
    cfg = load_config(PlantedConfig, path)
    pops = [build_world(p, GRAPHS[0], agents=50, seed=0).population for p in POPULATIONS]
    for attr, effects in {**cfg.identity, **({cfg.conformity_attribute: cfg.conformity} if cfg.conformity_attribute else {})}.items():
        known = set().union(*(p.categories.get(attr, []) for p in pops))
        assert known, f"{path.name}: attribute {attr} is in no shipped population"
        assert set(effects) <= known, f"{path.name}: {attr} categories {set(effects) - known} exist nowhere"
    assert set(cfg.identity_numeric) <= set().union(*(p.numeric for p in pops))
    labels = set().union(*(load_scenario(s).actions.labels for s in SCENARIOS))
    assert set(cfg.action_bias) | set(cfg.action_lean) <= labels
    channels = {c for c, _ in DEFAULT_CHANNELS}
    assert set(cfg.channel_loading) | set(cfg.channel_bias) <= channels
