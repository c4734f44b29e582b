"""One teacher agent's turn: the prompt it sees, the answer schema, and answer validation.

The prompt (docs/design.md §4) holds the agent's persona, its memory (a running summary plus up to k
salient episodic memories), the events it is exposed to this tick and up to K messages its
neighbours broadcast last tick. The system message (scenario context and answer format) is
the same for every agent of a tick, so backends with prefix caching compute it once.

Two answer schemas:
- `full`: reasoning, a 0..10 rating per channel, message, stance, decision, memory, salience —
  everything generated and validated (backends without log-probabilities).
- `texts`: reasoning, message, stance, memory, salience are generated; the decision and the
  channel ratings are then read as distributions by `score_options` on continuations of the
  agent's own reasoning (`decision_prefix`, `rating_prefix`). Used when the backend exposes
  log-probabilities: the distributions are the distillation targets (scoring option texts beats
  letter choices for small models: docs/results.md#what-the-embedded-teacher-can-and-cannot-do).
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsm.data_gen.teacher.backends.base import Conversation
from lsm.society.scenario import Scenario

RATING_MAX = 10
STANCE_MAX = 5
TEXT_PATTERN = r"^[\s\S]*[A-Za-z]{2,}[\s\S]*$"
"""What every text of an answer must match (`re.search`): a word of two letters somewhere. It is
the schema's `pattern` for reasoning, message and memory, which the embedded decoder keeps
(`backends/constrained.py`); anchored and spanning the whole text, it means the same to
engines that match a JSON-schema pattern against the whole string."""
EDGE_WORDS = {"household": "someone you live with", "friend": "a friend", "professional": "a colleague",
              "weak_tie": "an acquaintance", "media": "an outlet you follow"}


def event_line(source: str, text: str) -> str:
    """How a prompt shows an event the agent saw: "Source: text" (the text alone without a source)."""
    return f"{source + ': ' if source else ''}{text}"


def relation_words(edge_type: str | None) -> str:
    """How a prompt names the tie to a shown neighbour (`None`: no tie in the graph)."""
    return EDGE_WORDS[edge_type] if edge_type is not None else "someone"


@dataclass
class TextLimits:
    reasoning: int = 160
    """Characters of private reasoning (constrained decoders turn this into a token cap)."""
    message: int = 100
    memory: int = 80


@dataclass
class Memory:
    """An agent's memory between ticks: a running summary and salient episodes."""

    history: list[str] = field(default_factory=list)
    """One short line per past tick (decision and stance), the running summary."""
    episodes: list[tuple[float, int, str]] = field(default_factory=list)
    """(salience, tick, text) of remembered moments."""

    def summary(self, keep: int = 4) -> str:
        if not self.history:
            return "This is the first time you face this."
        return "; ".join(self.history[-keep:]) + "."

    def salient(self, k: int) -> list[str]:
        top = sorted(self.episodes, key=lambda e: (-e[0], -e[1]))[:k]
        return [f"(tick {t + 1}) {text}" for _, t, text in sorted(top, key=lambda e: e[1])]

    def record_tick(self, sc: Scenario, tick: int, decision: str | None, stance: float = 0.0, memory: str = "",
                    salience: float = 0.0, capacity: int = 8) -> None:
        """The one place a tick enters the memory (the teacher writes it, `sensitivity` replays
        it): a summary line, and the salient memory if the agent answered (`decision` None: no answer)."""
        word = sc.tick_length.split()[-1]
        if decision is None:
            self.history.append(f"{word} {tick + 1}: no answer")
            return
        self.write(tick, f"{word} {tick + 1}: you chose {decision}, stance {stance:+.1f}", memory, salience, capacity)

    def write(self, tick: int, line: str, memory: str, salience: float, capacity: int) -> None:
        self.history.append(line)
        if memory.strip():
            self.episodes.append((float(salience), tick, memory.strip()))
            self.episodes = sorted(self.episodes, key=lambda e: (-e[0], -e[1]))[:capacity]

    def to_json(self) -> dict[str, Any]:
        return {"history": self.history, "episodes": [list(e) for e in self.episodes]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Memory":
        return cls(history=list(d["history"]), episodes=[(float(s), int(t), str(x)) for s, t, x in d["episodes"]])


# --------------------------------------------------------------------------- schemas
def decision_schema(sc: Scenario) -> dict[str, Any]:
    a = sc.actions
    if a.type == "categorical":
        return {"type": "string", "enum": a.labels}
    return {"type": "integer", "minimum": int(a.min), "maximum": int(a.max)}  # type: ignore[arg-type]


def answer_schema(sc: Scenario, mode: str, limits: TextLimits) -> dict[str, Any]:
    """JSON schema of an answer; property order is the order the model writes them."""
    props: dict[str, Any] = {"reasoning": {"type": "string", "maxLength": limits.reasoning, "pattern": TEXT_PATTERN}}
    if mode == "full":
        props["ratings"] = {
            "type": "object",
            "properties": {c: {"type": "integer", "minimum": 0, "maximum": RATING_MAX} for c in sc.channel_names},
            "required": sc.channel_names,
        }
        props["decision"] = decision_schema(sc)
    props["message"] = {"type": "string", "maxLength": limits.message, "pattern": TEXT_PATTERN}
    props["stance"] = {"type": "integer", "minimum": -STANCE_MAX, "maximum": STANCE_MAX}
    props["memory"] = {"type": "string", "maxLength": limits.memory, "pattern": TEXT_PATTERN}
    props["salience"] = {"type": "integer", "minimum": 0, "maximum": RATING_MAX}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


# --------------------------------------------------------------------------- prompts
def system_prompt(sc: Scenario, mode: str) -> str:
    channels = ", ".join(f"{c.name} ({c.description})" if c.description else c.name for c in sc.channel_list)
    fields = ['"reasoning": your private thoughts, one or two sentences']
    if mode == "full":
        fields.append(f'"ratings": 0-10 for each of {channels}')
        fields.append(f'"decision": {decision_help(sc)}')
    fields += ['"message": what you say to people you know, one sentence',
               f'"stance": -{STANCE_MAX} (strongly against) to {STANCE_MAX} (strongly for)',
               '"memory": one thing you want to remember', '"salience": 0-10, how much it matters to you']
    return (f"You play one person in a simulated society. {sc.context.strip()} "
            f"Each {sc.tick_length} you answer as that person with a JSON object: " + "; ".join(fields) + ".")


def decision_help(sc: Scenario) -> str:
    a = sc.actions
    if a.type == "categorical":
        return " or ".join(f'"{o.name}" ({o.description})' if o.description else f'"{o.name}"' for o in a.options)  # type: ignore[union-attr]
    return f"a whole number from {a.min:g} to {a.max:g}"


def user_prompt(sc: Scenario, tick: int, name: str, persona: str, memory: Memory, k_memories: int,
                events: list[str], messages: list[tuple[str, str, str]]) -> str:
    """messages: (neighbour name, relation word, message text)."""
    lines = [f"You are {persona}" if persona.startswith(name) else f"You are {name}, {persona}", f"It is {sc.tick_length.split()[-1]} {tick + 1}. Your story so far: {memory.summary()}"]
    salient = memory.salient(k_memories)
    if salient:
        lines.append("You remember: " + " ".join(salient))
    if events:
        lines.append("News you saw: " + " ".join(f'"{e}"' for e in events))
    if messages:
        lines.append("People you know said: " + " ".join(f'{who} ({rel}): "{text}"' for who, rel, text in messages))
    lines.append(f"{sc.question} Options: {decision_help(sc)}.")
    return "\n".join(lines)


def message_orders(k: int, m: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to `m` distinct orders of `k` shown messages, the shown order (the identity) first.

    Where k! <= m every order is returned once (the average over them is the exact order-free
    value); otherwise the identity and m - 1 distinct permutations drawn from `rng`. One message
    or none has one order."""
    identity = tuple(range(k))
    if k < 2 or m <= 1:
        return [identity]
    if math.factorial(k) <= m:
        return [identity] + [p for p in itertools.permutations(range(k)) if p != identity]
    out = [identity]
    seen = {identity}
    while len(out) < m:
        p = tuple(int(x) for x in rng.permutation(k))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


PLACEBO_SENTENCES = (
    "The bus was a few minutes late this morning.", "It rained most of the afternoon.",
    "I finally fixed the squeaky kitchen door.", "The library has moved its opening hours.",
    "We had soup and bread for dinner.", "The garden needs watering again.",
    "My cousin is repainting her living room.", "There is a new bakery on the corner.",
    "The football match went to extra time.", "I found my old board games in the attic.",
    "Traffic on the bridge was slow today.", "The neighbour's cat sleeps on our porch.",
    "I am reading a long book about ships.", "The store ran out of fresh apples.",
    "We walked along the river on Sunday.", "The power was out for an hour last night.",
)
"""Neutral, off-topic sentences placebo messages are made of (no scenario, no stance)."""


def placebo_message(length: int, rng: np.random.Generator) -> str:
    """A neutral, off-topic message of exactly `length` characters (the length of the real
    message it stands in for): seeded sentences from `PLACEBO_SENTENCES`, cut to length."""
    if length <= 0:
        return ""
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < length + 1:
        parts.append(PLACEBO_SENTENCES[int(rng.integers(len(PLACEBO_SENTENCES)))])
    return " ".join(parts)[:length]


def conversation(system: str, user: str) -> Conversation:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def decision_prefix(reasoning: str) -> str:
    """The assistant's answer up to the decision value (the continuation that is scored)."""
    return '{"reasoning": ' + json.dumps(reasoning) + ', "decision": "'


def bare_decision_prefix(numeric: bool = False) -> str:
    """The answer prefix up to the decision without any reasoning: scoring a changed prompt
    (`lsm sensitivity`, paired contrasts), whose reasoning would be the unchanged prompt's."""
    return '{"decision": ' if numeric else '{"decision": "'


def numeric_decision_prefix(reasoning: str) -> str:
    return '{"reasoning": ' + json.dumps(reasoning) + ', "decision": '


def rating_prefix(reasoning: str, channel: str) -> str:
    return '{"reasoning": ' + json.dumps(reasoning) + ', "ratings": {"' + channel + '": '


def decision_options(sc: Scenario) -> list[str]:
    """Continuations scored for the decision: option names closed by the quote, or every
    integer of a numeric range closed by the comma (so "1" and "10" are distinct)."""
    a = sc.actions
    if a.type == "categorical":
        return [f'{o}"' for o in a.labels]
    return [f"{v}," for v in range(int(a.min), int(a.max) + 1)]  # type: ignore[arg-type]


def options_to_actions(sc: Scenario, q: np.ndarray) -> np.ndarray:
    """(A,) a distribution over `decision_options` as one over the actions: categorical options
    are the actions; numeric ones (every integer min..max) are summed into their bins."""
    a = sc.actions
    if a.type == "categorical":
        return q
    return np.bincount(a.bin_of(np.arange(int(a.min), int(a.max) + 1)), weights=q, minlength=a.n)


RATING_OPTIONS = [f"{v}," for v in range(RATING_MAX + 1)]


# --------------------------------------------------------------------------- validation
class InvalidAnswer(ValueError):
    pass


def extract_json(text: str) -> dict[str, Any]:
    """Parse an answer leniently: the first balanced {...}, code fences stripped, trailing commas
    removed. Raises `InvalidAnswer` with what is wrong."""
    s = text.strip()
    s = re.sub(r"^```(?:json)?|```$", "", s.strip(), flags=re.MULTILINE).strip()
    start = s.find("{")
    if start < 0:
        raise InvalidAnswer("the answer contains no JSON object")
    depth, in_str, esc, end = 0, False, False, -1
    for i in range(start, len(s)):
        c = s[i]
        if in_str:
            esc = (c == "\\") and not esc
            if c == '"' and not esc:
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        raise InvalidAnswer("the JSON object is not closed (the answer was cut off or malformed)")
    body = re.sub(r",\s*([}\]])", r"\1", s[start : end + 1])
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as err:
        raise InvalidAnswer(f"the JSON does not parse: {err.msg} at character {err.pos}") from None
    if not isinstance(obj, dict):
        raise InvalidAnswer("the answer is not a JSON object")
    return obj


def _int_in(obj: dict[str, Any], key: str, lo: int, hi: int, where: str = "") -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            v = int(v)
        else:
            raise InvalidAnswer(f"'{where}{key}' = {v!r}: expected a whole number from {lo} to {hi}")
    if not lo <= int(v) <= hi:
        raise InvalidAnswer(f"'{where}{key}' = {v!r}: expected a whole number from {lo} to {hi}")
    return int(v)


def _text(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise InvalidAnswer(f"'{key}' = {v!r}: expected a text")
    if not re.search(TEXT_PATTERN, v):
        raise InvalidAnswer(f"'{key}' = {v!r}: expected words, got an empty or meaningless text")
    return v.strip()


@dataclass
class Answer:
    reasoning: str
    message: str
    stance: float
    """-1..1"""
    memory: str
    salience: float
    """0..1"""
    ratings: list[float] | None = None
    """0..1 per channel (full mode)."""
    decision: int | None = None
    """action index (full mode)."""
    decision_value: float | None = None
    """numeric actions: the number given (full mode)."""


def validate(obj: dict[str, Any], sc: Scenario, mode: str) -> Answer:
    """Check an answer object against the schema, the ranges and the action space."""
    missing = [k for k in ("reasoning", "message", "stance", "memory", "salience") + (("ratings", "decision") if mode == "full" else ()) if k not in obj]
    if missing:
        raise InvalidAnswer(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}")
    ans = Answer(
        reasoning=_text(obj, "reasoning"), message=_text(obj, "message"),
        stance=_int_in(obj, "stance", -STANCE_MAX, STANCE_MAX) / STANCE_MAX,
        memory=_text(obj, "memory"), salience=_int_in(obj, "salience", 0, RATING_MAX) / RATING_MAX,
    )
    if mode == "full":
        ratings = obj["ratings"]
        if not isinstance(ratings, dict):
            raise InvalidAnswer(f"'ratings' = {ratings!r}: expected an object with one 0-10 rating per channel")
        lacking = [c for c in sc.channel_names if c not in ratings]
        if lacking:
            raise InvalidAnswer(f"'ratings' lacks {', '.join(lacking)}")
        ans.ratings = [_int_in(ratings, c, 0, RATING_MAX, "ratings.") / RATING_MAX for c in sc.channel_names]
        a = sc.actions
        if a.type == "categorical":
            d = obj["decision"]
            names = [n.lower() for n in a.labels]
            if not isinstance(d, str) or d.strip().lower() not in names:
                raise InvalidAnswer(f"'decision' = {d!r}: expected one of {', '.join(a.labels)}")
            ans.decision = names.index(d.strip().lower())
        else:
            v = _int_in(obj, "decision", int(a.min), int(a.max))  # type: ignore[arg-type]
            ans.decision_value = float(v)
            ans.decision = int(a.bin_of(np.array([v]))[0])
    return ans


def repair_prompt(error: str) -> str:
    return f"That answer is invalid: {error}. Reply again with only the corrected JSON object."


def extraction_conversation(bad_text: str, schema: dict[str, Any]) -> Conversation:
    keys = ", ".join(schema["properties"])
    return [
        {"role": "system", "content": f"You convert text into a JSON object with the keys {keys}."},
        {"role": "user", "content": f"Text: {bad_text[:1200]}\nWrite the JSON object."},
    ]
