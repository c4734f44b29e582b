"""The intervention language: typed edits of a scenario, a world, or what agents hear.

One frozen dataclass per kind of edit, each with a YAML form (a mapping with its `kind`) and a
compact form a user types (clauses separated by `;`):

| kind | YAML | compact |
|---|---|---|
| `set` | `{kind: set, event: 0, field: credibility, value: 0.5}` | `events[0].credibility=0.5` |
| `scale` | `{kind: scale, event: 0, field: credibility, factor: 0.5}` | `events[0].credibility*=0.5` |
| `move` | `{kind: move, event: 0, tick: 3}` | `events[0].tick=3` |
| `remove` | `{kind: remove, event: 0}` | `events[0]=removed` |
| `exposure` | `{kind: exposure, event: 0, fraction: 0.2}` (or `where`, or `followers_of`) | `events[0].exposure.fraction=0.2`, `events[0].exposure.where=region=south\\|west,age=18..30`, `events[0].exposure.followers_of=A\\|B` |
| `sever` | `{kind: sever, ties: [household, friend]}` | `sever=household,friend` |
| `messages` | `{kind: messages, edit: none}` (`shuffled` + `seed`, `opposite`, `strong` + `tie`, `sign`) | `messages=none`, `messages=shuffled:3`, `messages=opposite`, `messages=strong:household:-1` |
| `attributes` | `{kind: attributes, attribute: age, value: 30, where: {region: [south]}}` | `agents.age=30`, `agents[region=south].age=30` |

An event is named by its index among the base scenario's scheduled `events` (0-based), or by its
`source` (e.g. `events[State Department of Health]`) when that is unique. Every index refers to the
base scenario: edits are applied in order, and removed events are dropped last. Event fields set
are `valence`, `credibility` (numbers; `scale` multiplies them), `text`, `source`, `source_type`,
`channel` and `framing`; the edited scenario goes through the scenario's own checker, so a
credibility above 1 is refused with the scenario's message.

`sever` has one meaning: the ties of those types are removed from the world's graph, so they carry
nothing -- no message is shown along them (an agent hears only through the ties that remain), and
nothing that walks the graph uses them. Who follows a media outlet (`exposure.followers_of`) is not
a tie and is not severed. `messages` edits change the shown-neighbour table of every tick
(`tables.py`) and act where that table is replayed (`train.replay`, the planted truth).
`attributes` changes agents' attribute values (optionally of the agents matching `where`); the
persona text written when the world was built is kept.

Reading: `parse.py` (both forms); applying: `apply.py`; sweeps: `sweep.py`.
`apply(edits, scenario=..., world=...)` is the one entry point: it returns the edited scenario
(validated), the edited world (a copy; the input is not changed) and the perception edit (a
`TableEdit`, or None). A file written under interventions records them (`config.interventions`,
YAML), so it replays from its own file; `lsm info` shows them.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Literal, Sequence, Union

import yaml

from lsm.config import Checked, to_dict
from lsm.society.interventions import tables
from lsm.society.scenario import Range
from lsm.society.world.graph import EDGE_TYPES

NUMERIC_EVENT_FIELDS = ("valence", "credibility")
"""Event fields `set` takes a number for and `scale` multiplies."""
TEXT_EVENT_FIELDS = ("text", "source", "source_type", "channel", "framing")
"""Event fields `set` takes a text for (the categorical ones checked by the scenario)."""
EVENT_FIELDS = NUMERIC_EVENT_FIELDS + TEXT_EVENT_FIELDS
MESSAGE_EDITS = ("none", "shuffled", "opposite", "strong")
KIND = "intervention"
"""The `ConfigError` kind: "Invalid intervention <source>: ..."."""

EventRef = Union[int, str]
Where = dict[str, Union[list[str], Range]]


def _event_ref_problem(ref: Any) -> str | None:
    if isinstance(ref, int) and not isinstance(ref, bool):
        return None if ref >= 0 else "an event index (0 or more)"
    if isinstance(ref, str) and ref.strip() and not any(c in ref for c in "[];\n"):
        return None
    return "an event index or an event's source name"


# ----------------------------------------------------------------------------- the edits
@dataclass(frozen=True)
class SetEvent(Checked):
    """Set one field of a scheduled event."""

    event: EventRef
    field: str
    value: Union[float, str]
    kind: ClassVar[str] = "set"

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := _event_ref_problem(self.event):
            yield "event", self.event, bad
        if self.field not in EVENT_FIELDS:
            yield "field", self.field, f"an event field: one of {', '.join(EVENT_FIELDS)} (tick: kind move; exposure: kind exposure)"
        elif self.field in NUMERIC_EVENT_FIELDS and not isinstance(self.value, (int, float)):
            yield "value", self.value, f"a number ({self.field})"
        elif self.field in TEXT_EVENT_FIELDS and not isinstance(self.value, str):
            yield "value", self.value, f"a text ({self.field})"


@dataclass(frozen=True)
class ScaleEvent(Checked):
    """Multiply a numeric field of a scheduled event."""

    event: EventRef
    field: str
    factor: float
    kind: ClassVar[str] = "scale"

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := _event_ref_problem(self.event):
            yield "event", self.event, bad
        if self.field not in NUMERIC_EVENT_FIELDS:
            yield "field", self.field, f"a numeric event field: one of {', '.join(NUMERIC_EVENT_FIELDS)}"


@dataclass(frozen=True)
class MoveEvent(Checked):
    """Move a scheduled event to another tick."""

    event: EventRef
    tick: int
    kind: ClassVar[str] = "move"

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := _event_ref_problem(self.event):
            yield "event", self.event, bad
        if self.tick < 0:
            yield "tick", self.tick, "a tick (0 or more)"


@dataclass(frozen=True)
class RemoveEvent(Checked):
    """Remove a scheduled event."""

    event: EventRef
    kind: ClassVar[str] = "remove"

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := _event_ref_problem(self.event):
            yield "event", self.event, bad


@dataclass(frozen=True)
class SetExposure(Checked):
    """Change who sees a scheduled event: exactly one of its exposure rule's parts."""

    event: EventRef
    fraction: float | None = None
    """The share of the matching agents exposed, 0..1."""
    where: Where | None = None
    """The attribute filters (replacing the event's; `{}`: no filter)."""
    followers_of: list[str] | None = None
    """Only followers of these outlets (replacing the event's; `[]`: no such filter)."""
    kind: ClassVar[str] = "exposure"

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := _event_ref_problem(self.event):
            yield "event", self.event, bad
        given = [k for k in ("fraction", "where", "followers_of") if getattr(self, k) is not None]
        if len(given) != 1:
            yield "", given, "exactly one of fraction, where, followers_of (one exposure edit each)"
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            yield "fraction", self.fraction, "a share in [0, 1]"


