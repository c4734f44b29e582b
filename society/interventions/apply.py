"""`apply`: the one entry point that edits a scenario, a world and a perception (see `edits`)."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lsm.config import ConfigError, Problem, to_dict
from lsm.society.interventions import tables
from lsm.society.interventions.edits import (KIND, SCENARIO_KINDS, WORLD_KINDS, Edit, EditMessages, EventRef, Interventions,
                                             MoveEvent, RemoveEvent, ScaleEvent, SetAttributes, SetEvent, SeverTies,
                                             edit_to_dict)
from lsm.society.groups import where_mask
from lsm.society.scenario import Scenario, scenario_from_dict
from lsm.society.world.graph import EDGE_TYPES
from lsm.config import to_yaml

if TYPE_CHECKING:
    from lsm.society.world import World


@dataclass
class Edited:
    """What `apply` returns: each of the three parts, edited (or as given where nothing touched it)."""

    interventions: Interventions
    scenario: Scenario | None = None
    """The edited scenario, validated by the scenario checker (None when none was given)."""
    scenario_data: dict[str, Any] | None = None
    """The same as plain data (the YAML form)."""
    world: "World | None" = None
    """A copy of the world with the world edits (the given world itself when there are none)."""
    perception: tables.TableEdit | None = None
    """The messages edits as one shown-table edit (None when there are none)."""

    @property
    def scenario_yaml(self) -> str:

        assert self.scenario is not None
        return to_yaml(self.scenario)


def _event_index(ref: EventRef, events: list[dict], problems: list[Problem]) -> int | None:
    n = len(events)
    if isinstance(ref, int):
        if 0 <= ref < n:
            return ref
        problems.append(Problem(f"events[{ref}]", ref, f"one of the scenario's scheduled events 0..{n - 1} (by index)"
                                if n else "an event, but the scenario has no scheduled events"))
        return None
    hits = [k for k, e in enumerate(events) if e.get("source") == ref]
    if len(hits) == 1:
        return hits[0]
    named = sorted({str(e.get("source")) for e in events if e.get("source")})
    problems.append(Problem(f"events[{ref}]", ref, f"the source of exactly one scheduled event ({len(hits)} have it; "
                                                      f"sources: {', '.join(named) or 'none'}); or an index"))
    return None


def _apply_scenario(edits: Interventions, scenario: Scenario | dict, source: str) -> tuple[Scenario, dict]:
    data = copy.deepcopy(to_dict(scenario) if isinstance(scenario, Scenario) else scenario)
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", data, "a scenario (a mapping)")], "scenario")
    events = data.get("events") or []
    problems: list[Problem] = []
    removed: set[int] = set()
    for e in edits:
        if not isinstance(e, SCENARIO_KINDS):
            continue
        i = _event_index(e.event, events, problems)
        if i is None:
            continue
        ev = events[i]
        if isinstance(e, SetEvent):
            ev[e.field] = e.value
        elif isinstance(e, ScaleEvent):
            if not isinstance(ev.get(e.field), (int, float)):
                problems.append(Problem(f"events[{e.event}].{e.field}", ev.get(e.field), "a number to scale"))
                continue
            ev[e.field] = float(ev[e.field]) * e.factor
        elif isinstance(e, MoveEvent):
            ticks = data.get("ticks")
            if isinstance(ticks, int) and not e.tick < ticks:
                problems.append(Problem(f"events[{e.event}].tick", e.tick, f"a tick 0..{ticks - 1} (the scenario has {ticks} ticks)"))
                continue
            ev["tick"] = e.tick
        elif isinstance(e, RemoveEvent):
            removed.add(i)
        else:
            exp = ev.setdefault("exposure", {}) or {}
            ev["exposure"] = exp
            if e.fraction is not None:
                exp["fraction"] = e.fraction
            elif e.where is not None:
                exp["where"] = to_dict(e.where)
            else:
                exp["followers_of"] = list(e.followers_of or [])
    if problems:
        raise ConfigError(source, problems, KIND)
    if "events" in data:
        data["events"] = [ev for j, ev in enumerate(events) if j not in removed]
    sc = scenario_from_dict(data, source=f"{source} (the scenario edited by: {edits.describe()[:200]})")
    return sc, data


def _apply_world(edits: Interventions, world: "World", source: str) -> "World":
    """The world edits in order (an `agents[...]` filter reads the attributes as the edits before it left them)."""
    pop, graph = world.population, world.graph
    problems: list[Problem] = []
    for e in edits:
        if isinstance(e, SeverTies):
            keep = ~np.isin(graph.edge_type, [EDGE_TYPES.index(t) for t in e.ties])
            graph = dataclasses.replace(graph, edge_index=graph.edge_index[:, keep], edge_type=graph.edge_type[keep],
                                        edge_weight=graph.edge_weight[keep])
        elif isinstance(e, SetAttributes):
            mask = where_mask(pop, e.where, "agents[where]", problems)
            a = e.attribute
            if a in pop.categorical:
                labels = pop.categories[a]
                value = e.value if isinstance(e.value, str) else format(e.value, "g")
                if value not in labels:
                    problems.append(Problem(f"agents.{a}", e.value, f"a category of '{a}' ({', '.join(labels)})"))
                    continue
                codes = np.where(mask, labels.index(value), pop.categorical[a]).astype(pop.categorical[a].dtype)
                pop = dataclasses.replace(pop, categorical={**pop.categorical, a: codes})
            elif a in pop.numeric:
                lo, hi = pop.numeric_range[a]
                if not isinstance(e.value, (int, float)) or not lo <= e.value <= hi:
                    problems.append(Problem(f"agents.{a}", e.value, f"a number in [{lo:g}, {hi:g}] (the range of '{a}')"))
                    continue
                values = np.where(mask, e.value, pop.numeric[a]).astype(pop.numeric[a].dtype)
                pop = dataclasses.replace(pop, numeric={**pop.numeric, a: values})
            else:
                problems.append(Problem(f"agents.{a}", a, f"an attribute of the world's population ({', '.join(pop.attributes)})"))
    if problems:
        raise ConfigError(source, problems, KIND)
    if pop is world.population and graph is world.graph:
        return world
    return dataclasses.replace(world, population=pop, graph=graph)


def _compose(edits: list[tables.TableEdit]) -> tables.TableEdit:
    if len(edits) == 1:
        return edits[0]

    def edit(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
        for e in edits:
            shown = e(t, shown, types, stance)
        return shown

    return edit


def apply(edits: Interventions | Sequence[Edit], scenario: Scenario | dict | None = None, world: "World | None" = None,
          source: str = "<interventions>") -> Edited:
    """Apply the edits, in order, to a scenario (a `Scenario` or its YAML data), a world and/or
    what agents hear. Event edits need `scenario`, `sever` and `attributes` need `world`. Raises
    `ConfigError` (an edit that does not fit: an unknown event, attribute or category) or
    `ScenarioError` (the edited scenario breaks the scenario's rules); the inputs are not changed."""
    edits = edits if isinstance(edits, Interventions) else Interventions(tuple(edits))
    missing = [Problem(f"interventions[{k}]", edit_to_dict(e), f"a {'scenario' if isinstance(e, SCENARIO_KINDS) else 'world'} to edit")
               for k, e in enumerate(edits) if (isinstance(e, SCENARIO_KINDS) and scenario is None)
               or (isinstance(e, WORLD_KINDS) and world is None)]
    if missing:
        raise ConfigError(source, missing, KIND)
    out = Edited(edits, world=world)
    if scenario is not None:
        out.scenario, out.scenario_data = _apply_scenario(edits, scenario, source)
    if world is not None and edits.touches_world:
        out.world = _apply_world(edits, world, source)
    perception = [e.table_edit() for e in edits if isinstance(e, EditMessages)]
    out.perception = _compose(perception) if perception else None
    return out
