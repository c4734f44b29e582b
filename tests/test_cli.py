"""The `lsm` command line: real subprocesses for exit codes, in-process for speed elsewhere."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lsm.cli import main
from lsm.config import shipped
from lsm.society.store import SCHEMA_VERSION
from lsm.society.store import TraceFile
from lsm.society.world import load_world

CORPUS = Path(__file__).resolve().parents[1] / "data_gen/corpus/n20"
SUBCOMMANDS = ["world", "scenario", "gen", "sensitivity", "evaluate", "rollout", "validate", "bench", "demo", "probe",
               "narrate", "serve", "explore", "recovery", "capacity", "calibrate", "info"]


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
    """`lsm world --backstories true`: the LLM extends every persona (a written one starts with the
    template persona of the same seed), records what it did, and reports the counts. (A backstory
    left out: tests/test_teacher.py::test_llm_backstories_extend_personas.)"""
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
    assert "Backstories: 3 written, 0 left out" in printed and failed == []  # a real LLM asked for two sentences writes words
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
    assert f"world, schema {SCHEMA_VERSION}" in capsys.readouterr().out
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
    assert head[0] == f"{out}: student_rollout, schema {SCHEMA_VERSION}, complete: True"
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


# --------------------------------------------------------------------------- one CLI vocabulary

# Per command: the arguments its parse needs (positionals), and one option whose name has two
# words with a value, as (hyphen spelling, underscore spelling, value); commands whose options are
# all one word show the rewrite on jsonargparse's own `--print-config`.
SPELLINGS = {
    "world": ([], None), "scenario": (["vaccine_campaign"], None), "gen": ([], ("--llm-seed", "--llm_seed", "7")),
    "sensitivity": (["t.h5"], None), "evaluate": ([], ("--held-out", "--held_out", "h.h5")),
    "rollout": ([], ("--agent-chunk", "--agent_chunk", "99")), "validate": ([], None),
    "bench": ([], ("--teacher-agents", "--teacher_agents", "3")), "demo": ([], None), "probe": ([], None),
    "narrate": ([], None), "serve": ([], ("--batch-size", "--batch_size", "3")), "explore": (["x"], None),
    "recovery": ([], ("--held-out-agents", "--held_out_agents", "77")), "capacity": ([], ("--held-out", "--held_out", "77")),
    "calibrate": ([], None),
    "info": (["x.h5"], None),
}


def _printed_config(args, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--print_config"])
    assert stop.value.code in (0, None)
    return capsys.readouterr().out


def test_every_command_is_in_the_spelling_table():
    assert list(SPELLINGS) == SUBCOMMANDS


@pytest.mark.parametrize("command", [*SUBCOMMANDS, "train"])
def test_every_command_accepts_both_spellings_of_a_flag(command, capsys):
    """`--teacher-agents 3` and `--teacher_agents 3` (and `--trainer.default-root-dir`, whose
    rewrite `lsm train` used to skip) parse to the same config, holding the value."""
    from lsm.config import CONFIG_ROOT

    if command == "train":
        head = ["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml")]
        hyphen, underscore, value = "--trainer.default-root-dir", "--trainer.default_root_dir", "out/elsewhere"
    else:
        positionals, flag = SPELLINGS[command]
        head = [command, *positionals]
        if flag is None:  # the rewrite shown on the parser's own two-word option
            with pytest.raises(SystemExit):
                main([*head, "--print-config"])
            assert capsys.readouterr().out == _printed_config(head, capsys)
            return
        hyphen, underscore, value = flag
    a = _printed_config([*head, hyphen, value], capsys)
    b = _printed_config([*head, f"{underscore}={value}"], capsys)
    assert a == b and re.search(rf"^ *{underscore[2:].rpartition('.')[2]}: {re.escape(value)}$", a, re.M), a


def test_old_spellings_work_one_release_with_a_deprecation_line(tmp_path, capsys):
    """`--teacher` for a trace file (validate, probe), `--teacher-repeat` and evaluate's positional
    checkpoint and traces still parse to the new options, each with one line on stderr; `--teacher`
    where it is a teacher config (gen) is not touched."""
    trace_a, trace_b = str(CORPUS / "vaccine_campaign_s0.h5"), str(CORPUS / "vaccine_campaign_s1.h5")
    out = tmp_path / "v.json"
    assert main(["validate", "--teacher", trace_a, "--teacher-repeat", trace_b, "--student", trace_b,
                 "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err.splitlines() == ["lsm validate: --teacher is deprecated for a trace file; use --reference",
                                        "lsm validate: --teacher-repeat is deprecated for a trace file; use --repeat"]
    assert "| decision_jsd_mean | lower |" in printed.out and out.is_file()
    assert main(["validate", "--reference", trace_a, "--repeat", trace_b, "--student", trace_b]) == 0
    assert capsys.readouterr().err == ""

    cfg = yaml.safe_load(_printed_config(["probe", "--ckpt", "c", "--rollout", "r.h5", "--teacher=t.h5"], capsys))
    assert cfg["reference"] == "t.h5"
    cfg = yaml.safe_load(_printed_config(["evaluate", "runs/x", "a.h5,b.h5", "--mlp", "m"], capsys))
    assert (cfg["ckpt"], cfg["held_out"], cfg["mlp"]) == ("runs/x", "a.h5,b.h5", "m")
    _printed_config(["probe", "--teacher", "t.h5"], capsys)
    with pytest.raises(SystemExit):
        main(["evaluate", "runs/x", "a.h5", "--print_config"])
    assert capsys.readouterr().err.splitlines() == [
        "lsm evaluate: the checkpoint as a positional argument is deprecated; use --ckpt",
        "lsm evaluate: the held-out traces as a positional argument is deprecated; use --held_out"]
    with pytest.raises(SystemExit):
        main(["gen", "--teacher", "debug", "--print_config"])
    assert capsys.readouterr().err == ""


def test_every_command_help_gives_each_flag_one_line():
    """`lsm COMMAND --help`: a one-sentence summary and a description of every parameter."""
    import inspect

    from docstring_parser import parse

    from lsm.cli import COMMANDS

    for name, fn in COMMANDS.items():
        doc = parse(fn.__doc__)
        assert doc.short_description and doc.short_description.endswith((".", "?")), (name, doc.short_description)
        described = {p.arg_name: p.description for p in doc.params}
        for param in inspect.signature(fn).parameters:
            assert described.get(param), f"lsm {name} --{param} has no help"
            assert "\n\n" not in described[param], f"lsm {name} --{param}: more than one paragraph"


def test_lsm_train_default_root_dir_moves_checkpoints_and_logs(tmp_path, monkeypatch):
    """`--trainer.default_root_dir X` puts a preset's checkpoints and TensorBoard logs under X (none
    under `runs/`); a second fit into X overwrites `last.ckpt` instead of writing `last-v1.ckpt`."""
    from lsm.config import CONFIG_ROOT

    monkeypatch.chdir(tmp_path)
    data = ["--data.train_files", f"[{CORPUS / 'vaccine_campaign_s0.h5'}]", "--data.val_files", f"[{CORPUS / 'vaccine_campaign_s1.h5'}]"]
    for spelling in ("--trainer.default_root_dir", "--trainer.default-root-dir"):
        assert main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"), spelling, "X",
                     "--trainer.max_epochs", "1", *data]) == 0
    ckpts = tmp_path / "X" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["config.yaml", "last.ckpt", "student-epoch=0.ckpt"]
    assert sorted(p.name for p in (tmp_path / "X" / "tensorboard").iterdir()) == ["version_0", "version_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]


# --------------------------------------------------------------------------- claims of the README

def _small_world(tmp_path, capsys, agents: int = 200, seed: int = 1) -> Path:
    """`lsm world` with the shipped anes96 population: the file (its printed summary is dropped)."""
    out = tmp_path / f"w{agents}_{seed}.h5"
    assert main(["world", "--agents", str(agents), "--seed", str(seed), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _installed_versions() -> dict[str, str]:
    """What the packages this process imported say of themselves (`__version__`, not the
    importlib.metadata the writer uses), and the interpreter's version."""
    import platform

    import h5py
    import lightning
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "lightning": lightning.__version__}


