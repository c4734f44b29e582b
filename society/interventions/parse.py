"""The intervention language read from its YAML form (`from_data`, `from_yaml`) and its compact
form (`parse`); see `edits` for both forms."""
from __future__ import annotations

import re
from typing import Any

from lsm.config import ConfigError, Problem, from_dict, join
from lsm.limits import number_problem
from lsm.society.interventions.edits import KIND, KINDS, NUMERIC_EVENT_FIELDS, Edit, EventRef, Interventions, _looks_numeric
from lsm.documents import parse_document


def _edit_from_dict(item: Any, path: str, problems: list[Problem], flat: bool = False) -> Edit | None:
    """One edit from its YAML form; its problems are named `path.FIELD` (`flat`: `path`, the
    compact clause's key)."""
    if not isinstance(item, dict):
        problems.append(Problem(path, item, f"an edit: a mapping with a kind ({', '.join(KINDS)}) or a compact text"))
        return None
    kind = item.get("kind")
    if kind not in KINDS:
        problems.append(Problem(join(path, "kind"), kind, f"one of {', '.join(KINDS)}"))
        return None
    try:
        return from_dict(KINDS[kind], {k: v for k, v in item.items() if k != "kind"}, kind=KIND)
    except ConfigError as err:
        problems += [Problem(join(path, p.path) if p.path and not flat else path, p.value, p.expected) for p in err.problems]
        return None


def from_data(data: Any, source: str = "<interventions>") -> Interventions:
    """Edits from plain data: a list of edits (mappings in the YAML form, or compact texts), or a
    mapping `{interventions: [...]}` (an interventions file). One `ConfigError` lists every problem."""
    if isinstance(data, dict) and set(data) == {"interventions"}:
        data = data["interventions"]
    if isinstance(data, str):
        return parse(data, source)
    if not isinstance(data, list):
        raise ConfigError(source, [Problem("", data, "a list of edits, or a mapping {interventions: [...]}")], KIND)
    problems: list[Problem] = []
    out: list[Edit] = []
    for k, item in enumerate(data):
        if isinstance(item, str):
            try:
                out += parse(item, source).edits
            except ConfigError as err:
                problems += [Problem(f"interventions[{k}]: {p.path}" if p.path else f"interventions[{k}]", p.value, p.expected)
                             for p in err.problems]
            continue
        e = _edit_from_dict(item, f"interventions[{k}]", problems)
        if e is not None:
            out.append(e)
    if problems:
        raise ConfigError(source, problems, KIND)
    return Interventions(tuple(out))


_EVENT_KEY = re.compile(r"^events\[([^\[\]]+)\](?:\.(.+))?$")
_AGENT_KEY = re.compile(r"^agents(?:\[(.*)\])?\.([A-Za-z0-9_]+)$")


def _split(clause: str) -> tuple[str, str, str] | None:
    """(key, op, value): the first `=` outside brackets; op `*=` or `=`."""
    depth = 0
    for i, c in enumerate(clause):
        depth += (c == "[") - (c == "]")
        if c == "=" and depth == 0:
            key = clause[:i].strip()
            if key.endswith("*"):
                return key[:-1].strip(), "*=", clause[i + 1:].strip()
            return key, "=", clause[i + 1:].strip()
    return None


def _ref(text: str) -> EventRef:
    return int(text) if text.strip().isdigit() else text.strip()


def _number(text: str, path: str, problems: list[Problem], what: str = "a number") -> float | None:
    try:
        v = float(text)
    except ValueError:
        problems.append(Problem(path, text, what))
        return None
    if bad := number_problem(v):
        problems.append(Problem(path, text, bad))
        return None
    return v


def _filters(text: str, path: str, problems: list[Problem]) -> dict[str, Any]:
    """`region=south|west,age=18..30` -> {region: [south, west], age: {min: 18, max: 30}}."""
    out: dict[str, Any] = {}
    for part in [p for p in text.split(",") if p.strip()]:
        if "=" not in part:
            problems.append(Problem(path, part, "a filter ATTRIBUTE=CATEGORY|CATEGORY or ATTRIBUTE=MIN..MAX"))
            continue
        attr, rule = (s.strip() for s in part.split("=", 1))
        if ".." in rule:
            lo, hi = rule.split("..", 1)
            rng = {}
            if lo.strip():
                rng["min"] = _number(lo, join(path, attr), problems)
            if hi.strip():
                rng["max"] = _number(hi, join(path, attr), problems)
            out[attr] = rng
        else:
            out[attr] = [c.strip() for c in rule.split("|")]
    return out


