"""The scenario's dynamics: which events happen at a tick and who is exposed to them.

Shared by the teacher (LLM agents) and the student (rollouts), so both evaluate exposure and
endogenous triggers identically:

    schedule = EventSchedule(scenario, pop, graph, seed)
    for t in range(scenario.ticks):
        events = schedule.events_at(t)              # scheduled + injected by triggers
        exposed = schedule.exposure(t)              # bool [N, len(events)]
        ... agents decide ...
        schedule.after_tick(t, PopulationState(...))  # evaluates triggers -> events at t+1

Every event gets a stable `uid` (scheduled events 0..S-1 in file order, injected ones S, S+1,
... in firing order); exposure draws use stream `EXPOSURE` of `lsm.society.seeds` keyed by
(uid, tick), so the same seed and the same population state give the same exposures in any
process.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsm.society import seeds
from lsm.society.groups import where_mask
from lsm.society.scenario import Event, Measure, Scenario


@dataclass
class PopulationState:
    """What triggers can look at after a tick.

    Shapes: decision [N] int (action index, or bin index for numeric actions); decision_value
    [N] float (numeric actions: the reported number); channels [N, C] in 0..1; valid [N] bool
    (invalid agent-ticks are ignored by every metric).
    """

    decision: np.ndarray
    decision_value: np.ndarray | None = None
    channels: np.ndarray | None = None
    valid: np.ndarray | None = None


@dataclass
class ScheduledEvent:
    """An event instance at a tick: the scenario's `Event` with its text rendered."""

    uid: int
    tick: int
    event: Event
    origin: str
    """`scheduled` or `trigger:<name>`."""
    values: dict[str, float] = field(default_factory=dict)
    """The trigger's computed values (empty for scheduled events)."""

    @property
    def text(self) -> str:
        return self.event.text


def measure(m: Measure, scenario: Scenario, state: PopulationState) -> float:
    """Evaluate a metric over the valid agents (nan if no agent is valid)."""
    valid = np.ones(len(state.decision), dtype=bool) if state.valid is None else state.valid.astype(bool)
    if m.metric == "always":
        value = 1.0
    elif not valid.any():
        value = float("nan")
    elif m.metric == "action_share":
        value = float((state.decision[valid] == scenario.actions.index(m.action)).mean())  # type: ignore[arg-type]
    elif m.metric in ("mean_decision", "median_decision"):
        values = state.decision_value if state.decision_value is not None else scenario.actions.bin_centers[state.decision]
        v = np.asarray(values, dtype=np.float64)[valid]
        value = float(v.mean() if m.metric == "mean_decision" else np.median(v))
    elif m.metric == "channel_mean":
        if state.channels is None:
            raise ValueError(f"metric channel_mean({m.channel}) needs the channels in the population state")
        c = scenario.channel_names.index(m.channel)  # type: ignore[arg-type]
        value = float(np.asarray(state.channels, dtype=np.float64)[valid, c].mean())
    else:  # pragma: no cover - the schema forbids it
        raise ValueError(m.metric)
    return value * m.scale + m.offset


def _holds(value: float, op: str, threshold: float) -> bool:
    if np.isnan(value):
        return False
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold, "<=": value <= threshold}[op]


def exposure_mask(event: Event, uid: int, tick: int, pop, graph, seed: int) -> np.ndarray:
    """Bool [N]: who sees `event` (instance `uid`) at `tick`. Filters, then a seeded fraction."""
    rule = event.exposure
    mask = where_mask(pop, rule.where)  # checked against the world when the loop starts
    if rule.followers_of:
        follows = np.zeros(pop.n, dtype=bool)
        for outlet in rule.followers_of:
            follows |= graph.followers_of(outlet)
        mask &= follows
    if rule.fraction < 1:
        rng = seeds.rng(seed, seeds.Stream.EXPOSURE, uid, tick)
        mask &= rng.random(pop.n) < rule.fraction
    return mask


class EventSchedule:
    """Scheduled and triggered events of one run (see the module docstring)."""

    def __init__(self, scenario: Scenario, pop, graph, seed: int):
        self.scenario, self.pop, self.graph, self.seed = scenario, pop, graph, seed
        self.events: list[ScheduledEvent] = [
            ScheduledEvent(uid=i, tick=int(e.tick), event=e, origin="scheduled")  # type: ignore[arg-type]
            for i, e in enumerate(scenario.events)
        ]
        self.fired: dict[str, list[int]] = {t.name: [] for t in scenario.triggers}
        """trigger name -> ticks after which it fired."""

    def events_at(self, tick: int) -> list[ScheduledEvent]:
        return [e for e in self.events if e.tick == tick]

    def exposure(self, tick: int) -> np.ndarray:
        """Bool [N, len(events_at(tick))]: agent i sees the k-th event of the tick."""
        evs = self.events_at(tick)
        if not evs:
            return np.zeros((self.pop.n, 0), dtype=bool)
        return np.stack([exposure_mask(e.event, e.uid, tick, self.pop, self.graph, self.seed) for e in evs], axis=1)

    def after_tick(self, tick: int, state: PopulationState) -> list[ScheduledEvent]:
        """Evaluate the triggers on the state at the end of `tick`; inject their events at
        tick + 1 (if the run has one). Returns the injected events."""
        injected: list[ScheduledEvent] = []
        if tick + 1 >= self.scenario.ticks:
            return injected
        for trig in self.scenario.triggers:
            if tick < trig.start_tick or (trig.once and self.fired[trig.name]):
                continue
            value = measure(trig.when, self.scenario, state)
            if trig.when.metric != "always" and not _holds(value, trig.when.op, float(trig.when.value)):  # type: ignore[arg-type]
                continue
            values = {k: measure(m, self.scenario, state) for k, m in trig.compute.items()}
            text = trig.event.text.format(tick=tick, round=tick + 1, next_tick=tick + 1, **values)
            ev = ScheduledEvent(
                uid=len(self.events), tick=tick + 1, event=dataclasses.replace(trig.event, text=text, tick=tick + 1),
                origin=f"trigger:{trig.name}", values=values,
            )
            self.events.append(ev)
            self.fired[trig.name].append(tick)
            injected.append(ev)
        return injected

    # Resume support: the schedule's state is the list of injected events.
    def state_dict(self) -> dict[str, Any]:
        return {
            "fired": {k: list(v) for k, v in self.fired.items()},
            "injected": [
                {"uid": e.uid, "tick": e.tick, "origin": e.origin, "text": e.event.text, "values": e.values}
                for e in self.events if e.origin != "scheduled"
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        by_name = {t.name: t for t in self.scenario.triggers}
        self.events = [e for e in self.events if e.origin == "scheduled"]
        for rec in state["injected"]:
            trig = by_name[rec["origin"].split(":", 1)[1]]
            self.events.append(ScheduledEvent(
                uid=int(rec["uid"]), tick=int(rec["tick"]),
                event=dataclasses.replace(trig.event, text=rec["text"], tick=int(rec["tick"])),
                origin=rec["origin"], values={k: float(v) for k, v in rec["values"].items()},
            ))
        self.fired = {k: [int(t) for t in v] for k, v in state["fired"].items()}
