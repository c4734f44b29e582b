"""The unknowns `lsm calibrate` fits, named in the scenario's own terms, each with bounds
(docs/calibrate.md#the-unknowns).

    events.0.credibility: [0.2, 1]          an event's numeric feature (any of `EVENT_FEATURES`)
    events.1.valence: [-1, 0]
    events.2.exposure.fraction: [0.1, 1]    who sees it (gradient-free methods only)
    offsets.vaccinate.party=republican: [-2, 2]   a group's lean towards an action (a logit offset;
    offsets.refuse: [-1, 1]                 no group: everyone), written as the scenario's `offsets`
    neighbors.weights.friend: [0, 4]        the neighbour rule's weight of a tie type (gradient-free only)

A spec is a YAML file of such lines, or the same inline: `events.0.credibility=0.2..1,offsets.refuse=-1..1`.
Values are reparameterised as θ = lo + (hi − lo)·sigmoid(φ), so no optimiser step can leave the bounds.

Notation: P parameters | N agents | A actions.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsm.config import ConfigError, Problem, read_yaml, to_dict
from lsm.society.groups import where_mask
from lsm.society.loop.neighbors import NeighborRule
from lsm.society.scenario import EVENT_FEATURE_RANGES, MAX_LOGIT_OFFSET, Scenario, scenario_from_dict
from lsm.society.world.graph import EDGE_TYPES

from lsm.calibrate.observed import parse_group

KIND = "parameter spec (--fit)"
MAX_PARAMS = 64
"""More unknowns than this are refused (each costs the fit rollouts)."""


@dataclass(frozen=True)
class Param:
    """One unknown: where it lives and its bounds."""

    path: str
    lo: float
    hi: float
    kind: str
    """`event` (a numeric feature), `exposure` (an event's exposure fraction), `offset` or `tie_weight`."""
    event: int = -1
    """The event's index in the scenario (`event`, `exposure`)."""
    name: str = ""
    """The feature (`event`), the action (`offset`) or the tie type (`tie_weight`)."""
    group: str = ""
    """`offset`: the group, `attribute=category[|category]` ("" is everyone)."""

    @property
    def differentiable(self) -> bool:
        """Whether the student's output is differentiable in it (exposure and the neighbour rule
        change who sees and hears whom: discrete draws)."""
        return self.kind in ("event", "offset")


def _bounds(value: Any, path: str, problems: list[Problem]) -> tuple[float, float] | None:
    if isinstance(value, str) and ".." in value:
        value = value.split("..", 1)
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        problems.append(Problem(path, value, "bounds [lo, hi] (inline: lo..hi)"))
        return None
    try:
        lo, hi = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        problems.append(Problem(path, value, "two numbers [lo, hi]"))
        return None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        problems.append(Problem(path, value, "two finite numbers lo < hi"))
        return None
    return lo, hi


def _param(path: str, lo: float, hi: float, scenario: Scenario, pop, problems: list[Problem]) -> Param | None:
    parts = path.split(".")
    n_events = len(scenario.events)

    def legal(lo_ok: float, hi_ok: float, what: str) -> bool:
        if lo < lo_ok or hi > hi_ok:
            problems.append(Problem(path, [lo, hi], f"bounds within {what}'s range [{lo_ok:g}, {hi_ok:g}]"))
            return False
        return True

    if parts[0] == "events":
        if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) >= n_events:
            problems.append(Problem(path, path, f"events.I.FEATURE with I an event index from 0 to {n_events - 1}"))
            return None
        i = int(parts[1])
        rest = ".".join(parts[2:])
        if rest in EVENT_FEATURE_RANGES:
            return Param(path, lo, hi, "event", i, rest) if legal(*EVENT_FEATURE_RANGES[rest], rest) else None
        if rest == "exposure.fraction":
            return Param(path, lo, hi, "exposure", i, "fraction") if legal(0, 1, "a fraction") else None
        problems.append(Problem(path, rest, f"an event feature ({', '.join(EVENT_FEATURE_RANGES)}) or exposure.fraction"))
        return None
    if parts[0] == "offsets":
        action, _, group = path[len("offsets."):].partition(".")
        if action not in scenario.actions.labels:
            problems.append(Problem(path, action, f"offsets.ACTION[.attribute=category] with ACTION among {scenario.actions.labels}"))
            return None
        if group:
            if "=" not in group:
                problems.append(Problem(path, group, "a group attribute=category (or attribute=cat1|cat2)"))
                return None
            found: list[Problem] = []
            mask = where_mask(pop, parse_group(group), path, found)
            if found:
                problems.extend(found)
                return None
            if not mask.any():
                problems.append(Problem(path, group, "a group with at least one agent in the world"))
                return None
        return Param(path, lo, hi, "offset", name=action, group=group) if legal(-MAX_LOGIT_OFFSET, MAX_LOGIT_OFFSET, "a logit offset") else None
    if parts[0] == "neighbors" and len(parts) == 3 and parts[1] == "weights":
        if parts[2] not in EDGE_TYPES:
            problems.append(Problem(path, parts[2], f"a tie type among {list(EDGE_TYPES)}"))
            return None
        return Param(path, lo, hi, "tie_weight", name=parts[2]) if legal(0, 1e6, "a weight") else None
    problems.append(Problem(path, path, "events.I.FEATURE, events.I.exposure.fraction, offsets.ACTION[.attribute=category] "
                                        "or neighbors.weights.TIE"))
    return None