@dataclass(frozen=True)
class SeverTies(Checked):
    """Remove every tie of these types from the world's graph (they carry nothing)."""

    ties: tuple[str, ...]
    kind: ClassVar[str] = "sever"

    def __post_init__(self) -> None:  # one spelling: each type once, in EDGE_TYPES order
        if all(t in EDGE_TYPES for t in self.ties):
            object.__setattr__(self, "ties", tuple(sorted(set(self.ties), key=EDGE_TYPES.index)))

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not self.ties:
            yield "ties", [], f"at least one tie type ({', '.join(EDGE_TYPES)})"
        for k, t in enumerate(self.ties):
            if t not in EDGE_TYPES:
                yield f"ties[{k}]", t, f"one of the tie types ({', '.join(EDGE_TYPES)})"


@dataclass(frozen=True)
class EditMessages(Checked):
    """Change what agents hear each tick (the shown-neighbour table; `tables.py`)."""

    edit: Literal["none", "shuffled", "opposite", "strong"]
    """`none`: nobody hears anyone; `shuffled`: random senders, same tie types; `opposite`: each
    sender replaced by the agent of the most opposite last stance; `strong`: the first shown
    neighbour of tie type `tie` replaced by the most positive (`sign` 1) or negative (-1) agent."""
    tie: str | None = None
    sign: int = 1
    seed: int = 0
    """`shuffled`: the seed of the random senders."""
    kind: ClassVar[str] = "messages"

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if self.edit == "strong":
            if self.tie not in EDGE_TYPES:
                yield "tie", self.tie, f"a tie type: one of {', '.join(EDGE_TYPES)}"
            if self.sign not in (1, -1):
                yield "sign", self.sign, "1 or -1"
        else:
            if self.tie is not None:
                yield "tie", self.tie, "no tie (only for edit: strong)"
            if self.sign != 1:
                yield "sign", self.sign, "no sign (only for edit: strong)"
        if self.edit != "shuffled" and self.seed != 0:
            yield "seed", self.seed, "no seed (only for edit: shuffled)"

    def table_edit(self) -> tables.TableEdit:
        if self.edit == "none":
            return tables.no_messages
        if self.edit == "shuffled":
            return tables.shuffled_senders(self.seed)
        if self.edit == "opposite":
            return tables.opposite_stance
        return tables.strong_neighbor(EDGE_TYPES.index(str(self.tie)), self.sign)