def test_package_versions_written_into_a_file_read_back_as_the_installed_ones(tmp_path, capsys):
    """formats.md: every HDF5 file records `package_versions` (JSON). Read back from a world that
    `lsm world` wrote, it parses and equals the installed versions: the interpreter's and each
    package's own `__version__`, plus importlib.metadata's for lsm and the optional ones; and
    `lsm info` prints exactly the stored JSON."""
    import importlib.metadata as md

    import h5py

    world = _small_world(tmp_path, capsys, agents=20)
    with h5py.File(world) as f:
        stored = json.loads(f.attrs["package_versions"])
    expected = {**_installed_versions(), "lsm": md.version("lsm")}
    for optional in ("datasets", "transformers"):  # recorded where installed
        try:
            expected[optional] = md.version(optional)
        except md.PackageNotFoundError:
            pass
    assert stored == expected
    assert main(["info", str(world)]) == 0
    assert capsys.readouterr().out.splitlines()[3] == f"  packages: {json.dumps(stored)}"


EXPOSURE_LINE = re.compile(r"  tick +(\d+)  event (\d+): ([\d,]+) agents \(([\d.]+)%\)")


def _exposure_rows(text: str) -> dict[int, int]:
    """{event uid: agents reached} from the exposure lines `lsm scenario --world` prints."""
    return {int(m.group(2)): int(m.group(3).replace(",", "")) for m in EXPOSURE_LINE.finditer(text)}


