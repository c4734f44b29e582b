"""Groups of agents named by attribute filters, and the logit offsets a scenario gives them.

A filter (`where`) maps attributes to allowed values: a categorical attribute to a list of its
categories, a numeric one to a `Range`. It is the one rule behind an event's `exposure.where`,
an intervention's `agents[...]`, a scenario's `offsets` and `lsm calibrate`'s groups.

Notation: N agents | A actions.
"""
from __future__ import annotations

import numpy as np

from lsm.config import Problem, join, to_dict
from lsm.society.scenario import Range, Scenario, ScenarioError


def where_mask(pop, where: dict, path: str = "where", problems: list[Problem] | None = None) -> np.ndarray:
    """(N,) bool: the agents of `pop` matching every filter of `where`. A filter naming an
    attribute or category the population lacks matches nobody and, with `problems`, adds a
    `Problem` at `path` (else raises ValueError)."""
    found: list[Problem] = []
    mask = np.ones(pop.n, dtype=bool)
    for attr, rule in where.items():
        if attr in pop.categorical:
            if isinstance(rule, Range):
                found.append(Problem(join(path, attr), to_dict(rule), f"categories of '{attr}' ({', '.join(pop.categories[attr])})"))
                mask[:] = False
                continue
            bad = [c for c in rule if c not in pop.categories[attr]]
            if bad:
                found.append(Problem(join(path, attr), bad[0], f"a category of '{attr}' ({', '.join(pop.categories[attr])})"))
                mask[:] = False
                continue
            mask &= np.isin(pop.categorical[attr], [pop.categories[attr].index(c) for c in rule])
        elif attr in pop.numeric:
            if not isinstance(rule, Range):
                found.append(Problem(join(path, attr), rule, f"a range MIN..MAX ('{attr}' is numeric)"))
                mask[:] = False
                continue
            mask &= rule.mask(pop.numeric[attr])
        else:
            found.append(Problem(join(path, attr), attr, f"an attribute of the world's population ({', '.join(pop.attributes)})"))
            mask[:] = False
    if found and problems is None:
        raise ValueError("; ".join(str(p) for p in found))
    if problems is not None:
        problems.extend(found)
    return mask


def logit_offsets(scenario: Scenario, pop) -> np.ndarray | None:
    """(N, A) float32: what the scenario's `offsets` add to each agent's decision logits (their
    sum where several apply), or None where it has none. A group the world lacks is a `ScenarioError`."""
    if not scenario.offsets:
        return None
    out = np.zeros((pop.n, scenario.actions.n), dtype=np.float32)
    problems: list[Problem] = []
    for i, off in enumerate(scenario.offsets):
        out[where_mask(pop, off.where, f"offsets[{i}].where", problems), scenario.actions.labels.index(off.action)] += off.logit
    if problems:
        raise ScenarioError(scenario.name, problems, "scenario (for this world)")
    return out
