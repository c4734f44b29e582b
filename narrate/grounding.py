"""Grounding check of a narrative against the agent's record.

Every tick, decision and number the text names must match the record:
- **ticks**: "tick 3", "round 3", "week 3" must be ticks of the record (the narrated range);
- **decisions**: a decision applied to a person or a view ("I decided to vaccinate Ann B.",
  "... to refuse my own view") is flagged; in a sentence that cites exactly one tick, an action
  it names (its label or an inflection: vaccinate / vaccinated / vaccinating) is *asserted* unless a negation ("not",
  "didn't", "never", "no longer", "instead of", "rather than", "without") comes before it in
  the same clause (clauses end at , ; : and at because / but / so / and / while / although),
  in which case it is *denied*. Asserting another action than the decision taken at that tick
  is flagged, and so is denying the decision taken without asserting it elsewhere in the
  sentence ("In tick 2, I did not vaccinate" when the agent vaccinated);
- **numbers**: every other number must be one the record holds: a tick, a probability as a
  percentage (±1) or a fraction (±0.01), a channel, stance, salience or an event's credibility
  on the 0–1 (±0.01), 0–10 (±0.5) or 0–100 (±1) scale, an attention weight, a count of events
  or neighbours, a number stated in an event the agent saw or in its recorded reasoning or
  memory (teacher traces), or an identity value.
Numbers written as words are not checked; neither is free prose. What is checked is what a
reader would take as a fact of the simulation.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

TICK_RX = re.compile(r"\b(?:tick|round|week)s?\s*#?\s*(\d+)", re.IGNORECASE)
NUMBER_RX = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(\s*%)?")
NEGATION_RX = re.compile(r"\b(?:not|never|no longer|instead of|rather than|without)\b|n't\b", re.IGNORECASE)
CLAUSE_RX = re.compile(r"[,;:()]|\b(?:because|but|so|and|while|although|though|who|whose)\b", re.IGNORECASE)
QUOTE_RX = re.compile(r'"[^"]*"|“[^”]*”')
OTHERS_RX = re.compile(r"^\s*(?:he|she|they|it|her|his|their|everyone|others?|people|most|many)\b", re.IGNORECASE)
CONNECTIVE_RX = re.compile(r"^\s*(?:(?:because|but|so|and|while|although|though|after|since|as)\b\s*)+", re.IGNORECASE)
SENTENCE_RX = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class GroundingIssue:
    kind: str
    """tick, decision or number."""
    sentence: str
    detail: str


def action_forms(label: str) -> list[str]:
    base = label.lower().replace("_", " ")
    stem = base[:-1] if base.endswith("e") else base
    return sorted({base, base + "s", base + "d" if base.endswith("e") else base + "ed", stem + "ing"}, key=len, reverse=True)


def allowed_numbers(record) -> list[tuple[float, float]]:
    """(value, tolerance) pairs a narrative may cite."""
    vals: list[tuple[float, float]] = [(10, 0), (100, 0)]  # the scales themselves ("6 out of 10")
    for t in record.ticks:
        vals.append((t.tick, 0))
        for p in t.decision_probs.values():
            vals += [(p * 100, 1.0), (p, 0.01)]
        for v in [*t.channels.values(), t.salience, abs(t.stance)]:
            vals += [(v, 0.01), (v * 10, 0.5), (v * 100, 1.0)]
        vals += [(len(t.events), 0), (len([a for a in t.attention if a["tie"] != "self"]), 0)]
        for text in [*t.events, t.reasoning, t.memory_text]:  # numbers the events, the recorded reasoning and memory state
            vals += [(float(x), 0) for x in re.findall(r"\d+(?:\.\d+)?", text)]
        for _, cred in t.event_sources:
            vals += [(cred, 0.01), (cred * 10, 0.5), (cred * 100, 1.0)]
        weights = [a["weight"] for a in t.attention if a["weight"] is not None]  # a teacher trace has none
        vals += [(w * 100, 1.0) for w in weights] + [(w, 0.01) for w in weights]
    for v in record.identity.values():
        if isinstance(v, (int, float)):
            vals += [(float(v), max(0.5, abs(float(v)) * 0.01))]
    for label in record.actions:  # numbers inside action labels ("20-30")
        vals += [(float(x), 0) for x in re.findall(r"\d+(?:\.\d+)?", label)]
    return vals


def _clauses(sentence: str) -> list[str]:
    """The sentence cut at `CLAUSE_RX`, each clause keeping the word that opens it ("who had ...")."""
    out, start = [], 0
    for m in CLAUSE_RX.finditer(sentence):
        out.append(sentence[start:m.start()])
        start = m.start() if m.group(0)[0].isalpha() else m.end()
    return out + [sentence[start:]]


def _mentions(sentence: str, forms: dict[str, list[str]], others: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(asserted, denied) action labels the agent states of itself in a sentence: a mention after a
    negation in its clause is denied; quotations and clauses about someone else (after "who", or
    opening with a pronoun or a name in `others`) are not the agent's own decision."""
    asserted: list[str] = []
    denied: list[str] = []
    for clause in _clauses(QUOTE_RX.sub(" ", sentence)):
        subject = CONNECTIVE_RX.sub("", clause)
        if clause.lstrip().lower().startswith(("who", "whose")) or OTHERS_RX.search(subject) or \
                any(re.match(rf"\s*{re.escape(o)}\b", subject) for o in others):
            continue
        negation = NEGATION_RX.search(clause)
        for label, fs in forms.items():
            for f in fs:
                for m in re.finditer(rf"\b{re.escape(f)}\b", clause, re.IGNORECASE):
                    side = denied if negation and negation.start() < m.start() else asserted
                    if label not in side:
                        side.append(label)
    return asserted, denied


