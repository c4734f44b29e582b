"""Persona texts and names from identity attributes (column-wise, fast at 10^6 agents).

Known attribute names get natural phrases; any other attribute appears as "attr: value", so a
population YAML with new attributes still yields complete personas. LLM-written backstories
(a meta-prompt over the same attributes) are added by the teacher package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from lsm.society.world.population import Population

FEMALE = ["Maria", "Linda", "Aisha", "Jennifer", "Rosa", "Emily", "Keisha", "Susan", "Mei", "Patricia",
          "Fatima", "Laura", "Grace", "Carmen", "Hannah", "Olivia", "Denise", "Priya", "Ruth", "Ana"]
MALE = ["James", "Jose", "Michael", "DeShawn", "Robert", "Wei", "David", "Carlos", "John", "Ahmed",
        "Thomas", "Kevin", "Luis", "Daniel", "Raj", "Paul", "Marcus", "Steven", "Omar", "Brian"]
NEUTRAL = ["Alex", "Jordan", "Taylor", "Sam", "Casey", "Riley", "Morgan", "Jamie", "Robin", "Avery"]
SURNAME_INITIALS = list("ABCDEFGHJKLMNOPRSTVW")

TRAITS = {  # attribute: (phrase when high, phrase when low); thresholds at 1/3 and 2/3 of the range
    "openness": ("curious and open to new ideas", "prefers the familiar"),
    "conscientiousness": ("organised and dependable", "spontaneous and a little careless"),
    "extraversion": ("outgoing and talkative", "reserved"),
    "agreeableness": ("warm and cooperative", "blunt and sceptical of others"),
    "neuroticism": ("anxious and easily worried", "calm and emotionally steady"),
}


def make_names(categorical: dict[str, np.ndarray], categories: dict[str, list[str]], rng: np.random.Generator) -> list[str]:
    n = len(next(iter(categorical.values()))) if categorical else 0
    pick = rng.integers(0, 1 << 30, size=n)
    initial = np.asarray(SURNAME_INITIALS, dtype=object)[pick % len(SURNAME_INITIALS)]
    first = np.asarray(NEUTRAL, dtype=object)[pick % len(NEUTRAL)]
    if "gender" in categorical:
        labels = np.asarray(categories["gender"], dtype=object)[categorical["gender"]]
        first = np.where(labels == "female", np.asarray(FEMALE, dtype=object)[pick % len(FEMALE)], first)
        first = np.where(labels == "male", np.asarray(MALE, dtype=object)[pick % len(MALE)], first)
    return [f"{f} {s}." for f, s in zip(first, initial)]


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _readable(label: str) -> str:
    return label.replace("_", " ")


def _phrases(pop: "Population") -> list[np.ndarray]:
    """One object array of phrase fragments [N] per attribute, in persona order."""
    cols: list[np.ndarray] = []
    used: set[str] = set()

    def cat(attr: str, fmt: str) -> None:
        if attr in pop.categorical:
            table = np.asarray([fmt.format(_readable(c)) for c in pop.categories[attr]], dtype=object)
            cols.append(table[pop.categorical[attr]])
            used.add(attr)

    if "age" in pop.numeric:
        cols.append(np.char.add("aged ", pop.numeric["age"].astype(int).astype(str)).astype(object))
        used.add("age")
    cat("gender", "{}")
    if "occupation" in pop.categorical:
        special = {"retired": "retired", "unemployed": "unemployed", "student": "a student"}
        table = np.asarray([special.get(c, f"works as {_article(_readable(c))}") for c in pop.categories["occupation"]], dtype=object)
        cols.append(table[pop.categorical["occupation"]])
        used.add("occupation")
    cat("area", "lives in a {} area")
    cat("region", "in the {}")
    cat("education", "education: {}")
    if "income" in pop.numeric:
        rounded = (np.round(pop.numeric["income"] / 1000) * 1000).astype(np.int64)
        cols.append(np.asarray([f"household income about ${v:,}" for v in rounded], dtype=object))
        used.add("income")
    cat("ideology", "politically {}")
    cat("party_id", "identifies as {}")
    cat("party", "party: {}")
    cat("vote_1996", "voted {} in 1996")
    cat("media_diet", "gets news mostly from {}")
    cat("religiosity", "religion matters {}")
    if "tv_news_days" in pop.numeric:
        days = pop.numeric["tv_news_days"].astype(int).astype(str)
        cols.append(np.char.add(np.char.add("watches TV news ", days), " days a week").astype(object))
        used.add("tv_news_days")
    for attr, (high, low) in TRAITS.items():
        if attr in pop.numeric:
            lo, hi = pop.numeric_range[attr]
            x = (pop.numeric[attr] - lo) / (hi - lo)
            cols.append(np.where(x > 2 / 3, high, np.where(x < 1 / 3, low, "")).astype(object))
            used.add(attr)
    for attr in pop.categorical:
        if attr not in used:
            cat(attr, f"{_readable(attr)}: {{}}")
    for attr, values in pop.numeric.items():
        if attr not in used:
            cols.append(np.asarray([f"{_readable(attr)}: {v:g}" for v in values], dtype=object))
    return cols


def make_personas(pop: "Population") -> list[str]:
    """"Maria G., aged 34, female, works as nurse, ...": one line per agent."""
    cols = _phrases(pop)
    out = []
    for name, parts in zip(pop.names, zip(*cols) if cols else [()] * pop.n):
        out.append(name + ", " + ", ".join(p for p in parts if p) + ".")
    return out
