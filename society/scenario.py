"""Scenario files: what happens to the population, tick by tick, and what agents decide.

A scenario YAML holds `ticks`, `tick_length`, a free-text `context`, the decision `question`,
the `actions` (categorical options, or a numeric range cut into bins), the anchored
`channels` (default: the 8 of docs/design.md §3), scheduled `events`, and endogenous `triggers` that
inject an event at the next tick when a condition on the population's state holds. Loading
validates everything and raises one `ScenarioError` naming the file, each bad field, its value
and what was expected. `dynamics.py` runs the schedule (shared by teacher and student).
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, get_args

import numpy as np

from lsm.config import Checked, ConfigError, Problem, from_dict, load_config
from lsm.limits import (
    MAX_CHANNELS,
    MAX_CONTEXT_CHARS,
    MAX_EVENT_TEXT_CHARS,
    MAX_LABEL_CHARS,
    MAX_OPTIONS,
    MAX_QUESTION_CHARS,
    MAX_SCHEDULED_EVENTS,
    MAX_SCHEDULED_PER_TICK,
    MAX_TICKS,
    MAX_TRIGGERS,
    label_problem,
    name_problem,
)

SourceType = Literal["government", "media", "scientist", "corporation", "influencer", "peer", "ngo", "religious_leader", "other"]
MediaChannel = Literal["tv", "newspaper", "radio", "social_media", "online_news", "word_of_mouth", "official_letter", "billboard", "email", "other"]
Framing = Literal["gain", "loss", "fear", "hope", "neutral", "moral", "social_norm", "economic"]
SOURCE_TYPES: tuple[str, ...] = get_args(SourceType)
CHANNELS: tuple[str, ...] = get_args(MediaChannel)
FRAMINGS: tuple[str, ...] = get_args(Framing)
EVENT_VOCABS: tuple[tuple[str, ...], ...] = (SOURCE_TYPES, CHANNELS, FRAMINGS)
"""The event's categorical features in the order the student encodes them (source_type, channel, framing)."""

DEFAULT_CHANNELS: list[tuple[str, str]] = [
    ("trust_institutions", "how much you trust government, health and other official institutions on this issue"),
    ("trust_peers", "how much you trust what people around you say about it"),
    ("perceived_fairness", "how fair the situation or policy feels to you and people like you"),
    ("social_proof", "how strongly you see people around you doing it"),
    ("perceived_risk", "how risky or threatening the situation feels to you"),
    ("self_efficacy", "how able you feel to act on your decision"),
    ("identity_alignment", "how well the choice fits who you are and your group"),
    ("economic_concern", "how worried you are about money because of it"),
]
RATING_LEVELS = 11
"""Teacher rates each channel 0..10 (11 levels); stored normalised to 0..1."""


class ScenarioError(ConfigError):
    """A scenario file is malformed, or does not fit the world it is run on."""


# --------------------------------------------------------------------------- schema
@dataclass
class ActionOption:
    name: str
    """Short identifier (the label the teacher scores), e.g. `vaccinate`."""
    description: str = ""
    """What choosing it means, shown to the agent."""
    text_limits: ClassVar[dict[str, int]] = {"description": MAX_LABEL_CHARS}


