"""A sweep axis: one edit over a list of values (`lsm rollout --sweep`, the explorer's sweeps)."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lsm.config import ConfigError, Problem
from lsm.limits import MAX_SWEEP_VALUES, number_problem
from lsm.society.interventions.edits import (KIND, NUMERIC_EVENT_FIELDS, EditMessages, EventRef, Interventions, SetEvent, SeverTies, _num)
from lsm.society.interventions.parse import _split, parse


@dataclass(frozen=True)
class SweepAxis:
    """One edit over a list of values: `events[0].credibility=0.2,0.5,0.9`, `events[0].credibility*=0.5,1,2`,
    `events[0].exposure.fraction=0:1:5` (start:stop:count); `events.0.credibility` is the same path."""

    key: str
    """The clause before its value, e.g. `events[0].credibility=` or `events[0].credibility*=`."""
    values: tuple[float, ...]

    @property
    def name(self) -> str:
        return self.key.rstrip("=").rstrip("*")

    def edits_at(self, value: float) -> Interventions:
        return parse(f"{self.key}{_num(value)}", f"--sweep {self.name}")

    @property
    def points(self) -> list[Interventions]:
        return [self.edits_at(v) for v in self.values]

    @property
    def event(self) -> EventRef | None:
        """The event the axis edits (None for another edit)."""
        e = self.points[0].edits[0]
        return getattr(e, "event", None)

    def to_dict(self) -> dict[str, Any]:
        """What a sweep's results record: `path` (the edited field), `edit` (the clause before its value), `values`."""
        return {"path": self.name, "edit": self.key, "values": list(self.values)}

    @classmethod
    def parse(cls, spec: str, source: str = "--sweep") -> "SweepAxis":
        split = _split(spec)
        if split is None:
            raise ConfigError(source, [Problem("", spec, "EDIT=VALUES, e.g. events[0].credibility=0.2,0.5,0.9 or "
                                                         "events[0].exposure.fraction=0:1:5 (start:stop:count)")], KIND)
        key, op, vals = split
        key = re.sub(r"^events\.(\d+)(?=\.|$)", r"events[\1]", key)  # the dotted spelling of a path
        problem = None
        values: list[float] = []
        if ":" in vals:
            try:
                lo, hi, count = vals.split(":")
                lo_f, hi_f, n = float(lo), float(hi), int(count)
            except ValueError:
                problem = "values 'a,b,c' or 'start:stop:count' (numbers)"
            else:
                if not 1 <= n <= MAX_SWEEP_VALUES:
                    problem = f"a count of 1 to {MAX_SWEEP_VALUES} values (lsm.limits.MAX_SWEEP_VALUES)"
                elif (bad := number_problem(lo_f) or number_problem(hi_f)):
                    problem = f"finite bounds ({lo if number_problem(lo_f) else hi} is not {bad})"
                else:
                    values = np.linspace(lo_f, hi_f, n).round(6).tolist()
        else:
            raw = [v for v in vals.split(",")[: MAX_SWEEP_VALUES + 1] if v.strip()]
            try:
                values = [float(v) for v in raw]
            except ValueError:
                problem = "values 'a,b,c' or 'start:stop:count' (numbers)"
            else:
                if len(values) > MAX_SWEEP_VALUES:
                    problem = f"at most {MAX_SWEEP_VALUES} values (lsm.limits.MAX_SWEEP_VALUES)"
                elif bad_v := [v for v in values if number_problem(v)]:
                    problem = f"numbers ({bad_v[0]} is not {number_problem(bad_v[0])})"
        if problem is None and not values:
            problem = "at least one value"
        if problem is not None:
            raise ConfigError(source, [Problem(key, vals, problem)], KIND)
        axis = cls(f"{key}{op}", tuple(values))
        for v in (values[0],):  # the edit itself: a bad path or field is refused now
            e = axis.edits_at(v)
            if len(e) != 1 or isinstance(e.edits[0], (SeverTies, EditMessages)) or \
                    isinstance(e.edits[0], SetEvent) and e.edits[0].field not in NUMERIC_EVENT_FIELDS:
                raise ConfigError(source, [Problem(key, vals, "a numeric edit to sweep: an event's "
                                                   f"{', '.join(NUMERIC_EVENT_FIELDS)} (= or *=), tick, exposure.fraction, "
                                                   "or a numeric attribute")], KIND)
        return axis


def sweep_points(axes: Sequence[SweepAxis]) -> list[tuple[tuple[int, ...], Interventions, str]]:
    """Every grid point: (index, its edits, a label like `events[0].credibility=0.5`)."""
    out = []
    for idx in itertools.product(*[range(len(a.values)) for a in axes]):
        edits = Interventions()
        labels = []
        for axis, k in zip(axes, idx):
            edits = edits + axis.edits_at(axis.values[k])
            labels.append(f"{axis.name}={axis.values[k]:g}")
        out.append((idx, edits, ", ".join(labels)))
    return out
