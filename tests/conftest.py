"""Shared fixtures: small worlds built once per test session (the `debug` sizes)."""
from __future__ import annotations

import pytest

from lsm.config import shipped
from lsm.data_gen.world import build_world, save_world


@pytest.fixture(scope="session")
def anes_world():
    return build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=3000, seed=0)


@pytest.fixture(scope="session")
def generic_world():
    return build_world(shipped("population", "generic.yaml"), shipped("graph", "default.yaml"), agents=3000, seed=1)


@pytest.fixture(scope="session")
def world_file(tmp_path_factory, anes_world):
    path = tmp_path_factory.mktemp("world") / "world.h5"
    save_world(anes_world, path)
    return path
