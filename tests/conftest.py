"""Shared fixtures: a debug student trained on the reference corpus and a world it never saw."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lsm.config import CONFIG_ROOT
from lsm.data_gen.world import build_world, save_world

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data_gen/corpus/n20"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(folder, checkpoint folder, world file): a debug student (1 epoch on one corpus file) and a
    60-agent world it never saw."""
    from lsm.cli import main

    tmp = tmp_path_factory.mktemp("trained")
    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        assert main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"), "--trainer.max_epochs", "1",
                     "--data.train_files", f"[{CORPUS / 'vaccine_campaign_s0.h5'}]",
                     "--data.val_files", f"[{CORPUS / 'vaccine_campaign_s1.h5'}]"]) == 0
    finally:
        os.chdir(cwd)
    world = tmp / "w60.h5"
    save_world(build_world(CONFIG_ROOT / "population/anes96.yaml", CONFIG_ROOT / "graph/default.yaml", 60, 7), world)
    return tmp, tmp / "runs/debug/checkpoints", world
