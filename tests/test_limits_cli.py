"""Each count and text length of a scenario or population that docs/limits.md states, through the
real command line: a shipped file with one field set AT the limit is accepted (exit 0), ONE PAST it
is refused in one paragraph naming the file, the field and the value (exit 2, no traceback).

The limits are spelled here as the documentation states them, not read from `lsm.limits`: a
constant changed by one must fail this test, not move it along. Scenarios go through
`lsm scenario FILE` (validates and prints the timeline); a population through `lsm world` on 20
agents, the cheapest command that validates one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from lsm.cli import main
from lsm.config import shipped


def _ticks(d: dict, n: int) -> None:
    d["ticks"] = n


def _events_at_tick_0(d: dict, n: int) -> None:
    d["events"] = [{**d["events"][0], "tick": 0, "text": f"announcement {i}"} for i in range(n)]


def _scheduled_events(d: dict, n: int) -> None:
    d["ticks"] = -(-n // 8)  # 8 a tick, the most allowed, so only the total is at its limit
    d["events"] = [{**d["events"][0], "tick": i // 8, "text": f"announcement {i}"} for i in range(n)]


def _triggers(d: dict, n: int) -> None:
    d["triggers"] = [{**d["triggers"][0], "name": f"trigger_{i}"} for i in range(n)]


def _options(d: dict, n: int) -> None:
    options = d["actions"]["options"]  # the shipped ones stay: the triggers measure their shares
    options += [{"name": f"option_{i}"} for i in range(len(options), n)]


def _channels(d: dict, n: int) -> None:
    d["channels"] = [{"name": f"channel_{i}", "description": f"channel {i}"} for i in range(n)]


def _attributes(d: dict, n: int) -> None:
    attributes = d["attributes"]
    attributes.update({f"extra_{i}": {"type": "numeric", "dist": "uniform", "min": 0, "max": 1}
                       for i in range(len(attributes), n)})


def _categories(d: dict, n: int) -> None:
    d["attributes"]["region"]["categories"] = {f"region_{i}": 1 for i in range(n)}  # no table or correlation uses region


def _text(*path: Any, char: str) -> Callable[[dict, int], None]:
    """Sets the text field at `path` to `n` copies of `char`."""
    def edit(d: dict, n: int) -> None:
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = char * n
    return edit


# (documented limit, edit, family, field in the message, the value as the message shows it one past, what it expects)
LIMITS: dict[str, tuple[int, Callable[[dict, int], None], str, str, str, str]] = {
    "ticks": (1_000, _ticks, "scenarios", "ticks", "1001", "a number of ticks from 1 to 1,000"),
    "events per tick": (8, _events_at_tick_0, "scenarios", "events", "'9 events at tick 0'",
                        "at most 8 scheduled events per tick"),
    "scheduled events": (1_000, _scheduled_events, "scenarios", "events", "'1,001 events'",
                         "at most 1,000 scheduled events"),
    "triggers": (64, _triggers, "scenarios", "triggers", "'65 triggers'", "at most 64 triggers"),
    "options": (64, _options, "scenarios", "actions.options", "'65 options'", "at most 64 options"),
    "channels": (32, _channels, "scenarios", "channels", "'33 channels'", "at most 32 channels"),
    "attributes": (256, _attributes, "population", "attributes", "'257 attributes'", "at most 256 attributes"),
    "categories": (1_000, _categories, "population", "attributes.region.categories", "'1,001 categories'",
                   "at most 1,000 categories"),
    "name": (64, _text("name", char="n"), "scenarios", "name", "'" + "n" * 56 + "...", "a name of 1 to 64 characters"),
    "label": (200, _text("events", 0, "source", char="s"), "scenarios", "events[0].source", "'" + "s" * 56 + "...",
              "a text of at most 200 characters (this one has 201)"),
    "event text": (1_000, _text("events", 0, "text", char="t"), "scenarios", "events[0].text", "'" + "t" * 56 + "...",
                   "a text of at most 1,000 characters (this one has 1,001)"),
    "context": (4_000, _text("context", char="c"), "scenarios", "context", "'" + "c" * 56 + "...",
                "a text of at most 4,000 characters (this one has 4,001)"),
    "question": (500, _text("question", char="q"), "scenarios", "question", "'" + "q" * 56 + "...",
                 "a text of at most 500 characters (this one has 501)"),
}
SHIPPED = {"scenarios": "vaccine_campaign.yaml", "population": "generic.yaml"}


def _file(folder: Path, family: str, edit: Callable[[dict, int], None], n: int) -> Path:
    """The shipped file of `family` with one field set by `edit(data, n)`."""
    data = yaml.safe_load(shipped(family, SHIPPED[family]).read_text())
    edit(data, n)
    path = folder / f"{family}_{n}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6))
    return path


def _command(family: str, path: Path, folder: Path) -> list[str]:
    if family == "scenarios":
        return ["scenario", str(path)]
    return ["world", "--population", str(path), "--agents", "20", "--out", str(folder / "w.h5")]


@pytest.mark.parametrize("limit", list(LIMITS))
def test_a_limit_is_accepted_at_its_value_and_refused_one_past_it(limit, tmp_path, capsys):
    n, edit, family, field, shown, expected = LIMITS[limit]
    at = _file(tmp_path, family, edit, n)
    rc = main(_command(family, at, tmp_path))
    err = capsys.readouterr().err
    assert rc == 0, f"{limit} = {n} (the documented limit) was refused: {err[:400]}"

    past = _file(tmp_path, family, edit, n + 1)
    rc = main(_command(family, past, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2, f"{limit} = {n + 1} (one past the documented limit): exit {rc}, stderr {err[:300]!r}"
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"Invalid {'scenario' if family == 'scenarios' else 'population config'} {past}: 1 problem." in err, err
    assert f"field '{field}' = {shown}: expected {expected}." in err, err
