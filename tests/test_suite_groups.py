"""The test suite's own layout under two workers (`make test`: pytest-xdist, a module per worker):
every module that uses an expensive session fixture runs on the worker that builds it, so no
fixture is built twice (a recovery is two minutes on one core)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import LONGEST_FIRST, SHARED_GROUPS

TESTS = Path(__file__).resolve().parent
EXPENSIVE = ("recovered", "demo_dir", "rollout_20k")
"""Session fixtures that cost a minute or more: a known-answer recovery, the demo, a 20,000-agent rollout."""


def _users(fixture: str) -> set[str]:
    """The test modules with a test or a fixture that asks for `fixture` by name."""
    found = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and fixture in {a.arg for a in node.args.args}:
                found.add(path.stem)
    return found


def test_every_expensive_fixture_is_built_by_one_worker():
    for fixture in EXPENSIVE:
        users = _users(fixture)
        assert users, f"no test uses {fixture}: drop it from EXPENSIVE"
        groups = {SHARED_GROUPS.get(m, m) for m in users}
        assert len(groups) == 1, f"{fixture} is used by {sorted(users)}: put them in one of SHARED_GROUPS"


def test_the_longest_modules_exist_and_a_group_is_listed_together():
    names = {p.stem for p in TESTS.glob("test_*.py")}
    assert set(LONGEST_FIRST) <= names, set(LONGEST_FIRST) - names
    for group in set(SHARED_GROUPS.values()):
        at = [k for k, m in enumerate(LONGEST_FIRST) if SHARED_GROUPS.get(m) == group]
        assert at == list(range(at[0], at[0] + len(at))) if at else True, group  # adjacent: one work unit, not split by others