def parse_params(spec: str, scenario: Scenario, pop) -> list[Param]:
    """The unknowns of `spec` (a YAML file, or inline `PATH=LO..HI,...`), checked against the
    scenario and the world's population; one `ConfigError` names every bad entry."""
    source = spec
    if Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file():
        data = read_yaml(spec, kind=KIND)
        if not isinstance(data, dict):
            raise ConfigError(spec, [Problem("", data, "a mapping PATH: [lo, hi]")], KIND)
        items = [(str(k), v) for k, v in data.items()]
    else:
        source = "--fit"
        items = []
        for clause in [c.strip() for c in spec.split(",") if c.strip()]:
            path, eq, bounds = clause.partition("=")
            if path.startswith("offsets.") and "=" in bounds and ".." in bounds.split("=", 1)[1]:  # offsets.a.attr=cat=lo..hi
                g, _, bounds = bounds.partition("=")
                path = f"{path}={g}"
            items.append((path.strip(), bounds.strip() if eq else None))
    problems: list[Problem] = []
    out: list[Param] = []
    if not items:
        problems.append(Problem("", spec, "at least one unknown PATH: [lo, hi]"))
    if len(items) > MAX_PARAMS:
        raise ConfigError(source, [Problem("", f"{len(items)} unknowns", f"at most {MAX_PARAMS}")], KIND)
    for path, value in items:
        b = _bounds(value, path, problems)
        if b is not None and (p := _param(path, *b, scenario, pop, problems)) is not None:
            out.append(p)
    seen = [p.path for p in out]
    for path in dict.fromkeys(seen):
        if seen.count(path) > 1:
            problems.append(Problem(path, path, "each unknown named once"))
    if problems:
        raise ConfigError(source, problems, KIND)
    return out


class ParamSpace:
    """The unknowns, their reparameterisation and how their values make a scenario and rule."""

    def __init__(self, params: list[Param]):
        self.params = params
        self.lo = torch.tensor([p.lo for p in params], dtype=torch.float64)  # (P,)
        self.hi = torch.tensor([p.hi for p in params], dtype=torch.float64)  # (P,)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def names(self) -> list[str]:
        return [p.path for p in self.params]

    @property
    def differentiable(self) -> bool:
        return all(p.differentiable for p in self.params)

    def values(self, phi: Tensor) -> Tensor:
        """(P,) unconstrained φ -> (P,) values inside the bounds."""
        return self.lo.to(phi) + (self.hi - self.lo).to(phi) * torch.sigmoid(phi)

    def phi(self, values: Tensor | np.ndarray | list[float]) -> Tensor:
        """(P,) values -> (P,) φ (values at a bound are moved 10⁻⁶ of the range inside)."""
        v = torch.as_tensor(values, dtype=torch.float64)
        u = ((v - self.lo) / (self.hi - self.lo)).clamp(1e-6, 1 - 1e-6)
        return torch.log(u) - torch.log1p(-u)

    def unit(self, values: np.ndarray) -> np.ndarray:
        """(P,) values -> their place in the box, 0..1 (what a distance between fits is measured in)."""
        return (np.asarray(values) - self.lo.numpy()) / (self.hi - self.lo).numpy()

    def scenario_data(self, base: dict, values: np.ndarray | list[float]) -> dict:
        """The base scenario's data with the values written in: event features and exposure
        fractions set, offsets set (replacing an entry of the same action and group, else added)."""
        data = copy.deepcopy(base)
        for p, v in zip(self.params, values):
            v = float(v)
            if p.kind == "event":
                data["events"][p.event][p.name] = v
            elif p.kind == "exposure":
                data["events"][p.event].setdefault("exposure", {})["fraction"] = v
            elif p.kind == "offset":
                where = parse_group(p.group)
                offsets = data.setdefault("offsets", [])
                same = [o for o in offsets if o.get("action") == p.name and (o.get("where") or {}) == where]
                if same:
                    same[0]["logit"] = v
                else:
                    offsets.append({"action": p.name, "logit": v, **({"where": where} if where else {})})
        return data

    def scenario(self, base: dict, values: np.ndarray | list[float], source: str = "<calibrated>") -> Scenario:
        return scenario_from_dict(self.scenario_data(base, values), source=source)

    def rule(self, base: NeighborRule, values: np.ndarray | list[float]) -> NeighborRule:
        """The neighbour rule with the tie-type weights among the unknowns set."""
        weights = dict(base.weights)
        for p, v in zip(self.params, values):
            if p.kind == "tie_weight":
                weights[p.name] = float(v)
        return replace(base, weights=weights)

    def truth_text(self, values: np.ndarray | list[float]) -> str:
        """The values as an inline spec of points (`--true`)."""
        return ",".join(f"{p.path}={float(v):.4g}" for p, v in zip(self.params, values))


def parse_values(text: str, space: ParamSpace, source: str = "--true") -> np.ndarray:
    """`PATH=VALUE,...` naming every unknown once, each inside its bounds -> (P,) values."""
    got: dict[str, float] = {}
    problems: list[Problem] = []
    for clause in [c.strip() for c in text.split(",") if c.strip()]:
        path, _, value = clause.rpartition("=")
        try:
            got[path.strip()] = float(value)
        except ValueError:
            problems.append(Problem(path or clause, value, "a number"))
    for p in space.params:
        if p.path not in got:
            problems.append(Problem(p.path, None, f"a value in [{p.lo:g}, {p.hi:g}]"))
        elif not p.lo <= got[p.path] <= p.hi:
            problems.append(Problem(p.path, got[p.path], f"a value in [{p.lo:g}, {p.hi:g}]"))
    for path in got:
        if path not in space.names:
            problems.append(Problem(path, got[path], f"one of the unknowns ({', '.join(space.names)})"))
    if problems:
        raise ConfigError(source, problems, "true values")
    return np.array([got[p.path] for p in space.params])


def scenario_dict(scenario: Scenario) -> dict:
    """The scenario as plain data (what `ParamSpace.scenario_data` edits)."""
    return to_dict(scenario)
