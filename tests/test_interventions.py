"""The intervention language (`society.interventions`): both forms round-trip, each kind of edit
gives the hand-expected scenario / world / shown table, bad specs are one-paragraph
`ConfigError`s, and one intervention applied through the CLI, the explorer API and recovery gives
the same edited scenario (byte-equal YAML) and world (equal graph)."""
from __future__ import annotations

import numpy as np
import pytest

from lsm.config import ConfigError, read_yaml, shipped, to_yaml
from lsm.society import interventions as iv
from lsm.society.scenario import ScenarioError, load_scenario
from lsm.society.world import build_world, save_world
from lsm.society.world.graph import EDGE_TYPES

SCENARIO = shipped("scenarios", "vaccine_campaign.yaml")

EVERY_KIND = ("events[0].credibility=0.5; events[1].valence*=0.5; events[2].tick=3; events[3]=removed; "
              "events[0].exposure.fraction=0.2; events[1].exposure.where=age=18.0..30.0,gender=female|male; "
              "events[2].exposure.followers_of=national_tv|local_paper; events[viral video].framing=fear; "
              "sever=household,friend; messages=none; messages=shuffled:3; messages=opposite; messages=strong:household:-1; "
              "agents.age=30.0; agents[gender=female,age=..40.0].party=democrat")


@pytest.fixture(scope="module")
def world():
    return build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=200, seed=0)


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(SCENARIO)


def test_both_forms_round_trip_exactly():
    edits = iv.parse(EVERY_KIND)
    assert {type(e).kind for e in edits} == set(iv.KINDS)
    assert str(edits) == EVERY_KIND  # the compact form is canonical here
    assert iv.parse(str(edits)) == edits
    assert iv.from_data(edits.to_list()) == edits
    assert iv.from_yaml(edits.to_yaml()) == edits
    # a YAML list may mix mappings and compact texts; the dotted spelling of a path is the same edit
    mixed = iv.from_data([{"kind": "scale", "event": 0, "field": "credibility", "factor": 0.5}, "sever=friend"])
    assert mixed == iv.parse("events.0.credibility*=0.5; sever=friend")
    # sever: one spelling (each type once, in EDGE_TYPES order)
    assert iv.parse("sever=friend,household,friend") == iv.parse("sever=household,friend")


def test_event_edits_give_the_hand_expected_scenario(scenario):
    base = scenario.events
    ed = iv.apply(iv.parse("events[0].credibility=0.5; events[1].valence*=0.5; events[2].tick=3; "
                           "events[viral video].framing=fear; events[0].exposure.fraction=0.2"), scenario=scenario)
    ev = ed.scenario.events
    assert ev[0].credibility == 0.5 and ev[1].valence == pytest.approx(base[1].valence * 0.5) and ev[2].tick == 3
    assert ev[1].framing == "fear" and base[1].source == "viral video"
    assert ev[0].exposure.fraction == 0.2 and base[0].exposure.fraction == 0.9
    assert [e.text for e in ev] == [e.text for e in base] and scenario.events[0].credibility == base[0].credibility
    # indices name the base's events; removals are dropped last
    ed = iv.apply(iv.parse("events[0]=removed; events[1].credibility=0.3"), scenario=scenario)
    assert [e.text for e in ed.scenario.events] == [e.text for e in base[1:]] and ed.scenario.events[0].credibility == 0.3
    # the same from the scenario's YAML data, byte-equal
    assert to_yaml(iv.apply(iv.parse("events[0]=removed"), scenario=read_yaml(SCENARIO)).scenario) == to_yaml(
        iv.apply(iv.parse("events[0]=removed"), scenario=scenario).scenario)
    # exposure rules
    ed = iv.apply(iv.parse("events[1].exposure.where=age=..40.0,gender=female; events[2].exposure.followers_of=national_tv"),
                  scenario=scenario)
    where = ed.scenario.events[1].exposure.where
    assert where["gender"] == ["female"] and where["age"].max == 40.0 and where["age"].min is None
    assert ed.scenario.events[2].exposure.followers_of == ["national_tv"]


