"""Property-based fuzzing of every config family's loader.

Each example starts from a shipped config, applies a few random mutations (type swaps, extreme
and non-finite numbers, huge, empty and hostile unicode strings, deleted, duplicated and nested
keys), writes the YAML file and loads it the way the command line does. The property: the file
either loads into a valid object that the command can use (a scenario prints its timeline; a
population samples 20 agents) or raises the one error type, `ConfigError`, whose message names
the file and is printable — never another exception, within a time bound (hypothesis' deadline) and a
memory bound (the peak of the allocations `tracemalloc` traces while that one file loads and is used).
A config that loads is walked field by field: every number in it is finite and within
`MAX_ABS_NUMBER`, every string printable and within its field's bound (`lsm.limits`), as the
schema promises.

`LSM_FUZZ_EXAMPLES` sets the examples per family (CI: 300; `make fuzz`: 1,000). Run with
`pytest -s` to see the count of examples and of distinct error messages per family.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import tracemalloc
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsm.config import CONFIG_ROOT, ConfigError, from_dict, load_config
from lsm.limits import MAX_ABS_NUMBER, MAX_TEXT_CHARS
from lsm.data_gen.planted.config import PlantedConfig
from lsm.society.scenario import Scenario, load_scenario, timeline
from lsm.data_gen.teacher.config import TeacherConfig
from lsm.society.world.graph import GraphConfig, load_graph_config
from lsm.society.world.population import PopulationConfig, load_population_config, sample_population

EXAMPLES = int(os.environ.get("LSM_FUZZ_EXAMPLES", "300"))
MEMORY_BOUND = 256 << 20
"""The most one example may allocate at its peak (traced by `tracemalloc` around that example; the
shipped files peak near 2 MiB): the
documents are at most 1 MiB and a population samples 20 agents; an unbounded alias expansion
would take gigabytes."""


BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Bidirectional formatting characters, spelled here again so that the walk below does not share
`lsm.limits`' own checks (a break there must not blind it)."""


