"""The `lsm` command line: real subprocesses for exit codes, in-process for speed elsewhere."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from lsm.cli import main
from lsm.config import shipped
from lsm.society.store import TraceFile  # noqa: F401  (import check)
from lsm.society.world import load_world

CORPUS = Path(__file__).resolve().parents[1] / "data_gen/corpus/n20"
SUBCOMMANDS = ["world", "scenario", "gen", "sensitivity", "evaluate", "rollout", "validate", "bench", "demo", "probe",
               "narrate", "serve", "explore", "recovery", "info"]


def test_world_command_writes_world_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "w.h5"
    assert main(["world", "--population", "configs/population/anes96.yaml", "--graph", "configs/graph/default.yaml",
                 "--agents", "400", "--seed", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("400 agents", "Attribute marginals", "Incoming degree per edge type", "friend", "Homophily",
                   "Build time", "peak memory"):
        assert needle in text
    assert load_world(out).n == 400


def test_world_backstories_from_the_cli(tmp_path, capsys):
    """`lsm world --backstories true`: the LLM extends every persona it can (a written one starts
    with the template persona of the same seed), records what it did, and reports the counts."""
    import h5py

    from lsm.society.world import build_world
    from lsm.society.world.backstory import META_PROMPTS

    out = tmp_path / "b.h5"
    assert main(["world", "--population", "anes96", "--graph", "default", "--agents", "3", "--seed", "5", "--out", str(out),
                 "--backstories", "true", "--teacher", "debug"]) == 0
    printed = capsys.readouterr().out
    template = build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=3, seed=5).population.persona
    with h5py.File(out) as f:
        failed = json.loads(f["population"].attrs["backstories"])["failed"]
        prompts = f["population/backstory_prompt"][()]
    assert f"Backstories: {3 - len(failed)} written, {len(failed)} left out" in printed and len(failed) < 3
    assert set(prompts.tolist()) <= set(range(len(META_PROMPTS)))
    pop = load_world(out).population
    for i, (p, t) in enumerate(zip(pop.persona, template)):
        assert p == t if i in failed else (p.startswith(t + " ") and len(p) > len(t) + 10), (i, p, t)
        assert pop.backstory is not None and p == f"{t} {pop.backstory[i]}".strip()
    # the student's persona input is embedded once, at `lsm world`, and stored with the world:
    # equal to a fresh embedding of each backstory within float16 rounding; zeros where none
    from lsm.society.embed import persona_features, shared_encoder

    stored = persona_features(pop)
    assert pop.backstory_emb is not None and stored.shape == (3, 384) and "Backstories embedded:" in printed
    for i, text in enumerate(pop.backstory):
        fresh = shared_encoder().encode([text])[0] if text else np.zeros(384, np.float16)
        np.testing.assert_allclose(stored[i].astype(np.float32), fresh.astype(np.float32), atol=2e-3)


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


def test_console_script_help(tmp_path):
    """The installed `lsm` entry point (not `python -m lsm`), run outside the repository, lists
    every subcommand."""
    proc = subprocess.run([str(Path(sys.executable).parent / "lsm"), "--help"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: lsm ")
    assert re.search(r"\{([\w,]+)\}", proc.stdout).group(1).split(",") == SUBCOMMANDS
    assert "`lsm train {fit,validate,test}" in proc.stdout  # LightningCLI's own parser, named in the help


def _info(file, capsys) -> tuple[list[str], dict, dict[str, str]]:
    """`lsm info FILE`: (header lines, dims, {field: shape})."""
    assert main(["info", str(file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    m = re.fullmatch(r"  agents: (\d+), ticks: (\d+), dims: (\{.*\})", lines[4])
    dims = {"agents": int(m.group(1)), "ticks": int(m.group(2)), **json.loads(m.group(3))}
    fields = dict(re.match(r"  (\w+) +(\([\d, ]+\))", line).groups() for line in lines[6:])
    return [*lines[:4], lines[5]], dims, fields


def test_info_on_a_teacher_trace(capsys):
    """The shipped 20-agent, 8-tick vaccine-campaign trace, teacher and LLM seed 0."""
    path = CORPUS / "vaccine_campaign_s0.h5"
    head, dims, fields = _info(path, capsys)
    assert head[0] == f"{path}: teacher_trace, schema 1.0, complete: True"
    assert json.loads(head[1].removeprefix("  seeds: ")) == {"world_seed": 0, "teacher": 0, "llm": 0}
    assert head[2] == "  configs: graph, population, scenario, teacher"
    assert head[4] == "  scenario: vaccine_campaign, actions: vaccinate, wait, refuse"
    assert dims == {"agents": 20, "ticks": 8, "N": 20, "A": 3, "C": 8, "R": 11, "D": 384, "K": 4, "E": 4}
    assert fields["decision"] == "(8, 20)" and fields["decision_dist"] == "(8, 20, 3)"
    assert fields["channels"] == "(8, 20, 8)" and fields["channel_dist"] == "(8, 20, 8, 11)"
    assert fields["expression_emb"] == fields["reasoning_emb"] == "(8, 20, 384)"
    assert fields["shown_neighbors"] == "(8, 20, 4)" and fields["exposed_events"] == "(8, 20, 4)"
    assert len(fields) == 19 and all(shape.startswith("(8, 20") for shape in fields.values())


def test_info_on_a_student_rollout(trained, tmp_path, capsys):
    """A 2-tick rollout of the debug student on the unseen 60-agent world (world seed 7, seed 0),
    with the optional latent and memory fields."""
    _, ckpt, world = trained
    out = tmp_path / "R.h5"
    assert main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign",
                 "--out", str(out), "--ticks", "2", "--quiet", "true", "--store", "latent,memory"]) == 0
    capsys.readouterr()
    head, dims, fields = _info(out, capsys)
    assert head[0] == f"{out}: student_rollout, schema 1.0, complete: True"
    assert json.loads(head[1].removeprefix("  seeds: ")) == {"world_seed": 7, "seed": 0}
    assert head[2] == "  configs: graph, population, rollout, scenario, student"
    assert head[4] == "  scenario: vaccine_campaign, actions: vaccinate, wait, refuse"
    # Z and H: the debug student's latent_dim 8 and memory_dim 16 (configs/train/debug.yaml)
    assert dims == {"agents": 60, "ticks": 2, "N": 60, "A": 3, "C": 8, "R": 11, "D": 384, "K": 4, "E": 4,
                    "Z": 8, "H": 16}
    assert fields["decision"] == "(2, 60)" and fields["channels"] == "(2, 60, 8)"
    assert fields["latent"] == "(2, 60, 8)" and fields["memory"] == "(2, 60, 16)"
    assert len(fields) == 10 and all(shape.startswith("(2, 60") for shape in fields.values())
    assert "expression_emb" not in fields and "reasoning_emb" not in fields  # not asked for