@dataclass
class ActionSpace(Checked):
    type: Literal["categorical", "numeric"]
    options: list[ActionOption] | None = None
    """categorical: the options, in order."""
    min: float | None = None
    """numeric: lowest allowed number."""
    max: float | None = None
    """numeric: highest allowed number."""
    bins: int | None = None
    """numeric: equal-width bins over [min, max] (the decision distribution's support)."""
    integer: bool = True
    """numeric: answers are whole numbers."""
    unit: str = ""
    text_limits: ClassVar[dict[str, int]] = {"unit": MAX_LABEL_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if self.type == "categorical":
            if not self.options or len(self.options) < 2:
                yield "options", self.options, "at least two options"
            elif len(self.options) > MAX_OPTIONS:
                yield "options", f"{len(self.options)} options", f"at most {MAX_OPTIONS} options"
            else:
                names = [o.name for o in self.options]
                for i, name in enumerate(names):
                    if not name or not name.replace("_", "").replace("-", "").isalnum() or not name.isascii() \
                            or len(name) > 64:
                        yield f"options[{i}].name", name, "a short identifier (1 to 64 ASCII letters, digits, _ or -)"
                    if names.index(name) != i:
                        yield f"options[{i}].name", name, "a name not used by another option"
            for f in ("min", "max", "bins"):
                if getattr(self, f) is not None:
                    yield f, getattr(self, f), "no numeric settings on a categorical action space"
        else:
            if self.options:
                yield "options", [o.name for o in self.options], "no options on a numeric action space (use min, max, bins)"
            if self.min is None or self.max is None:
                yield "min" if self.min is None else "max", None, "numeric bounds `min` and `max`"
            elif self.min >= self.max:
                yield "max", self.max, f"a number greater than min ({self.min})"
            if self.bins is None or not 2 <= self.bins <= 101:
                yield "bins", self.bins, "a number of bins between 2 and 101"

    @property
    def n(self) -> int:
        """A: size of the decision distribution."""
        return len(self.options) if self.type == "categorical" else int(self.bins)  # type: ignore[arg-type]

    @property
    def bin_edges(self) -> np.ndarray:
        return np.linspace(float(self.min), float(self.max), int(self.bins) + 1)  # type: ignore[arg-type]

    @property
    def labels(self) -> list[str]:
        """One label per decision index: option names, or bin ranges like `0-10`."""
        if self.type == "categorical":
            return [o.name for o in self.options]  # type: ignore[union-attr]
        e = self.bin_edges
        return [f"{e[k]:g}-{e[k + 1]:g}" for k in range(len(e) - 1)]

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        """numeric: bin index of each reported number (max falls in the last bin)."""
        k = np.searchsorted(self.bin_edges, np.asarray(values, dtype=np.float64), side="right") - 1
        return np.clip(k, 0, self.n - 1).astype(np.int16)

    @property
    def bin_centers(self) -> np.ndarray:
        e = self.bin_edges
        return (e[:-1] + e[1:]) / 2

    def index(self, name: str) -> int:
        return self.labels.index(name)


@dataclass
class Channel(Checked):
    name: str
    description: str = ""
    text_limits: ClassVar[dict[str, int]] = {"description": MAX_LABEL_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not self.name.replace("_", "").isalnum() or not self.name.isascii() or len(self.name) > 64:
            yield "name", self.name, "a short identifier (1 to 64 ASCII letters, digits or _)"


@dataclass
class Range(Checked):
    min: float | None = None
    max: float | None = None

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if self.min is None and self.max is None:
            yield "", {}, "`min` and/or `max`"
        elif self.min is not None and self.max is not None and self.min > self.max:
            yield "max", self.max, f"a number >= min ({self.min})"

    def mask(self, values: np.ndarray) -> np.ndarray:
        """Bool, shaped like `values`: which lie in min..max (an absent bound does not limit)."""
        inside = np.ones(np.shape(values), dtype=bool)
        if self.min is not None:
            inside &= values >= self.min
        if self.max is not None:
            inside &= values <= self.max
        return inside


def where_problems(where: dict[str, list[str] | Range]) -> Iterable[tuple[str, Any, str]]:
    """The problems of an attribute filter's names and categories (an event's `exposure.where`, a
    scenario's `offsets[].where`); whether the world has them is `check_against_world`'s."""
    for attr, rule in where.items():
        if bad := name_problem(attr):
            yield f"where.{attr}", attr, bad
        for j, cat in enumerate(rule if isinstance(rule, list) else []):
            if bad := label_problem(cat):
                yield f"where.{attr}[{j}]", cat, bad


@dataclass
class Exposure(Checked):
    """Who sees an event. All given filters must hold; then a seeded `fraction` of them."""

    fraction: float = 1.0
    """Share of the matching agents exposed (drawn with the run's seed)."""
    where: dict[str, list[str] | Range] = field(default_factory=dict)
    """Attribute filters: a categorical -> allowed categories; a numeric -> {min, max}."""
    followers_of: list[str] = field(default_factory=list)
    """Only followers of these media outlets (names from the world's graph)."""

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not 0 <= self.fraction <= 1:
            yield "fraction", self.fraction, "a share in [0, 1]"
        yield from where_problems(self.where)
        for j, outlet in enumerate(self.followers_of):
            if bad := label_problem(outlet):
                yield f"followers_of[{j}]", outlet, bad


def event_feature(lo: float, hi: float, default: float | None = None) -> Any:
    """Declares a numeric event feature: a float field of `Event` in [lo, hi] (checked on load)
    that traces store as an `events/` column and the student reads (`EVENT_FEATURES`). Adding
    one here is all the store, the student's features and its input width need; a checkpoint
    records the features it was trained on and is refused by code with others. With a `default`
    (a new feature, declared after the fields with defaults), scenario files may omit it and
    traces written before it existed read it as that default."""
    meta = {"event_feature": (lo, hi)}
    return field(metadata=meta) if default is None else field(default=default, metadata=meta)


@dataclass
class Event(Checked):
    """Information reaching (part of) the population at one tick."""

    text: str
    """What the agent sees (may use {placeholders} when emitted by a trigger)."""
    source_type: SourceType
    channel: MediaChannel
    framing: Framing
    valence: float = event_feature(-1, 1)
    """-1 (strongly against the target behaviour) .. +1 (strongly for)."""
    credibility: float = event_feature(0, 1)
    """0 .. 1: how credible the source is presented as."""
    tick: int | None = None
    """When it happens (0-based). Omitted for events emitted by a trigger."""
    source: str = ""
    """Named source, e.g. 'State Health Department'."""
    exposure: Exposure = field(default_factory=Exposure)
    text_limits: ClassVar[dict[str, int]] = {"text": MAX_EVENT_TEXT_CHARS, "source": MAX_LABEL_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        for name, (lo, hi) in EVENT_FEATURE_RANGES.items():
            if not lo <= getattr(self, name) <= hi:
                yield name, getattr(self, name), f"a number between {lo:g} and {hi:g}"
        if not self.text.strip():
            yield "text", self.text, "a non-empty text"


EVENT_FEATURE_RANGES: dict[str, tuple[float, float]] = {f.name: f.metadata["event_feature"] for f in fields(Event)
                                                       if "event_feature" in f.metadata}
EVENT_FEATURES: tuple[str, ...] = tuple(EVENT_FEATURE_RANGES)
"""The numeric event features, in the order the student reads them (its `event_num` columns):
every `Event` field declared with `event_feature`. The one list the store (`events/` columns),
the student's features and input width, the planted society and the explorer read."""
EVENT_FEATURE_DEFAULTS: dict[str, float] = {f.name: f.default for f in fields(Event)
                                            if "event_feature" in f.metadata and isinstance(f.default, (int, float))}
"""The features declared with a default: what a trace written before them reads."""


def event_features(ev: Event) -> dict[str, float]:
    """An event's numeric features by name (`EVENT_FEATURES` order)."""
    return {name: float(getattr(ev, name)) for name in EVENT_FEATURES}


@dataclass
class LogitOffset(Checked):
    """A group's lean towards an action, beyond what the model predicts: `logit` is added to
    `action`'s decision logit of every agent matching `where`, every tick. Fitted by `lsm
    calibrate` (a fitted scenario carries them) and applied by the student and the planted
    society; an LLM teacher cannot apply them and refuses a scenario that has any."""

    action: str
    logit: float
    where: dict[str, list[str] | Range] = field(default_factory=dict)
    """Attribute filters, as an event's `exposure.where` (none: every agent)."""

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not -MAX_LOGIT_OFFSET <= self.logit <= MAX_LOGIT_OFFSET:
            yield "logit", self.logit, f"a number from {-MAX_LOGIT_OFFSET:g} to {MAX_LOGIT_OFFSET:g}"
        yield from where_problems(self.where)


MAX_LOGIT_OFFSET = 10.0
"""The largest offset a scenario may add to a logit (e^10: a 22,000-fold odds change)."""


Metric = Literal["action_share", "mean_decision", "median_decision", "channel_mean", "always"]


@dataclass
class Measure(Checked):
    """A number computed over the valid agents' state at the end of a tick."""

    metric: Metric
    """`action_share` (share choosing `action`), `mean_decision` / `median_decision` (numeric
    actions: the reported numbers), `channel_mean` (mean of `channel`, 0..1), `always` (1)."""
    action: str | None = None
    channel: str | None = None
    scale: float = 1.0
    """Multiply the metric, e.g. 0.6667 for "2/3 of the average"."""
    offset: float = 0.0

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if self.metric == "action_share" and self.action is None:
            yield "action", None, "the action whose share is measured"
        if self.metric == "channel_mean" and self.channel is None:
            yield "channel", None, "the channel whose mean is measured"


@dataclass
class Condition(Measure):
    """`metric op value`, e.g. action_share(vaccinate) > 0.5. `always` has no op/value."""

    op: Literal[">", ">=", "<", "<="] = ">"
    value: float | None = None

    def check(self) -> Iterable[tuple[str, Any, str]]:
        yield from super().check()
        if self.metric != "always" and self.value is None:
            yield "value", None, "the threshold to compare with"


@dataclass
class Trigger(Checked):
    """An endogenous event: after tick t, if `when` holds, `event` happens at tick t+1."""

    name: str
    when: Condition
    event: Event
    once: bool = True
    """Fire at most once (else after every tick where the condition holds)."""
    compute: dict[str, Measure] = field(default_factory=dict)
    """Named values for the event text, e.g. {winning: {metric: mean_decision, scale: 0.6667}}.
    The text may also use {tick} (the tick just evaluated), {round} (tick + 1) and {next_tick}."""
    start_tick: int = 0
    """Evaluate from this tick on."""

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := name_problem(self.name):
            yield "name", self.name, bad
        for key in self.compute:
            if not key.isidentifier() or len(key) > 64:
                yield f"compute.{key}", key, "a placeholder name (a Python identifier of at most 64 characters)"
        if self.event.tick is not None:
            yield "event.tick", self.event.tick, "no tick (a triggered event happens at the next tick)"
        allowed = set(self.compute) | {"tick", "round", "next_tick"}
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(self.event.text) if f is not None]
        except ValueError as err:
            yield "event.text", self.event.text, f"a valid format string ({err})"
            return
        for name in names:
            base = name.split(".")[0].split("[")[0]
            if base not in allowed:
                yield "event.text", "{" + name + "}", f"a placeholder among {sorted(allowed)} (define it under `compute`)"


@dataclass
class Scenario(Checked):
    name: str
    ticks: int
    tick_length: str
    context: str
    """Background every agent reads each tick."""
    question: str
    """The decision asked each tick, e.g. 'Will you get the new flu vaccine?'."""
    actions: ActionSpace
    description: str = ""
    channels: Literal["default"] | list[Channel] = "default"
    """The anchored channels; `default` is the 8-channel set of docs/design.md §3."""
    events: list[Event] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    offsets: list[LogitOffset] = field(default_factory=list)
    """Fitted leans of groups towards actions (`LogitOffset`; `lsm calibrate` writes them)."""
    text_limits: ClassVar[dict[str, int]] = {"tick_length": MAX_LABEL_CHARS, "context": MAX_CONTEXT_CHARS,
                                             "description": MAX_CONTEXT_CHARS, "question": MAX_QUESTION_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not 1 <= self.ticks <= MAX_TICKS:
            yield "ticks", self.ticks, f"a number of ticks from 1 to {MAX_TICKS:,}"
        if bad := name_problem(self.name):
            yield "name", self.name, bad
        if not self.tick_length.strip():
            yield "tick_length", self.tick_length, "a duration such as '1 week'"
        if len(self.events) > MAX_SCHEDULED_EVENTS:
            yield "events", f"{len(self.events):,} events", f"at most {MAX_SCHEDULED_EVENTS:,} scheduled events"
            return
        if len(self.triggers) > MAX_TRIGGERS:
            yield "triggers", f"{len(self.triggers):,} triggers", f"at most {MAX_TRIGGERS} triggers"
            return
        if len(self.channel_list) > MAX_CHANNELS:
            yield "channels", f"{len(self.channel_list)} channels", f"at most {MAX_CHANNELS} channels"
        per_tick: dict[int, int] = {}
        for ev in self.events:
            if ev.tick is not None:
                per_tick[ev.tick] = per_tick.get(ev.tick, 0) + 1
        for t, n in sorted(per_tick.items()):
            if n > MAX_SCHEDULED_PER_TICK:
                yield "events", f"{n} events at tick {t}", f"at most {MAX_SCHEDULED_PER_TICK} scheduled events per tick"
                break
        for i, ev in enumerate(self.events):
            if ev.tick is None:
                yield f"events[{i}].tick", None, "the tick the event happens at"
            elif not 0 <= ev.tick < self.ticks:
                yield f"events[{i}].tick", ev.tick, f"a tick between 0 and {self.ticks - 1} (ticks: {self.ticks})"
        for i, off in enumerate(self.offsets):
            if off.action not in self.actions.labels:
                yield f"offsets[{i}].action", off.action, f"an action among {self.actions.labels}"
        names = self.channel_names
        if len(set(names)) != len(names):
            yield "channels", names, "distinct channel names"
        trig_names = [t.name for t in self.triggers]
        for i, trig in enumerate(self.triggers):
            if trig_names.index(trig.name) != i:
                yield f"triggers[{i}].name", trig.name, "a name not used by another trigger"
            for sub, measure in [("when", trig.when)] + [(f"compute.{k}", m) for k, m in trig.compute.items()]:
                yield from self._check_measure(measure, f"triggers[{i}].{sub}")

    def _check_measure(self, m: Measure, path: str) -> Iterable[tuple[str, Any, str]]:
        if m.metric == "action_share" and m.action is not None:
            if m.action not in self.actions.labels:
                yield f"{path}.action", m.action, f"an action among {self.actions.labels}"
        if m.metric in ("mean_decision", "median_decision") and self.actions.type != "numeric":
            yield f"{path}.metric", m.metric, "action_share, channel_mean or always (the actions are categorical)"
        if m.metric == "channel_mean" and m.channel is not None and m.channel not in self.channel_names:
            yield f"{path}.channel", m.channel, f"a channel among {self.channel_names}"

    @property
    def channel_list(self) -> list[Channel]:
        if self.channels == "default":
            return [Channel(n, d) for n, d in DEFAULT_CHANNELS]
        return list(self.channels)  # type: ignore[arg-type]

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channel_list]


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML (raises `ScenarioError`)."""
    try:
        return load_config(Scenario, path, kind="scenario")
    except ConfigError as err:
        raise ScenarioError(err.source, err.problems, "scenario") from None


def scenario_from_dict(data: dict, source: str = "<dict>") -> Scenario:
    try:
        return from_dict(Scenario, data, source=source, kind="scenario")
    except ConfigError as err:
        raise ScenarioError(err.source, err.problems, "scenario") from None


def shorten(data: dict, ticks: int) -> dict:
    """A scenario's YAML data cut to its first `ticks` ticks (later scheduled events dropped)."""
    return {**data, "ticks": ticks, "events": [e for e in data.get("events", []) if int(e.get("tick", 0)) < ticks]}


def check_against_world(scenario: Scenario, pop, graph, source: str | Path | None = None) -> None:
    """Raise `ScenarioError` if exposure rules name attributes, categories or outlets the
    world does not have."""
    problems: list[Problem] = []
    exposures = [(f"events[{i}].exposure", e.exposure) for i, e in enumerate(scenario.events)]
    exposures += [(f"triggers[{i}].event.exposure", t.event.exposure) for i, t in enumerate(scenario.triggers)]
    filters = [(p, e.where) for p, e in exposures] + [(f"offsets[{i}]", o.where) for i, o in enumerate(scenario.offsets)]
    for path, where in filters:
        for attr, rule in where.items():
            if attr in pop.categorical:
                if isinstance(rule, Range):
                    problems.append(Problem(f"{path}.where.{attr}", {"min": rule.min, "max": rule.max}, f"a list of categories of '{attr}' ({', '.join(pop.categories[attr])})"))
                    continue
                for cat in rule:
                    if cat not in pop.categories[attr]:
                        problems.append(Problem(f"{path}.where.{attr}", cat, f"a category of '{attr}' ({', '.join(pop.categories[attr])})"))
            elif attr in pop.numeric:
                if not isinstance(rule, Range):
                    problems.append(Problem(f"{path}.where.{attr}", rule, f"a range {{min, max}} ('{attr}' is numeric)"))
            else:
                problems.append(Problem(f"{path}.where.{attr}", attr, f"an attribute of the world's population ({', '.join(pop.attributes)})"))
    for path, exp in exposures:
        for outlet in exp.followers_of:
            if outlet not in graph.outlets:
                problems.append(Problem(f"{path}.followers_of", outlet, f"a media outlet of the world ({', '.join(graph.outlets) or 'none'})"))
    if problems:
        raise ScenarioError(source or scenario.name, problems, "scenario (for this world)")


def describe_event(ev: Event) -> str:
    who = []
    if ev.exposure.where:
        who.append(" and ".join(
            f"{a} in {r}" if isinstance(r, list) else f"{a} in [{r.min if r.min is not None else '-inf'}, {r.max if r.max is not None else 'inf'}]"
            for a, r in ev.exposure.where.items()))
    if ev.exposure.followers_of:
        who.append("followers of " + ", ".join(ev.exposure.followers_of))
    scope = " and ".join(who) if who else "everyone"
    if ev.exposure.fraction < 1:
        scope = f"{ev.exposure.fraction:.0%} of {scope}"
    src = f"{ev.source} ({ev.source_type})" if ev.source else ev.source_type
    text = ev.text.strip().replace("\n", " ")
    text = text if len(text) <= 110 else text[:107] + "..."
    feats = ", ".join(f"{k} {v:+.2f}" if EVENT_FEATURE_RANGES[k][0] < 0 else f"{k} {v:.2f}" for k, v in event_features(ev).items())
    return f"{src} via {ev.channel}, {ev.framing}, {feats} -> {scope}\n      \"{text}\""


def describe_measure(m: Measure) -> str:
    what = {"action_share": f"share({m.action})", "mean_decision": "mean(decision)", "median_decision": "median(decision)",
            "channel_mean": f"mean({m.channel})", "always": "always"}[m.metric]
    if m.scale != 1.0:
        what = f"{m.scale:g} * {what}"
    if m.offset:
        what = f"{what} {m.offset:+g}"
    return what


def timeline(scenario: Scenario) -> str:
    """A readable timeline of the scenario (what `lsm scenario FILE` prints)."""
    a = scenario.actions
    if a.type == "categorical":
        acts = ", ".join(o.name for o in a.options)  # type: ignore[union-attr]
    else:
        acts = f"a number in [{a.min:g}, {a.max:g}]{' ' + a.unit if a.unit else ''}, {a.bins} bins"
    lines = [
        f"Scenario '{scenario.name}': {scenario.ticks} ticks of {scenario.tick_length}",
        f"  question: {scenario.question.strip()}",
        f"  actions:  {acts}",
        f"  channels: {', '.join(scenario.channel_names)}",
    ]
    for t in range(scenario.ticks):
        evs = [e for e in scenario.events if e.tick == t]
        if evs:
            for e in evs:
                lines.append(f"  tick {t:>3}  {describe_event(e)}")
        else:
            lines.append(f"  tick {t:>3}  (no scheduled event)")
    for trig in scenario.triggers:
        cond = describe_measure(trig.when)
        if trig.when.metric != "always":
            cond = f"{cond} {trig.when.op} {trig.when.value:g}"
        when = f"after each tick from {trig.start_tick}" if trig.start_tick else "after each tick"
        lines.append(f"  trigger '{trig.name}' ({'once' if trig.once else 'repeating'}): {when}, if {cond}, at the next tick:")
        lines.append(f"           {describe_event(trig.event)}")
        for k, m in trig.compute.items():
            lines.append(f"           {{{k}}} = {describe_measure(m)}")
    for off in scenario.offsets:
        who = "; ".join(f"{a} {', '.join(r) if isinstance(r, list) else describe_range(r)}" for a, r in off.where.items()) or "everyone"
        lines.append(f"  offset: {off.logit:+.3g} on the logit of {off.action} for {who} (a fitted lean, every tick)")
    return "\n".join(lines)


def describe_range(r: Range) -> str:
    return f"{'' if r.min is None else f'{r.min:g}'}..{'' if r.max is None else f'{r.max:g}'}"


__all__ = [
    "Scenario", "ScenarioError", "ActionSpace", "ActionOption", "Channel", "Event", "Exposure",
    "Range", "Measure", "Condition", "Trigger", "load_scenario", "scenario_from_dict",
    "check_against_world", "timeline", "DEFAULT_CHANNELS", "RATING_LEVELS",
    "SOURCE_TYPES", "CHANNELS", "FRAMINGS",
]
