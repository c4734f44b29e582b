from __future__ import annotations

import numpy as np
import pytest

from lsm.config import shipped
from lsm.society.loop.events import EventSchedule, PopulationState, exposure_mask
from lsm.society.scenario import load_scenario, scenario_from_dict


def test_guessing_game_announces_two_thirds_of_the_mean(anes_world):
    sc = load_scenario(shipped("scenarios", "guessing_game.yaml"))
    sched = EventSchedule(sc, anes_world.population, anes_world.graph, seed=0)
    guesses = np.random.default_rng(0).integers(0, 101, size=anes_world.n).astype(np.float32)
    valid = np.ones(anes_world.n, dtype=bool)
    valid[:10] = False
    guesses[:10] = 1000  # invalid agents must not count
    state = PopulationState(decision=sc.actions.bin_of(guesses), decision_value=guesses, valid=valid)
    injected = sched.after_tick(0, state)
    assert len(injected) == 1
    ev = injected[0]
    mean = guesses[10:].mean()
    assert ev.tick == 1 and ev.origin == "trigger:announce_winner"
    assert ev.values["winning"] == pytest.approx(mean * 2 / 3, rel=1e-5)
    assert f"{mean * 2 / 3:.1f}" in ev.text and "Round 1 result" in ev.text
    assert sched.events_at(1) == [ev]
    # Repeating trigger: fires again next round; never past the last tick.
    assert len(sched.after_tick(1, state)) == 1
    assert sched.after_tick(sc.ticks - 1, state) == []


def test_threshold_trigger_fires_once(anes_world):
    sc = load_scenario(shipped("scenarios", "vaccine_campaign.yaml"))
    sched = EventSchedule(sc, anes_world.population, anes_world.graph, seed=0)
    n = anes_world.n
    low = PopulationState(decision=np.zeros(n, dtype=np.int16) + 1)  # everyone waits
    assert sched.after_tick(0, low) == []
    high = PopulationState(decision=np.zeros(n, dtype=np.int16))  # everyone vaccinates
    fired = sched.after_tick(1, high)
    assert [e.origin for e in fired] == ["trigger:majority_vaccinated"]
    assert "100%" in fired[0].text
    assert sched.after_tick(2, high) == []  # once


def test_channel_threshold_trigger(anes_world):
    sc = load_scenario(shipped("scenarios", "policy_announcement.yaml"))
    sched = EventSchedule(sc, anes_world.population, anes_world.graph, seed=0)
    n, c = anes_world.n, len(sc.channel_names)
    channels = np.full((n, c), 0.2, dtype=np.float32)
    fired = sched.after_tick(0, PopulationState(decision=np.zeros(n, dtype=np.int16), channels=channels))
    assert [e.origin for e in fired] == ["trigger:trust_collapse"]


def test_exposure_is_seeded_and_respects_filters(anes_world):
    pop, g = anes_world.population, anes_world.graph
    sc = scenario_from_dict({
        "name": "t", "ticks": 2, "tick_length": "1 day", "context": "c", "question": "q?",
        "actions": {"type": "categorical", "options": [{"name": "a"}, {"name": "b"}]},
        "events": [{"tick": 0, "text": "hi", "source_type": "media", "channel": "tv", "framing": "neutral",
                    "valence": 0, "credibility": 0.5,
                    "exposure": {"fraction": 0.5, "where": {"party": ["republican"], "age": {"min": 30}},
                                 "followers_of": ["conservative_talk"]}}],
    })
    ev = sc.events[0]
    m1 = exposure_mask(ev, 0, 0, pop, g, seed=5)
    m2 = exposure_mask(ev, 0, 0, pop, g, seed=5)
    m3 = exposure_mask(ev, 0, 0, pop, g, seed=6)
    np.testing.assert_array_equal(m1, m2)
    assert (m1 != m3).any()
    eligible = (pop.labels("party") == "republican") & (pop.numeric["age"] >= 30) & g.followers_of("conservative_talk")
    assert not (m1 & ~eligible).any()
    assert 0.35 < m1.sum() / eligible.sum() < 0.65


def test_schedule_state_round_trip(anes_world):
    sc = load_scenario(shipped("scenarios", "guessing_game.yaml"))
    a = EventSchedule(sc, anes_world.population, anes_world.graph, seed=0)
    guesses = np.full(anes_world.n, 30.0, dtype=np.float32)
    a.after_tick(0, PopulationState(decision=sc.actions.bin_of(guesses), decision_value=guesses))
    b = EventSchedule(sc, anes_world.population, anes_world.graph, seed=0)
    b.load_state_dict(a.state_dict())
    assert [(e.uid, e.tick, e.text) for e in b.events] == [(e.uid, e.tick, e.text) for e in a.events]
    np.testing.assert_array_equal(a.exposure(1), b.exposure(1))