def test_world_edits_give_the_hand_expected_world(world):
    g = world.graph
    counts = np.bincount(g.edge_type, minlength=len(EDGE_TYPES))
    ed = iv.apply(iv.parse("sever=household,friend"), world=world)
    g2 = ed.world.graph
    assert ed.world is not world and world.graph.num_edges == g.num_edges == counts.sum()  # the input is kept
    assert not np.isin(g2.edge_type, [0, 1]).any()
    np.testing.assert_array_equal(np.bincount(g2.edge_type, minlength=len(EDGE_TYPES))[2:], counts[2:])
    keep = ~np.isin(g.edge_type, [0, 1])
    np.testing.assert_array_equal(g2.edge_index, g.edge_index[:, keep])
    # a severed tie carries nothing: no neighbour is shown along it
    from lsm.society.loop.neighbors import NeighborIndex, NeighborRule, EdgeTyper

    rule = NeighborRule(k=4)
    shown = NeighborIndex.of(g2, rule.weights).shown(rule, np.ones(world.n, dtype=bool), 0, 1)
    hh = EdgeTyper(g)  # the ties of the unsevered graph
    rows = np.broadcast_to(np.arange(world.n)[:, None], shown.shape)
    types, found = hh.lookup(np.maximum(shown, 0).ravel(), rows.ravel())
    on_severed = (shown.ravel() >= 0) & found & ~EdgeTyper(g2).lookup(np.maximum(shown, 0).ravel(), rows.ravel())[1]
    assert not on_severed.any() and (shown >= 0).any()
    # attributes, for all agents or a filtered subset
    pop = world.population
    ed = iv.apply(iv.parse("agents.age=30; agents[gender=female,age=..40].party=democrat"), world=world)
    p2 = ed.world.population
    assert (p2.numeric["age"] == 30).all() and pop.numeric["age"].std() > 0
    female = pop.labels("gender") == "female"  # every age is 30 by then: the filter reads the edits before it
    assert (p2.labels("party")[female] == "democrat").all() and (pop.labels("party")[female] != "democrat").any()
    np.testing.assert_array_equal(p2.labels("party")[~female], pop.labels("party")[~female])
    assert ed.world.graph is world.graph and (pop.numeric["age"] != 30).any()


def test_message_edits_are_one_table_edit():
    shown = np.array([[1, 2, -1], [0, -1, -1], [0, 1, -1]])
    types = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    stance = np.array([0.5, -0.9, 0.9])
    assert iv.apply(iv.parse("messages=none")).perception(1, shown, types, stance).tolist() == [[-1] * 3] * 3
    strong = iv.apply(iv.parse("messages=strong:household:-1")).perception(1, shown, types, stance)
    assert strong.tolist() == [[1, 2, -1], [1, -1, -1], [0, 1, -1]]  # the first household slot holds the most negative agent
    both = iv.apply(iv.parse("messages=strong:household:-1; messages=none")).perception(1, shown, types, stance)
    assert (both == -1).all()
    assert iv.apply(iv.parse("events[0].credibility=0.5"), scenario=read_yaml(SCENARIO)).perception is None


@pytest.mark.parametrize("spec, words", [
    ("events[9].credibility=0.5", "field 'events[9]' = 9: expected one of the scenario's scheduled events 0..3"),
    ("events[0].colour=0.5", "field 'events[0].colour' = 'colour': expected an event field"),
    ("events[0].credibility=high", "field 'events[0].credibility' = 'high': expected a number"),
    ("events[0].credibility=2", "field 'events[0].credibility' = 2.0: expected a number between 0 and 1"),
    ("events[0].tick=99", "field 'events[0].tick' = 99: expected a tick 0..7 (the scenario has 8 ticks)"),
    ("events[nobody].valence=0", "'events[nobody]' = 'nobody': expected the source of exactly one scheduled event"),
    ("events[0].text*=2", "*= only on a numeric event field"),
    ("sever=cousin", "field 'sever' = 'cousin': expected one of the tie types (household, friend"),
    ("messages=loud", "field 'messages' = 'loud': expected one of 'none'"),
    ("messages=strong:friend:2", "messages=strong:TIE:+1 or messages=strong:TIE:-1"),
    ("agents.height=2", "field 'agents.height' = 'height': expected an attribute of the world's population"),
    ("agents.party=green", "field 'agents.party' = 'green': expected a category of 'party' (democrat, independent"),
    ("agents.age=200", "field 'agents.age' = 200.0: expected a number in [18, 95]"),
    ("hello", "expected KEY=VALUE"),
])
def test_bad_specs_are_one_paragraph_config_errors(spec, words, scenario, world):
    with pytest.raises(ConfigError) as err:
        iv.apply(iv.parse(spec, "--counterfactual"), scenario=scenario, world=world)
    text = str(err.value)
    assert words in text, text
    assert "\n" not in text and text.startswith("Invalid ")
    if "between 0 and 1" in words:
        assert isinstance(err.value, ScenarioError)  # the scenario's own rule, not repeated by the language
    # the YAML form is checked field by field, every problem listed
    with pytest.raises(ConfigError, match=r"\(1\) field 'interventions\[0\].factor'.*\(2\) field 'interventions\[1\].kind'"):
        iv.from_data([{"kind": "scale", "event": 0, "field": "valence", "factor": "big"}, {"kind": "paint"}])
    with pytest.raises(ConfigError, match="a scenario to edit"):
        iv.apply(iv.parse("events[0]=removed"), world=world)