@dataclass(frozen=True)
class SetAttributes(Checked):
    """Set one attribute of every agent, or of the agents matching `where`."""

    attribute: str
    value: Union[float, str]
    """A category of a categorical attribute, a number of a numeric one (within its range)."""
    where: Where = field(default_factory=dict)
    kind: ClassVar[str] = "attributes"

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not self.attribute.replace("_", "").isalnum():
            yield "attribute", self.attribute, "an attribute name"


Edit = Union[SetEvent, ScaleEvent, MoveEvent, RemoveEvent, SetExposure, SeverTies, EditMessages, SetAttributes]
KINDS: dict[str, type] = {c.kind: c for c in (SetEvent, ScaleEvent, MoveEvent, RemoveEvent, SetExposure, SeverTies,
                                               EditMessages, SetAttributes)}
SCENARIO_KINDS = (SetEvent, ScaleEvent, MoveEvent, RemoveEvent, SetExposure)
WORLD_KINDS = (SeverTies, SetAttributes)


def edit_to_dict(e: Edit) -> dict[str, Any]:
    """The YAML form of one edit (fields left at None omitted)."""
    return {"kind": e.kind, **{k: v for k, v in to_dict(e).items() if v is not None}}


def _num(v: float) -> str:
    return str(int(v)) if isinstance(v, int) else repr(float(v))


def _where_text(where: dict, path: str) -> str:
    parts = []
    for attr, rule in where.items():
        if isinstance(rule, Range):
            parts.append(f"{attr}={'' if rule.min is None else _num(rule.min)}..{'' if rule.max is None else _num(rule.max)}")
        else:
            parts.append(f"{attr}={'|'.join(rule)}")
    words = [str(a) for a in where] + [c for r in where.values() if isinstance(r, list) for c in r]
    if any(ch in w for w in words for ch in ",|=[];") or any(w != w.strip() or not w for w in words):
        raise ValueError(f"{path}: these filters have no compact form (use the YAML form)")
    return ",".join(parts)


