"""Observed aggregates: the series `lsm calibrate` fits (docs/calibrate.md#the-observation-file).

An observation file is a CSV with a header and one row per observed number:

    tick,metric,target,group,value,se,n
    0,cumulative_share,vaccinate,,0.12,,1500
    3,share,refuse,party=republican,0.21,0.02,

- `tick`: the scenario's tick (0-based) the number was observed at (the end of that tick);
- `metric`: `share` (the share of agents choosing `target` at that tick), `cumulative_share`
  (the share who have chosen it at least once by then: doses given, adopters so far) or
  `channel_mean` (the mean of channel `target`, 0..1);
- `target`: an action of the scenario, or a channel for `channel_mean`;
- `group` (may be empty: everyone): `attribute=category`, or `attribute=cat1|cat2`;
- `value`: the observed number, 0..1;
- `se` and/or `n`: its standard error, or the sample size it came from (a share's standard error
  is then √(v(1 − v)/n), floored at √(1/(4n²)) so an observed 0 or 1 keeps a weight); a channel
  mean needs `se`.

Reading checks everything and raises one `ConfigError` listing each bad line, field and value.

Notation: M observations | N agents.
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsm.config import ConfigError, Problem
from lsm.society.groups import where_mask
from lsm.society.scenario import Scenario

METRICS = ("share", "cumulative_share", "channel_mean")
"""What an observation may measure."""
COLUMNS = ("tick", "metric", "target", "group", "value", "se", "n")
"""The observation file's columns, in order (`group`, `se` and `n` may be empty)."""
KIND = "observation file"
MAX_OBSERVATIONS = 100_000
"""More rows than this are refused (a series of a few hundred numbers is the use)."""


@dataclass(frozen=True)
class Observation:
    tick: int
    metric: str
    target: str
    group: str
    """`attribute=category[|category...]`, or "" for every agent."""
    value: float
    se: float

    @property
    def label(self) -> str:
        return f"{self.metric}({self.target}{', ' + self.group if self.group else ''})"


def parse_group(text: str) -> dict[str, list[str]]:
    """`party=republican|independent` -> {"party": ["republican", "independent"]}; "" -> {} (everyone)."""
    if not text:
        return {}
    attr, _, cats = text.partition("=")
    return {attr.strip(): [c.strip() for c in cats.split("|")]}


def share_se(value: float, n: float) -> float:
    """The standard error of a share `value` observed on `n` people (floored for 0 and 1)."""
    return math.sqrt(max(value * (1 - value), 1 / (4 * n)) / n)


def _number(text: str, what: str, path: str, problems: list[Problem]) -> float | None:
    try:
        x = float(text)
    except ValueError:
        problems.append(Problem(path, text, what))
        return None
    if not math.isfinite(x):
        problems.append(Problem(path, text, what))
        return None
    return x


