"""Property-based fuzzing of every config family's loader.

Each example starts from a shipped config, applies a few random mutations (type swaps, extreme
and non-finite numbers, huge, empty and hostile unicode strings, deleted, duplicated and nested
keys), writes the YAML file and loads it the way the command line does. The property: the file
either loads into a valid object that the command can use (a scenario prints its timeline; a
population samples 20 agents) or raises the one error type, `ConfigError`, whose message names
the file and is printable — never another exception, within a time bound (hypothesis' deadline) and a memory bound (the process's peak RSS).

`LSM_FUZZ_EXAMPLES` sets the examples per family (CI: 300; `make fuzz`: 1,000). Run with
`pytest -s` to see the count of examples and of distinct error messages per family.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsm.config import CONFIG_ROOT, ConfigError, load_config
from lsm.data_gen.planted.config import PlantedConfig
from lsm.society.scenario import load_scenario, timeline
from lsm.data_gen.teacher.config import TeacherConfig
from lsm.society.world.graph import load_graph_config
from lsm.society.world.population import load_population_config, sample_population

EXAMPLES = int(os.environ.get("LSM_FUZZ_EXAMPLES", "300"))
MEMORY_BOUND = 512 << 20
"""How far the process's peak resident memory may grow over the whole family's examples (the
documents are at most 1 MiB; an unbounded alias expansion would take gigabytes)."""


def _peak_rss() -> int:
    """The process's peak resident set size in bytes (Linux reports KiB): free to read, unlike tracemalloc."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _use_scenario(path: Path) -> None:
    text = timeline(load_scenario(path))
    assert all(ch.isprintable() or ch == "\n" for ch in text), "the timeline prints a control character"


def _use_population(path: Path) -> None:
    cfg = load_population_config(path)
    pop = sample_population(cfg, 20, seed=0)
    assert len(pop.names) == 20


FAMILIES: dict[str, tuple[list[Path], Callable[[Path], Any]]] = {
    "scenarios": (sorted((CONFIG_ROOT / "scenarios").glob("*.yaml")), _use_scenario),
    "population": (sorted((CONFIG_ROOT / "population").glob("*.yaml")), _use_population),
    "graph": (sorted((CONFIG_ROOT / "graph").glob("*.yaml")), load_graph_config),
    "teacher": ([p for p in sorted((CONFIG_ROOT / "teacher").glob("*.yaml")) if "planted" not in p.name],
                lambda p: load_config(TeacherConfig, p, kind="teacher config")),
    "planted": (sorted((CONFIG_ROOT / "teacher").glob("planted*.yaml")),
                lambda p: load_config(PlantedConfig, p, kind="planted society config")),
}

HOSTILE_TEXT = st.sampled_from([
    "", " ", "x" * 30_000, "a\x00b", "\u202eevil", "\x1b[31mred", "line\r\nbreak", "tab\tok", "\ud7ff\ue000",
    "ünïcödé ✓ 漢字", "{placeholder}", "{0}", "{", "..", "a/b", "%s%n", "\U0001f600" * 300,
])
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 101, 10**9, 10**11, 1e-300, 1e300, -0.0, 0.5, 1.0000001]),
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
        elif op == "number":
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
    _, use = FAMILIES[family]
    seen: Counter = MESSAGES.setdefault(family, Counter())
    counts = Counter()
    baseline = _peak_rss()

    @settings(max_examples=EXAMPLES, deadline=10_000, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=mutated(family))
    def check(case):
        text, what = case
        path = folder / "fuzzed.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            use(path)
            counts["loaded"] += 1
        except ConfigError as err:
            counts["refused"] += 1
            message = str(err)
            assert str(path) in message, f"the message does not name the file ({what}): {message[:300]}"
            assert message.isprintable(), f"the message prints a control character ({what}): {message[:300]!r}"
            assert len(message) < 20_000, f"a {len(message):,}-character message ({what})"
            seen[_template(message.split(":", 1)[1])] += 1
        grown = _peak_rss() - baseline
        assert grown < MEMORY_BOUND, f"the process's peak memory grew {grown / 2**20:.0f} MiB loading one file ({what})"

    check()
    print(f"\nfuzz {family}: {sum(counts.values())} examples, {counts['loaded']} loaded, {counts['refused']} refused "
          f"with {len(seen)} distinct messages, 0 other exceptions")
    assert counts["refused"] > 0 and sum(counts.values()) >= min(EXAMPLES, 50)


def test_a_non_finite_number_is_refused_with_its_field_path():
    path = Path(CONFIG_ROOT / "scenarios" / "vaccine_campaign.yaml")
    data = yaml.safe_load(path.read_text())
    data["events"][0]["exposure"] = {"fraction": float("inf")}
    from lsm.society.scenario import scenario_from_dict

    with pytest.raises(ConfigError, match=r"events\[0\]\.exposure\.fraction' = inf: expected a finite number"):
        scenario_from_dict(data, source="spot.yaml")
