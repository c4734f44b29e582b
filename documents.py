"""Reading a YAML or JSON document a user handed us, safely: the one loader for every config.

Scenarios, populations, graphs, teachers, planted societies, training presets and the YAML
copies embedded in HDF5 files all come through `read_document(path)` or `parse_document(text)`.
Before any structure is built the input is bounded:

- size: at most `MAX_DOCUMENT_BYTES` are read (the file is never read whole first);
- encoding: UTF-8 text; a NUL byte (a binary file) or invalid UTF-8 is refused, naming the byte offset;
- nesting: at most `MAX_DEPTH` levels of mappings and lists (5,000 nested brackets are refused
  at depth `MAX_DEPTH + 1`, not by a Python recursion error);
- aliases: `&anchor` / `*alias` are allowed, but the document as expanded may hold at most
  `MAX_NODES` nodes (the "billion laughs" file is refused after counting, before it is built),
  and an alias that contains itself is refused;
- tags: only YAML's plain types (SafeLoader); `!!python/object` and other constructing tags are refused;
- keys: a key given twice in one mapping is refused (YAML would silently keep the last).

Every refusal is a `ConfigError` naming the file and what was expected: one paragraph, exit
status 2 at the command line. Semantic bounds (ticks, text lengths, names) belong to the schemas
(`lsm.limits`, checked by `lsm.config`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from yaml.events import MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lsm.errors import ConfigError, Problem

MAX_DOCUMENT_BYTES = 1 << 20
"""1 MiB: the largest config we ship is 4.4 KB; a scenario at every semantic bound is ~1 MB."""
MAX_DEPTH = 24
"""Mappings and lists nested at most this deep (the shipped configs reach 6)."""
MAX_NODES = 200_000
"""Scalars, mappings and lists in the document after expanding aliases."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops at `MAX_DEPTH` while composing and refuses duplicate keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        opens = self.check_event(SequenceStartEvent, MappingStartEvent)
        self._depth += opens
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"mappings and lists nested at most {MAX_DEPTH} deep",
                               f"nesting deeper than {MAX_DEPTH} at line {mark.line + 1}, column {mark.column + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= opens

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode):
                key = self.construct_object(key_node)
                if key in seen:
                    raise _Refused("each key once per mapping",
                                   f"key {key!r} repeated at line {key_node.start_mark.line + 1} "
                                   f"(first at line {seen[key] + 1})")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


class _Refused(Exception):
    """Internal: a bound was exceeded (expected, found)."""

    def __init__(self, expected: str, found: str):
        super().__init__(found)
        self.expected = expected
        self.found = found


def expanded_size(root: Node) -> int:
    """Nodes in the document once every alias is expanded; refuses an alias that contains itself.

    Aliases share one node object, so sizes are memoised per node: the count costs one visit per
    distinct node however large the expansion (a billion laughs is counted, never built)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion limit
        node, children_done = stack.pop()
        key = id(node)
        if key in size:
            continue
        kids: list[Node] = []
        if isinstance(node, SequenceNode):
            kids = list(node.value)
        elif isinstance(node, MappingNode):
            kids = [n for pair in node.value for n in pair]
        if not children_done:
            if key in on_path:
                raise _Refused("no alias that refers to the list or mapping it is part of",
                               f"a recursive alias at line {node.start_mark.line + 1}")
            on_path.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        on_path.discard(key)
        total = 1 + sum(size[id(k)] for k in kids)
        size[key] = min(total, MAX_NODES + 1)
    return size[id(root)]


def _decode(raw: bytes, source: str, kind: str) -> str:
    if b"\x00" in raw:
        raise ConfigError(source, [Problem("", f"a NUL byte at offset {raw.index(0)}",
                                           "a UTF-8 text file (this looks like a binary file)")], kind)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(source, [Problem("", f"byte {raw[err.start:err.start + 1]!r} at offset {err.start}",
                                           "UTF-8 text")], kind) from None


def parse_document(text: str, source: str | Path = "<text>", kind: str = "config", fmt: str = "yaml") -> Any:
    """Parse YAML (or JSON with `fmt="json"`) text under the bounds above; `ConfigError` otherwise."""
    source = str(source)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise ConfigError(source, [Problem("", f"{len(text):,} characters", f"at most {MAX_DOCUMENT_BYTES:,} bytes")], kind)
    if "\x00" in text:
        raise ConfigError(source, [Problem("", f"a NUL character at offset {text.index(chr(0))}", "text without NUL characters")], kind)
    if fmt == "json":
        return _parse_json(text, source, kind)
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        n = expanded_size(root)
        if n > MAX_NODES:
            raise _Refused(f"at most {MAX_NODES:,} values once aliases are expanded",
                           f"more than {MAX_NODES:,} values after expanding aliases")
        return loader.construct_document(root)
    except _Refused as err:
        raise ConfigError(source, [Problem("", err.found, err.expected)], kind) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):  # `!!python/object` and other constructing tags
            raise ConfigError(source, [Problem("", f"a YAML tag at {where}", f"plain YAML values only ({reason})")], kind) from None
        raise ConfigError(source, [Problem("", f"YAML syntax error at {where}", f"valid YAML ({reason})")], kind) from None
    finally:
        loader.dispose()


def _parse_json(text: str, source: str, kind: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for k, v in items:
            if k in out:
                raise _Refused("each key once per object", f"key {k!r} repeated")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise _Refused("finite numbers", name)

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
        _check_depth(data)
        return data
    except _Refused as err:
        raise ConfigError(source, [Problem("", err.found, err.expected)], kind) from None
    except RecursionError:
        raise ConfigError(source, [Problem("", "nesting too deep to parse", f"objects and arrays nested at most {MAX_DEPTH} deep")], kind) from None
    except json.JSONDecodeError as err:
        raise ConfigError(source, [Problem("", f"JSON error at line {err.lineno}, column {err.colno}", f"valid JSON ({err.msg})")], kind) from None


def _check_depth(data: Any) -> None:
    stack = [(data, 0)]
    while stack:
        x, d = stack.pop()
        if d > MAX_DEPTH:
            raise _Refused(f"objects and arrays nested at most {MAX_DEPTH} deep", f"nesting deeper than {MAX_DEPTH}")
        if isinstance(x, dict):
            stack.extend((v, d + 1) for v in x.values())
        elif isinstance(x, list):
            stack.extend((v, d + 1) for v in x)


def read_document(path: str | Path, kind: str = "config") -> Any:
    """Read a YAML or JSON (by suffix `.json`) file under the bounds above; `ConfigError` otherwise,
    naming the file: missing, a directory, unreadable, too large, binary, not UTF-8, malformed."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError(p, [Problem("", str(p), "a file (this is a directory)")], kind)
        if not p.exists():
            raise ConfigError(p, [Problem("", str(p), f"an existing {kind} file")], kind)
        with open(p, "rb") as fh:
            raw = fh.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as err:
        raise ConfigError(p, [Problem("", str(p), f"a readable file ({err.strerror or err})")], kind) from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(p, [Problem("", "a file larger than the limit", f"at most {MAX_DOCUMENT_BYTES:,} bytes")], kind)
    return parse_document(_decode(raw, str(p), kind), p, kind, fmt="json" if p.suffix.lower() == ".json" else "yaml")