def edit_to_string(e: Edit) -> str:
    """The compact form of one edit (ValueError where a value cannot be written in it, e.g. a text with ';')."""
    ev = f"events[{e.event}]" if hasattr(e, "event") else ""
    if isinstance(e, SetEvent):
        out = f"{ev}.{e.field}={e.value if isinstance(e.value, str) else _num(e.value)}"
    elif isinstance(e, ScaleEvent):
        out = f"{ev}.{e.field}*={_num(e.factor)}"
    elif isinstance(e, MoveEvent):
        out = f"{ev}.tick={e.tick}"
    elif isinstance(e, RemoveEvent):
        out = f"{ev}=removed"
    elif isinstance(e, SetExposure):
        if e.fraction is not None:
            out = f"{ev}.exposure.fraction={_num(e.fraction)}"
        elif e.where is not None:
            out = f"{ev}.exposure.where={_where_text(e.where, ev)}"
        else:
            out = f"{ev}.exposure.followers_of={'|'.join(e.followers_of or [])}"
    elif isinstance(e, SeverTies):
        out = f"sever={','.join(e.ties)}"
    elif isinstance(e, EditMessages):
        out = "messages=" + {"none": "none", "opposite": "opposite", "shuffled": f"shuffled{':' + str(e.seed) if e.seed else ''}",
                             "strong": f"strong:{e.tie}:{e.sign:+d}"}[e.edit]
    else:
        sel = f"[{_where_text(e.where, 'agents')}]" if e.where else ""
        out = f"agents{sel}.{e.attribute}={e.value if isinstance(e.value, str) else _num(e.value)}"
    if ";" in out or "\n" in out or (isinstance(e, (SetEvent, SetAttributes)) and isinstance(e.value, str)
                                     and (e.value != e.value.strip() or not e.value or _looks_numeric(e.value))):
        raise ValueError(f"{out[:60]!r}: this edit has no compact form (use the YAML form)")
    return out


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- a list of edits
@dataclass(frozen=True)
class Interventions:
    """Edits applied in order (see the module docstring)."""

    edits: tuple[Edit, ...] = ()

    def __iter__(self) -> Iterator[Edit]:
        return iter(self.edits)

    def __len__(self) -> int:
        return len(self.edits)

    def __bool__(self) -> bool:
        return bool(self.edits)

    def __add__(self, other: "Interventions | Sequence[Edit]") -> "Interventions":
        return Interventions(self.edits + tuple(other))

    def to_list(self) -> list[dict[str, Any]]:
        return [edit_to_dict(e) for e in self.edits]

    def to_yaml(self) -> str:
        """What a file records (`config.interventions`): `interventions: [...]`."""
        return yaml.safe_dump({"interventions": self.to_list()}, sort_keys=False, allow_unicode=True)

    def __str__(self) -> str:
        return "; ".join(edit_to_string(e) for e in self.edits)

    def describe(self) -> str:
        """The compact form, or the YAML form flattened where an edit has no compact one."""
        try:
            return str(self)
        except ValueError:
            return yaml.safe_dump(self.to_list(), default_flow_style=True, width=10**6).strip()

    @property
    def slug(self) -> str:
        """A file-name-safe name (`e0-credibility-0.1__sever-friend`)."""
        parts = []
        for e in self.edits:
            ev = f"e{e.event}" if hasattr(e, "event") else ""
            if isinstance(e, SetEvent):
                parts.append(f"{ev}-{e.field}-{e.value if isinstance(e.value, str) else format(e.value, 'g')}")
            elif isinstance(e, ScaleEvent):
                parts.append(f"{ev}-{e.field}-x{e.factor:g}")
            elif isinstance(e, MoveEvent):
                parts.append(f"{ev}-tick-{e.tick}")
            elif isinstance(e, RemoveEvent):
                parts.append(f"{ev}-removed")
            elif isinstance(e, SetExposure):
                parts.append(f"{ev}-reach-{e.fraction:g}" if e.fraction is not None else
                             f"{ev}-exposure-{hashlib.sha256(repr(e).encode()).hexdigest()[:8]}")
            elif isinstance(e, SeverTies):
                parts.append("sever-" + "-".join(e.ties))
            elif isinstance(e, EditMessages):
                parts.append("messages-" + e.edit + (f"-{e.tie}{e.sign:+d}" if e.edit == "strong" else ""))
            else:
                parts.append(f"agents-{e.attribute}-{e.value}")
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", "__".join(parts) or "same")[:150]

    @property
    def touches_world(self) -> bool:
        return any(isinstance(e, WORLD_KINDS) for e in self.edits)

    @property
    def touches_scenario(self) -> bool:
        return any(isinstance(e, SCENARIO_KINDS) for e in self.edits)

    @property
    def touches_perception(self) -> bool:
        return any(isinstance(e, EditMessages) for e in self.edits)