def load_observed(path: str | Path, scenario: Scenario, pop) -> list[Observation]:
    """Read and check the observation file against the scenario (ticks, actions, channels) and
    the world's population (groups). Raises one `ConfigError` naming every bad line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, [Problem("", "(binary data)", "a UTF-8 CSV file with the header " + ",".join(COLUMNS))], KIND) from None
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise ConfigError(path, [Problem("", "(empty)", "a CSV file with the header " + ",".join(COLUMNS) + " and one row per observation")], KIND)
    header = [c.strip() for c in rows[0]]
    missing = [c for c in ("tick", "metric", "target", "value") if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown or not ({"se", "n"} & set(header)):
        raise ConfigError(path, [Problem("header", ",".join(header)[:120], f"the columns {','.join(COLUMNS)} "
                                         "(group may be left out; se and/or n must be there)")], KIND)
    if len(rows) - 1 > MAX_OBSERVATIONS:
        raise ConfigError(path, [Problem("", f"{len(rows) - 1:,} rows", f"at most {MAX_OBSERVATIONS:,} observations")], KIND)
    col = {c: header.index(c) for c in header}
    problems: list[Problem] = []
    out: list[Observation] = []
    channels = scenario.channel_names
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            problems.append(Problem(f"line {line}", ",".join(row)[:80], f"{len(header)} comma-separated fields"))
            continue
        get = lambda c: row[col[c]].strip() if c in col else ""  # noqa: E731
        where = f"line {line}"
        tick = _number(get("tick"), "a whole tick number", f"{where}.tick", problems)
        if tick is not None and not (tick == int(tick) and 0 <= tick < scenario.ticks):
            problems.append(Problem(f"{where}.tick", get("tick"), f"a tick from 0 to {scenario.ticks - 1} (the scenario has {scenario.ticks})"))
            tick = None
        metric, target, group = get("metric"), get("target"), get("group")
        if metric not in METRICS:
            problems.append(Problem(f"{where}.metric", metric, f"one of {', '.join(METRICS)}"))
        elif metric == "channel_mean" and target not in channels:
            problems.append(Problem(f"{where}.target", target, f"a channel of the scenario ({', '.join(channels)})"))
        elif metric != "channel_mean" and target not in scenario.actions.labels:
            problems.append(Problem(f"{where}.target", target, f"an action of the scenario ({', '.join(scenario.actions.labels)})"))
        if group:
            if "=" not in group:
                problems.append(Problem(f"{where}.group", group, "attribute=category (or attribute=cat1|cat2), or empty for everyone"))
            else:
                found: list[Problem] = []
                mask = where_mask(pop, parse_group(group), f"{where}.group", found)
                problems.extend(found)
                if not found and not mask.any():
                    problems.append(Problem(f"{where}.group", group, "a group with at least one agent in the world"))
        value = _number(get("value"), "a number from 0 to 1", f"{where}.value", problems)
        if value is not None and not 0 <= value <= 1:
            problems.append(Problem(f"{where}.value", get("value"), "a number from 0 to 1"))
            value = None
        se = _number(get("se"), "a standard error > 0", f"{where}.se", problems) if get("se") else None
        if se is not None and not se > 0:
            problems.append(Problem(f"{where}.se", get("se"), "a standard error > 0"))
            se = None
        n = _number(get("n"), "a sample size >= 1", f"{where}.n", problems) if get("n") else None
        if n is not None and not n >= 1:
            problems.append(Problem(f"{where}.n", get("n"), "a sample size >= 1"))
            n = None
        if se is None and n is None and not (get("se") or get("n")):
            problems.append(Problem(f"{where}.se", "", "a standard error, or a sample size in n"))
        elif se is None and n is not None and metric == "channel_mean":
            problems.append(Problem(f"{where}.se", "", "a standard error (a channel mean's cannot be had from n alone)"))
        if tick is None or value is None or (se is None and n is None) or metric not in METRICS:
            continue
        if se is None:
            assert n is not None
            se = share_se(value, n)
        out.append(Observation(int(tick), metric, target, group, value, se))
    if problems:
        raise ConfigError(path, problems, KIND)
    counts = Counter((o.tick, o.metric, o.target, o.group) for o in out)
    dup = [k for k, c in counts.items() if c > 1]
    if dup:
        raise ConfigError(path, [Problem("rows", f"tick {k[0]}, {k[1]}({k[2]}) of {k[3] or 'everyone'}",
                                         "each (tick, metric, target, group) observed once") for k in dup], KIND)
    return out


def write_observed(path: str | Path, observations: list[Observation]) -> None:
    """Write `observations` as an observation file (with `se`; `n` left empty)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for o in observations:
            w.writerow([o.tick, o.metric, o.target, o.group, f"{o.value:.6f}", f"{o.se:.6f}", ""])


def group_weights(observations: list[Observation], pop) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The groups the observations name ("" is everyone), in order of first mention; (G, N) float64
    weights averaging over each group's agents; (G,) each group's size."""
    groups = list(dict.fromkeys(o.group for o in observations))
    masks = np.stack([where_mask(pop, parse_group(g)) for g in groups]).astype(np.float64)  # (G, N)
    sizes = masks.sum(1)  # (G,)
    return groups, masks / sizes[:, None], sizes