def _reached_by_hand(world: Path, event: dict, uid: int, tick: int, seed: int) -> int:
    """Agents an event without `followers_of` reaches, from its documented definition: every
    `where` attribute in its listed categories, and then `default_rng([seed, uid, tick]).random(N)`
    below `fraction` (docs/formats.md; society/seeds.py, stream EXPOSURE)."""
    pop = load_world(world).population
    rule = event.get("exposure", {})
    mask = np.ones(pop.n, dtype=bool)
    for attr, allowed in rule.get("where", {}).items():
        mask &= np.isin(np.asarray(pop.categories[attr])[pop.categorical[attr]], allowed)
    if rule.get("fraction", 1.0) < 1:
        mask &= np.random.default_rng([seed, uid, tick]).random(pop.n) < rule["fraction"]
    return int(mask.sum())


def test_scenario_seed_moves_only_the_seeded_exposure_draws(tmp_path, capsys):
    """`lsm scenario FILE --world W --seed S`: the seed is printed, the timeline does not depend
    on it, each event's reach equals a count recomputed by hand from the event's rule and the
    seed, a seeded fraction's count changes with the seed, and the same seed prints the same text."""
    world = _small_world(tmp_path, capsys)
    events = yaml.safe_load(shipped("scenarios", "vaccine_campaign.yaml").read_text())["events"]

    def preview(seed: int) -> str:
        assert main(["scenario", "vaccine_campaign", "--world", str(world), "--seed", str(seed)]) == 0
        return capsys.readouterr().out

    texts = {seed: preview(seed) for seed in (0, 7)}
    assert preview(7) == texts[7]
    for seed, text in texts.items():
        timeline, _, exposure = text.partition(f"\nExposure on {world} (200 agents, seed {seed}):\n")
        assert exposure, text
        assert timeline == texts[0].partition("\nExposure on")[0]
        rows = _exposure_rows(exposure)
        assert sorted(rows) == list(range(len(events)))
        for uid, event in enumerate(events):
            if "followers_of" not in event.get("exposure", {}):
                assert rows[uid] == _reached_by_hand(world, event, uid, event["tick"], seed), (seed, uid)
    a, b = _exposure_rows(texts[0]), _exposure_rows(texts[7])
    assert [a[uid] != b[uid] for uid in (0, 2, 3)] == [True, True, True], (a, b)  # each draws a fraction


def _gen_planted(world: Path, out: Path, capsys, *extra: str) -> str:
    """`lsm gen` with the planted teacher (no LLM) on the vaccine campaign: what it printed."""
    assert main(["gen", "--world", str(world), "--scenario", "vaccine_campaign", "--teacher", "planted",
                 "--out", str(out), "--quiet", "true", *extra]) == 0
    return capsys.readouterr().out


def test_gen_llm_seed_and_profile_from_the_cli_without_an_llm(tmp_path, capsys):
    """`lsm gen --llm_seed L` reaches the policy's own draws and the file, checked with the planted
    teacher (no LLM): the seeds recorded are the ones given (L defaults to --seed: that run equals
    `--llm_seed` = seed bit for bit); another L keeps the scenario's draws (exposures, shown
    neighbours) and changes the decisions. `--profile true` prints the profile's line (a planted
    run records none) just before the `Written:` line; without it there is none."""
    world = _small_world(tmp_path, capsys)
    plain = _gen_planted(world, tmp_path / "a.h5", capsys, "--seed", "3")
    _gen_planted(world, tmp_path / "b.h5", capsys, "--seed", "3", "--llm_seed", "3")
    profiled = _gen_planted(world, tmp_path / "c.h5", capsys, "--seed", "3", "--llm_seed", "9", "--profile", "true")
    runs = {}
    for name in ("a", "b", "c"):
        with TraceFile(tmp_path / f"{name}.h5") as tf:
            runs[name] = {"seeds": tf.seeds, **{k: tf.array(k) for k in ("decision", "exposed_events", "shown_neighbors")}}
    assert [runs[n]["seeds"] for n in "abc"] == [{"world_seed": 1, "teacher": 3, "llm": 3}] * 2 + [
        {"world_seed": 1, "teacher": 3, "llm": 9}]
    for key in ("decision", "exposed_events", "shown_neighbors"):
        np.testing.assert_array_equal(runs["a"][key], runs["b"][key], err_msg=key)
    np.testing.assert_array_equal(runs["a"]["exposed_events"], runs["c"]["exposed_events"])
    np.testing.assert_array_equal(runs["a"]["shown_neighbors"], runs["c"]["shown_neighbors"])
    assert (runs["a"]["decision"] != runs["c"]["decision"]).mean() > 0.05
    profile = "profile: none recorded (a planted run, or a run resumed from an older journal)"
    assert profile not in plain and profiled.splitlines().count(profile) == 1
    written = tmp_path / "c.h5"
    assert profiled.splitlines()[-2:] == [profile, f"Written: {written} ({written.stat().st_size / 2**20:.1f} MiB)"]