def test_one_intervention_is_the_same_through_the_cli_the_explorer_and_recovery(scenario, world, tmp_path):
    """The same edits reach the same scenario and world whichever caller reads them: `lsm rollout
    --counterfactual` (typed, and as an interventions file), the explorer's what-if request (the
    language, and the front end's older fields mapped onto it) and `lsm recovery`'s table."""
    from lsm.explore import whatif
    from lsm.infer.counterfactual import counterfactual_inputs
    from lsm.recovery.metrics import INTERVENTIONS, intervention_inputs

    spec = "events[2].credibility=0.4; sever=household"
    world_file = tmp_path / "world.h5"
    save_world(world, world_file)
    (tmp_path / "edits.yaml").write_text(iv.parse(spec).to_yaml())

    cli, _ = counterfactual_inputs(spec, scenario, world)
    cli_file, _ = counterfactual_inputs(str(tmp_path / "edits.yaml"), scenario, world)
    base = whatif.Base.__new__(whatif.Base)  # what a what-if keeps of its base rollout: the scenario as its file holds it
    base.path, base.scenario_data = world_file, read_yaml(SCENARIO)
    explorer = base.edited(whatif.request_interventions({"interventions": spec}, len(scenario.events)))
    legacy = base.edited(whatif.request_interventions(
        {"edits": [{"event": 2, "field": "credibility", "value": 0.4}], "sever": ["household"]}, len(scenario.events)))
    recovery = intervention_inputs(spec, SCENARIO, world)
    results = [cli, cli_file, explorer, legacy, recovery]
    assert len({r.interventions for r in results}) == 1
    assert len({to_yaml(r.scenario) for r in results}) == 1
    for r in results[1:]:
        np.testing.assert_array_equal(r.world.graph.edge_index, cli.world.graph.edge_index)
        np.testing.assert_array_equal(r.world.graph.edge_type, cli.world.graph.edge_type)
    assert cli.scenario.events[2].credibility == 0.4 and not (cli.world.graph.edge_type == 0).any()
    # recovery's own interventions are in the same language and mean the same through the CLI
    for name, rec in INTERVENTIONS.items():
        a, b = intervention_inputs(rec, SCENARIO, world), counterfactual_inputs(rec, scenario, world)[0]
        assert to_yaml(a.scenario) == to_yaml(b.scenario), name
        np.testing.assert_array_equal(a.world.graph.edge_index, b.world.graph.edge_index)


def test_a_file_records_its_interventions_and_lsm_info_shows_them(world, tmp_path):
    from lsm.society.info import describe
    from lsm.society.store import TraceWriter, read_configs, open_h5

    edits = iv.parse("events[0].credibility*=0.5; sever=friend")
    world_file = tmp_path / "world.h5"
    save_world(world, world_file)
    with TraceWriter(tmp_path / "r.h5", "student_rollout", world_file, SCENARIO.read_text(), {"N": world.n, "C": 8, "A": 3, "E": 2},
                     configs={"interventions": edits.to_yaml()}):
        pass
    with open_h5(tmp_path / "r.h5") as f:
        assert iv.from_data(read_configs(f)["interventions"]) == edits
    assert f"  interventions: {edits}" in describe(tmp_path / "r.h5")


def test_a_sweep_axis_is_one_edit_over_values(scenario):
    axis = iv.SweepAxis.parse("events.0.exposure.fraction=0.1:0.9:3")
    assert axis.values == (0.1, 0.5, 0.9) and axis.name == "events[0].exposure.fraction" and axis.event == 0
    assert axis.edits_at(0.5) == iv.parse("events[0].exposure.fraction=0.5")
    grid = iv.sweep_points([axis, iv.SweepAxis.parse("events[1].credibility*=0.5,2")])
    assert [g[0] for g in grid] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert grid[3][1] == iv.parse("events[0].exposure.fraction=0.5; events[1].credibility*=2")
    for bad, words in (("events[0].text=1,2", "a numeric edit to sweep"), ("sever=friend", "values"), ("events[0].credibility", "EDIT=VALUES")):
        with pytest.raises(ConfigError, match=words):
            iv.SweepAxis.parse(bad)
