"""`lsm scenario`: validate a scenario, show its timeline and, on a world, whom each event reaches."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lsm.config import resolve_config
from lsm.society.loop.events import EventSchedule
from lsm.society.scenario import Scenario, check_against_world, load_scenario, timeline
from lsm.society.world import load_world


@dataclass
class Exposure:
    tick: int
    event: int
    """The event's uid in the run (its index among the scheduled events)."""
    agents: int
    share: float


@dataclass
class ScenarioPreview:
    path: Path
    scenario: Scenario
    exposure: list[Exposure] = field(default_factory=list)
    """Scheduled events by tick with the agents they reach (empty without a world)."""
    text: str = ""
    """What `lsm scenario` prints."""


def preview_scenario(file: str | Path, world: str | Path | None = None, seed: int = 0) -> ScenarioPreview:
    """Load and validate a scenario (a path or a shipped name; a `ScenarioError` lists every
    problem); with a world file, also check its exposure rules against the world's attributes and
    outlets and count the agents each scheduled event reaches under `seed`."""
    path = resolve_config(file, "scenarios")
    sc = load_scenario(path)
    lines = [f"{path}: valid.", timeline(sc)]
    rows: list[Exposure] = []
    if world is not None:

        w = load_world(world)
        check_against_world(sc, w.population, w.graph, source=path)
        sched = EventSchedule(sc, w.population, w.graph, seed)
        lines.append(f"\nExposure on {world} ({w.n:,} agents, seed {seed}):")
        for t in range(sc.ticks):
            for ev, col in zip(sched.events_at(t), sched.exposure(t).T):
                rows.append(Exposure(t, ev.uid, int(col.sum()), float(col.mean())))
                lines.append(f"  tick {t:>3}  event {ev.uid}: {rows[-1].agents:,} agents ({rows[-1].share:.1%})")
    return ScenarioPreview(path, sc, rows, "\n".join(lines))
