"""Typed configs: a dataclass is the schema, a YAML file is a saved instance.

`load_config(Cls, "file.yaml")` reads the YAML, checks every field against the dataclass
type hints (and each class's own `check()` for ranges and cross-field rules), and either
returns the instance or raises one `ConfigError` listing *every* problem found, each naming
the file, the field path, the bad value and what was expected. `to_dict()` is the inverse,
used to embed configs in HDF5 attributes and checkpoints. `resolve_config("anes96", "population")`
finds a shipped config by name; `UsageError` is what a command body raises for a user's mistake.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar, Union

import yaml

from lsm.documents import read_document

# The error types live in `lsm.errors` (below this module and `lsm.documents`); re-exported here.
from lsm.errors import _MISSING, ConfigError, Interrupted, Problem, UsageError  # noqa: F401
from lsm.limits import MAX_TEXT_CHARS, number_problem, text_problem

T = TypeVar("T")

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
"""The shipped configs (`configs/` at the repository root, `lsm/configs` when installed)."""


def resolve_config(path: str | Path, family: str) -> Path:
    """A config path as given, else a shipped one: `anes96` or `configs/population/anes96.yaml`
    resolve to the shipped file when no such file exists in the working directory."""
    p = Path(path)
    if p.exists():
        return p
    candidates = [CONFIG_ROOT.parent / p, CONFIG_ROOT / family / p, CONFIG_ROOT / family / f"{path}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    return p  # let the loader report the missing file by the name the user gave




def join(path: str, key: str | int) -> str:
    """Field path notation: `events[2].valence`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Checked:
    """Mixin for config dataclasses with rules beyond types.

    `check()` yields `(relative_field, value, expected)` for every violation; the loader
    prefixes the field path. Keep it side-effect free. `text_limits` names the string fields
    whose length bound is not `lsm.limits.MAX_TEXT_CHARS` (every string is checked for
    control and bidirectional-override characters by the loader).
    """

    text_limits: typing.ClassVar[dict[str, int]] = {}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        return ()

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """The mapping as this schema reads it: a class whose fields were renamed or regrouped maps
        the older spelling here (files written before keep loading). The default changes nothing."""
        return data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with fields {', '.join(f.name for f in dataclasses.fields(tp))}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, path: str, problems: list[Problem], text_limit: int = MAX_TEXT_CHARS) -> Any:
    """Convert a YAML value to `tp`, appending to `problems` (and returning None) on mismatch.
    A string must be printable text of at most `text_limit` characters (`lsm.limits`)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        problems.append(Problem(path, value, "null"))
        return None
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[Problem] = []
            out = _convert(arg, value, path, trial, text_limit)
            if not trial:
                return out
        # Report the most specific failure when only one non-null alternative exists.
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:
            return _convert(non_null[0], value, path, problems, text_limit)
        problems.append(Problem(path, value, _type_name(tp)))
        return None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        problems.append(Problem(path, value, _type_name(tp) + extra))
        return None
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            problems.append(Problem(path, value, _type_name(tp)))
            return None
        items = [_convert(item_tp, v, join(path, i), problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(Problem(path, value, _type_name(tp)))
            return None
        return {
            _convert(key_tp, k, join(path, str(k)), problems): _convert(val_tp, v, join(path, str(k)), problems)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, path, problems)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (bad := number_problem(value)):
            problems.append(Problem(path, value, f"an integer ({bad})"))
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if bad := number_problem(value):
                problems.append(Problem(path, value, bad))
                return None
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            if bad := text_problem(value, text_limit):
                problems.append(Problem(path, value, bad))
                return None
            return value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {tp!r} at {path}")
    problems.append(Problem(path, value, _type_name(tp)))
    return None


def _build(cls: type[T], data: Any, path: str, problems: list[Problem]) -> T | None:
    if not isinstance(data, dict):
        problems.append(Problem(path, data, _type_name(cls)))
        return None
    if isinstance(cls, type) and issubclass(cls, Checked):
        data = cls.upgrade(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls)) if f.init}
    text_limits: dict[str, int] = getattr(cls, "text_limits", {})
    before = len(problems)
    for key in data:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            problems.append(
                Problem(join(path, str(key)), data[key], f"no such field (known: {', '.join(fields)}){extra}")
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], join(path, name), problems,
                                    text_limits.get(name, MAX_TEXT_CHARS))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(Problem(join(path, name), _MISSING, f"a value ({_type_name(hints[name])})"))
    if len(problems) > before:
        return None
    obj = cls(**kwargs)
    if isinstance(obj, Checked):
        for sub, value, expected in obj.check():
            problems.append(Problem(join(path, sub) if sub else path, value, expected))
    return obj


def from_dict(cls: type[T], data: Any, source: str | Path | None = None, kind: str = "config") -> T:
    """Build `cls` from plain data, raising one `ConfigError` with every problem."""
    problems: list[Problem] = []
    obj = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(source, problems, kind)
    assert obj is not None
    return obj


def read_yaml(path: str | Path, kind: str = "config") -> Any:
    """Read a YAML (or `.json`) file through the one safe loader (`lsm.documents`): a missing,
    oversized, binary or malformed file, deep nesting or an alias bomb becomes a `ConfigError`."""
    return read_document(path, kind)


def load_config(cls: type[T], path: str | Path, kind: str = "config") -> T:
    """Read and validate a YAML file into the dataclass `cls`."""
    return from_dict(cls, read_yaml(path, kind), source=path, kind=kind)


def to_dict(obj: Any) -> Any:
    """A dataclass instance as plain YAML-able data (the inverse of `from_dict`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def shipped(*parts: str) -> Path:
    """Path of a shipped config, e.g. `shipped("scenarios", "vaccine_campaign.yaml")`."""
    return CONFIG_ROOT.joinpath(*parts)
