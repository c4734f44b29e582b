"""The `lsm` command line: real subprocesses for exit codes, in-process for speed elsewhere."""
from __future__ import annotations

import subprocess
import sys

import yaml

from lsm.cli import main
from lsm.config import shipped
from lsm.data_gen.store import TraceFile  # noqa: F401  (import check)
from lsm.data_gen.world import load_world


def test_world_command_writes_world_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "w.h5"
    assert main(["world", "--population", "configs/population/anes96.yaml", "--graph", "configs/graph/default.yaml",
                 "--agents", "400", "--seed", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("400 agents", "Attribute marginals", "Incoming degree per edge type", "friend", "Homophily",
                   "Build time", "peak memory"):
        assert needle in text
    assert load_world(out).n == 400


def test_scenario_command_prints_timeline_and_exposure(world_file, capsys):
    assert main(["scenario", "vaccine_campaign", "--world", str(world_file)]) == 0
    text = capsys.readouterr().out
    assert "valid." in text and "tick   1" in text and "Exposure on" in text


def test_malformed_scenario_exits_nonzero_with_readable_error(tmp_path):
    data = yaml.safe_load(shipped("scenarios", "guessing_game.yaml").read_text())
    data["events"][0]["credibility"] = 7
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "lsm", "scenario", str(f)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"Invalid scenario {f}" in proc.stderr and "'events[0].credibility' = 7" in proc.stderr


def test_info_and_bad_file(world_file, tmp_path, capsys):
    assert main(["info", str(world_file)]) == 0
    assert "world, schema 1.0" in capsys.readouterr().out
    junk = tmp_path / "junk.h5"
    junk.write_text("nope")
    assert main(["info", str(junk)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "lsm", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "world" in proc.stdout and "scenario" in proc.stdout