def _clause(clause: str, problems: list[Problem], path: str) -> dict[str, Any] | None:
    """One compact clause as the YAML form of its edit (checked by `_edit_from_dict`)."""
    split = _split(clause)
    if split is None:
        problems.append(Problem(path, clause, "KEY=VALUE, e.g. events[0].credibility=0.5, events[0].credibility*=0.5, "
                                              "events[0]=removed, sever=household, messages=none, agents.age=30"))
        return None
    key, op, value = split
    key = re.sub(r"^events\.(\d+)(?=\.|$)", r"events[\1]", key)  # the dotted spelling of `--sweep` paths
    if op == "*=":
        m = _EVENT_KEY.match(key)
        if m is None or m.group(2) not in NUMERIC_EVENT_FIELDS:
            problems.append(Problem(path, clause, f"*= only on a numeric event field ({', '.join(NUMERIC_EVENT_FIELDS)})"))
            return None
    if key == "sever":
        return {"kind": "sever", "ties": [t.strip() for t in value.split(",") if t.strip()]}
    if key == "messages":
        name, *args = value.split(":")
        d: dict[str, Any] = {"kind": "messages", "edit": name.strip()}
        if name == "shuffled" and args:
            try:
                d["seed"] = int(args[0])
            except ValueError:
                problems.append(Problem(path, value, "messages=shuffled:SEED with an integer seed"))
                return None
        elif name == "strong":
            if len(args) != 2 or args[1].strip() not in ("+1", "1", "-1"):
                problems.append(Problem(path, value, "messages=strong:TIE:+1 or messages=strong:TIE:-1"))
                return None
            d.update(tie=args[0].strip(), sign=int(args[1]))
        elif args:
            problems.append(Problem(path, value, f"messages={name} takes no argument"))
            return None
        return d
    if m := _AGENT_KEY.match(key):
        val: Any = value
        if _looks_numeric(value):
            val = _number(value, path, problems)
        return {"kind": "attributes", "attribute": m.group(2), "value": val,
                **({"where": _filters(m.group(1), path, problems)} if m.group(1) else {})}
    m = _EVENT_KEY.match(key)
    if m is None:
        problems.append(Problem(path, key, "events[N].FIELD, events[N]=removed, sever, messages or agents[...].ATTRIBUTE"))
        return None
    ref, rest = _ref(m.group(1)), m.group(2)
    if rest is None:
        if value != "removed":
            problems.append(Problem(path, clause, f"events[{m.group(1)}]=removed (or a field: events[{m.group(1)}].credibility=...)"))
            return None
        return {"kind": "remove", "event": ref}
    if op == "*=":
        f = _number(value, path, problems)
        return {"kind": "scale", "event": ref, "field": rest, "factor": f}
    if rest == "tick":
        t = _number(value, path, problems, "a tick (an integer)")
        if t is not None and not float(t).is_integer():
            problems.append(Problem(path, value, "a tick (an integer)"))
            return None
        return {"kind": "move", "event": ref, "tick": None if t is None else int(t)}
    if rest in ("exposure.fraction", "reach"):
        return {"kind": "exposure", "event": ref, "fraction": _number(value, path, problems)}
    if rest == "exposure.where":
        return {"kind": "exposure", "event": ref, "where": _filters(value, path, problems)}
    if rest == "exposure.followers_of":
        return {"kind": "exposure", "event": ref, "followers_of": [o.strip() for o in value.split("|") if o.strip()]}
    if rest in NUMERIC_EVENT_FIELDS:
        return {"kind": "set", "event": ref, "field": rest, "value": _number(value, path, problems)}
    return {"kind": "set", "event": ref, "field": rest, "value": value}


def parse(text: str, source: str = "<interventions>") -> Interventions:
    """Edits from their compact form: clauses separated by `;` (module docstring). One
    `ConfigError` lists every problem, each naming the clause."""
    problems: list[Problem] = []
    out: list[Edit] = []
    clauses = [c.strip() for c in str(text).split(";") if c.strip()]
    if not clauses:
        raise ConfigError(source, [Problem("", text, "at least one edit, e.g. events[0].credibility=0.5")], KIND)
    for clause in clauses:
        split = _split(clause)
        path = split[0] if split else clause
        path = path if len(path) <= 60 else path[:57] + "..."
        before = len(problems)
        d = _clause(clause, problems, path)
        if d is None or len(problems) > before:
            continue
        e = _edit_from_dict(d, path, problems, flat=True)
        if e is not None:
            out.append(e)
    if problems:
        raise ConfigError(source, problems, KIND)
    return Interventions(tuple(out))


def load(spec: str | Any, source: str | None = None) -> Interventions:
    """Edits from what a user gives: the compact text, or plain data (`from_data`)."""
    if isinstance(spec, str):
        return parse(spec, source or "<interventions>")
    return from_data(spec, source or "<interventions>")


def from_yaml(text: str, source: str = "<interventions>") -> Interventions:
    """What `Interventions.to_yaml` wrote (a file's `config.interventions`)."""

    return from_data(parse_document(text, source, KIND), source)