def check_grounding(text: str, record) -> list[GroundingIssue]:
    issues: list[GroundingIssue] = []
    ticks = {t.tick: t for t in record.ticks}
    allowed = allowed_numbers(record)
    forms = {label: action_forms(label) for label in record.actions}
    others = sorted({n for t in record.ticks for a in t.attention if a["tie"] != "self"
                     for n in (a["name"], a["name"].split()[0])}, key=len, reverse=True)
    for sentence in (s.strip() for s in SENTENCE_RX.split(text) if s.strip()):
        cited = [int(m.group(1)) for m in TICK_RX.finditer(sentence)]
        for t in cited:
            if t not in ticks:
                issues.append(GroundingIssue("tick", sentence, f"tick {t} is not in the record (ticks {sorted(ticks)})"))
        in_record = [t for t in set(cited) if t in ticks]
        if len(in_record) == 1:
            asserted, denied = _mentions(sentence, forms, others)
            t, actual = in_record[0], ticks[in_record[0]].decision
            if asserted and actual not in asserted:
                issues.append(GroundingIssue("decision", sentence,
                                             f"names {', '.join(asserted)} at tick {t}, where the decision was {actual}"))
            elif actual in denied and actual not in asserted:
                issues.append(GroundingIssue("decision", sentence, f"denies {actual} at tick {t}, where it was the decision"))
        for label, fs in forms.items():  # "I decided to vaccinate James A." / "... to wait my own view"
            for f in fs:
                m = re.search(rf"\b{re.escape(f)}\s+({'|'.join(map(re.escape, others))}{'|' if others else ''}"
                              rf"my (?:own |earlier )?views?|him|her|myself)\b", QUOTE_RX.sub(" ", sentence), re.IGNORECASE)
                if m:
                    issues.append(GroundingIssue("decision", sentence, f"applies {label} to {m.group(1)!r}, which a decision is not"))
                    break
        tick_spans = [m.span(1) for m in TICK_RX.finditer(sentence)]
        for m in NUMBER_RX.finditer(sentence):
            if any(a <= m.start(1) < b for a, b in tick_spans):
                continue
            v = float(m.group(1))
            if not any(abs(v - a) <= tol + 1e-9 for a, tol in allowed):
                issues.append(GroundingIssue("number", sentence, f"{m.group(0).strip()} is not a value of the record"))
    return issues