def _bound_problems(obj: Any, where: str = "", text_limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Every value of a loaded config that breaks what the schema promises, as `field: why`:
    numbers finite and of magnitude at most `MAX_ABS_NUMBER`, strings printable and within the
    field's own bound (`text_limits` of its class, else `MAX_TEXT_CHARS`). Walks dataclasses,
    lists, tuples and mappings (keys too) recursively."""
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        ok = math.isfinite(obj) and abs(obj) <= MAX_ABS_NUMBER
        return [] if ok else [f"{where}: {obj!r} is not a finite number of magnitude <= {MAX_ABS_NUMBER:g}"]
    if isinstance(obj, str):
        if len(obj) > text_limit:
            return [f"{where}: {len(obj):,} characters, more than {text_limit:,}"]
        bad = [ch for ch in obj if ch not in "\n\t" and (ch in BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"))]
        return [f"{where}: control or bidirectional characters {bad[:3]!r}"] if bad else []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        limits = getattr(obj, "text_limits", {})
        return [p for f in dataclasses.fields(obj)
                for p in _bound_problems(getattr(obj, f.name), f"{where}.{f.name}", limits.get(f.name, MAX_TEXT_CHARS))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _bound_problems(v, f"{where}[{i}]")]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _bound_problems(k, f"{where} key") + _bound_problems(v, f"{where}.{k}")]
    return [f"{where}: a {type(obj).__name__}, not a config value"]


def _traced(use: Callable[[Path], Any], path: Path) -> tuple[Any, int]:
    """(what `use(path)` returned, or the `ConfigError` it raised; the peak bytes allocated during
    that one call). Per call, because the process's all-time peak RSS never grows after an earlier,
    larger test; only around the call, because tracing costs (the loads run 3 to 4 times slower)."""
    tracemalloc.start()
    try:
        try:
            result = use(path)
        except ConfigError as err:
            result = err
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _use_scenario(path: Path) -> Any:
    scenario = load_scenario(path)
    text = timeline(scenario)
    assert all(ch.isprintable() or ch == "\n" for ch in text), "the timeline prints a control character"
    return scenario


def _use_population(path: Path) -> Any:
    cfg = load_population_config(path)
    pop = sample_population(cfg, 20, seed=0)
    assert len(pop.names) == 20
    return cfg


FAMILIES: dict[str, tuple[list[Path], Callable[[Path], Any]]] = {
    "scenarios": (sorted((CONFIG_ROOT / "scenarios").glob("*.yaml")), _use_scenario),
    "population": (sorted((CONFIG_ROOT / "population").glob("*.yaml")), _use_population),
    "graph": (sorted((CONFIG_ROOT / "graph").glob("*.yaml")), load_graph_config),
    "teacher": ([p for p in sorted((CONFIG_ROOT / "teacher").glob("*.yaml")) if "planted" not in p.name],
                lambda p: load_config(TeacherConfig, p, kind="teacher config")),
    "planted": (sorted((CONFIG_ROOT / "teacher").glob("planted*.yaml")),
                lambda p: load_config(PlantedConfig, p, kind="planted society config")),
}
"""Per family: the shipped files, and what a command does with one (returns the loaded config)."""

HOSTILE_TEXT = st.sampled_from([
    "", " ", "x" * 30_000, "a\x00b", "\u202eevil", "\x1b[31mred", "line\r\nbreak", "tab\tok", "\ud7ff\ue000",
    "ünïcödé ✓ 漢字", "{placeholder}", "{0}", "{", "..", "a/b", "%s%n", "\U0001f600" * 300,
])
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 101, 10**9, 10**11, 1e-300, 1e300, -0.0, 0.5, 1.0000001,
                     float("nan"), float("inf"), -float("inf"), MAX_ABS_NUMBER, -MAX_ABS_NUMBER, MAX_ABS_NUMBER * 1.000001]),
)
LEAVES = st.one_of(NUMBERS, HOSTILE_TEXT, st.text(max_size=40), st.booleans(), st.none())
VALUES = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                      max_leaves=12)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, prefix + (i,))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parent(data: Any, path: tuple) -> Any:
    for k in path[:-1]:
        data = data[k]
    return data


@st.composite
def mutated(draw, family: str) -> tuple[str, str]:
    """(YAML text, what was done) of a shipped config of `family` after 1-4 mutations."""
    files, _ = FAMILIES[family]
    src = draw(st.sampled_from(files))
    data = yaml.safe_load(src.read_text())
    done = []
    duplicate = None
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        op = draw(st.sampled_from(["replace", "replace", "delete", "nest", "extend", "duplicate_key", "number"]))
        key = path[-1]
        if op == "replace":
            parent[key] = draw(VALUES)
        elif op == "number":  # a number where a number was: past the type check, onto the bound checks
            numeric = [p for p in paths if _is_number(_parent(data, p)[p[-1]])]
            if numeric:
                path = draw(st.sampled_from(numeric))
                parent, key = _parent(data, path), path[-1]
            parent[key] = draw(NUMBERS)
        elif op == "delete":
            del parent[key]
        elif op == "nest":
            value = parent[key]
            for _ in range(draw(st.integers(1, 40))):
                value = [value]
            parent[key] = value
        elif op == "extend" and isinstance(parent, list):
            parent.extend([parent[key]] * draw(st.integers(1, 2000)))
        elif op == "duplicate_key" and len(path) == 1:
            duplicate = f"{key}: {yaml.safe_dump(draw(LEAVES), default_flow_style=True).strip().removesuffix('...').strip()}\n"
        done.append(f"{op} {'.'.join(map(str, path))}")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6)
    if duplicate:
        text += duplicate
    return text, "; ".join(done) or "none"


MESSAGES: dict[str, Counter] = {}


def _template(message: str) -> str:
    """What an error message expects, values and field paths blanked: distinct kinds of refusal."""
    import re

    expected = re.findall(r": expected (.*?)(?=\. \(\d+\) |\.$| \.\.\. and)", message)
    return " | ".join(sorted({re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|[-+]?\d[\d.,]*(?:e[-+]?\d+)?", "_", e)[:120] for e in expected}))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fuzzed_configs_load_or_raise_one_clear_error(family, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz_{family}")
    files, use = FAMILIES[family]
    seen: Counter = MESSAGES.setdefault(family, Counter())
    counts = Counter()
    for src in files:  # the walk below sees loaded configs even if no mutant happens to load
        loaded, _peak = _traced(use, src)
        assert not isinstance(loaded, ConfigError) and _bound_problems(loaded) == [], (src, loaded)

    @settings(max_examples=EXAMPLES, deadline=10_000, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=mutated(family))
    def check(case):
        text, what = case
        path = folder / "fuzzed.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        loaded, peak = _traced(use, path)
        assert peak < MEMORY_BOUND, f"one file took {peak / 2**20:.0f} MiB at its peak to load ({what})"
        if not isinstance(loaded, ConfigError):
            counts["loaded"] += 1
            problems = _bound_problems(loaded)
            assert not problems, f"a loaded config breaks the schema's bounds ({what}): {problems[:5]}"
        else:
            err = loaded
            counts["refused"] += 1
            message = str(err)
            assert str(path) in message, f"the message does not name the file ({what}): {message[:300]}"
            assert message.isprintable(), f"the message prints a control character ({what}): {message[:300]!r}"
            assert len(message) < 20_000, f"a {len(message):,}-character message ({what})"
            seen[_template(message.split(":", 1)[1])] += 1

    check()
    print(f"\nfuzz {family}: {sum(counts.values())} examples, {counts['loaded']} loaded, {counts['refused']} refused "
          f"with {len(seen)} distinct messages, 0 other exceptions")
    assert counts["refused"] > 0 and sum(counts.values()) >= min(EXAMPLES, 50)


SCHEMAS: dict[str, type] = {"scenarios": Scenario, "population": PopulationConfig, "graph": GraphConfig,
                            "teacher": TeacherConfig, "planted": PlantedConfig}
"""The schema of each family: every `load_*` above is `from_dict(SCHEMA, the parsed file)`, and the
sweep below builds thousands of configs, so it skips the (pure-Python, 20 ms) YAML parse."""
PAST_BOUNDS: dict[str, list[Any]] = {
    "number": [float("nan"), float("inf"), -float("inf"), MAX_ABS_NUMBER * 1.000001, -MAX_ABS_NUMBER * 1.000001],
    "string": ["a\x1bb\u202ec", "x" * (MAX_TEXT_CHARS + 1)],
}
"""What each leaf of a shipped config is replaced by, one leaf at a time."""


def _leaves(data: Any, prefix: tuple = (), name: str = "") -> list[tuple[tuple, str, Any]]:
    """(path of keys, the loader's name of the field such as `events[2].exposure.fraction`, value)
    of every leaf."""
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in _leaves(v, prefix + (k,), f"{name}.{k}" if name else str(k))]
    if isinstance(data, list):
        return [leaf for i, v in enumerate(data) for leaf in _leaves(v, prefix + (i,), f"{name}[{i}]")]
    return [(prefix, name, data)]


@pytest.mark.parametrize("family", list(SCHEMAS))
def test_every_number_and_string_of_every_shipped_config_past_its_bound(family):
    """Fuzzing rarely lands a NaN where nothing but the bound check would refuse it (a trigger's
    threshold, a scale): here every numeric and string leaf of every shipped file, one at a time,
    is set past the bounds. Either the file is refused naming that field, or what loads keeps
    every bound (the walk above)."""
    counts = Counter()
    for src in FAMILIES[family][0]:
        data = yaml.safe_load(src.read_text())
        for where, field, value in _leaves(data):
            kind = "string" if isinstance(value, str) else "number" if _is_number(value) else None
            for bad in PAST_BOUNDS.get(kind, []):
                _parent(data, where)[where[-1]] = bad
                case = f"{src.name}: {field} = {bad!r:.40}"
                try:
                    loaded = from_dict(SCHEMAS[family], copy.deepcopy(data), source=src)
                except ConfigError as err:
                    counts["refused"] += 1
                    named = re.findall(r"field '([^']+)'", str(err))  # the field, or the union holding it
                    assert any(field == n or field.startswith((n + ".", n + "[")) for n in named), \
                        f"{case}: the refusal does not name the field: {str(err)[:300]}"
                    continue
                finally:
                    _parent(data, where)[where[-1]] = value
                counts["loaded"] += 1
                assert not (problems := _bound_problems(loaded)), f"{case}: loaded past its bound: {problems[:3]}"
    print(f"\n{family}: {counts['refused']} refused, {counts['loaded']} loaded and bounded")
    assert counts["refused"] > 0


def test_the_bound_walker_finds_each_kind_of_broken_value():
    """The walk above is what makes a loaded config's check fail: it must see a value that
    breaks a bound wherever it sits (a field, a nested list, a mapping key, a field's own bound)."""
    from lsm.society.scenario import ActionOption

    scenario = load_scenario(CONFIG_ROOT / "scenarios" / "vaccine_campaign.yaml")
    assert _bound_problems(scenario) == []
    scenario.triggers[0].when.scale = float("nan")
    scenario.events[1].exposure.where["a\x1bb"] = ["x"]
    scenario.question = "q" * 501  # Scenario.text_limits: question at most 500
    scenario.actions.options.append(ActionOption(name="big", description=2e15))  # type: ignore[arg-type]
    found = _bound_problems(scenario)
    assert [p.split(":")[0] for p in found] == [
        ".question", ".actions.options[3].description", ".events[1].exposure.where key", ".triggers[0].when.scale"], found


def test_a_non_finite_number_is_refused_with_its_field_path():
    path = Path(CONFIG_ROOT / "scenarios" / "vaccine_campaign.yaml")
    data = yaml.safe_load(path.read_text())
    data["events"][0]["exposure"] = {"fraction": float("inf")}
    from lsm.society.scenario import scenario_from_dict

    with pytest.raises(ConfigError, match=r"events\[0\]\.exposure\.fraction' = inf: expected a finite number"):
        scenario_from_dict(data, source="spot.yaml")
