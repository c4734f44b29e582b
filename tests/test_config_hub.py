"""Every shipped config parses, and every name in it resolves (litgpt's test_config_hub)."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import yaml

from lsm.config import CONFIG_ROOT, shipped, to_dict
from lsm.society.world.graph import load_graph_config
from lsm.society.world.population import load_population_config
from lsm.society.scenario import check_against_world, load_scenario
from lsm.society.world import build_world

POPULATIONS = sorted((CONFIG_ROOT / "population").glob("*.yaml"))
GRAPHS = sorted((CONFIG_ROOT / "graph").glob("*.yaml"))
SCENARIOS = sorted((CONFIG_ROOT / "scenarios").glob("*.yaml"))


def test_required_configs_are_shipped():
    names = {p.stem for p in SCENARIOS}
    assert {"vaccine_campaign", "policy_announcement", "product_adoption", "guessing_game"} <= names
    assert {"generic", "anes96"} <= {p.stem for p in POPULATIONS}
    assert shipped("graph", "default.yaml").is_file()


@pytest.mark.parametrize("path", POPULATIONS, ids=lambda p: p.stem)
def test_population_parses(path):
    cfg = load_population_config(path)
    assert cfg.name == path.stem


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_parses(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert len(sc.channel_names) >= 1 and sc.actions.n >= 2


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda p: p.stem)
@pytest.mark.parametrize("population", POPULATIONS, ids=lambda p: p.stem)
def test_every_graph_resolves_on_every_population(population, graph):
    """Every attribute a graph config names exists in every shipped population, and every
    scenario's exposure rules resolve against the resulting world."""
    load_graph_config(graph)
    w = build_world(population, graph, agents=200, seed=0)
    assert w.graph.num_edges > 0
    for path in SCENARIOS:
        check_against_world(load_scenario(path), w.population, w.graph, source=path)


TEACHERS = sorted((CONFIG_ROOT / "teacher").glob("*.yaml"))
PLANTED = [p for p in TEACHERS if p.stem.startswith("planted")]


def _assert_parsed_as_written(parsed, raw, where):
    """Every key the YAML sets has the YAML's value in the parsed dataclass; a field it leaves out
    keeps the dataclass default."""
    default = type(parsed)()
    for f in dataclasses.fields(parsed):
        want = raw[f.name] if f.name in raw else to_dict(getattr(default, f.name))
        got = to_dict(getattr(parsed, f.name))
        if dataclasses.is_dataclass(getattr(parsed, f.name)) and isinstance(want, dict):
            _assert_parsed_as_written(getattr(parsed, f.name), want, f"{where}.{f.name}")
        else:
            assert got == want, f"{where}.{f.name}: parsed {got!r}, YAML says {want!r}"


@pytest.mark.parametrize("path", [p for p in TEACHERS if p not in PLANTED], ids=lambda p: p.stem)
def test_teacher_config_parses(path):
    """The parsed teacher config holds what the YAML says, the backend section field by field."""
    from lsm.config import load_config
    from lsm.data_gen.teacher.config import TeacherConfig

    assert {"embedded", "debug", "openai", "vllm", "planted", "planted_null"} <= {p.stem for p in TEACHERS}
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(TeacherConfig, path)
    assert cfg.backend == raw["backend"] and isinstance(raw[cfg.backend], dict)
    _assert_parsed_as_written(getattr(cfg, cfg.backend), raw[cfg.backend], f"{path.name}: {cfg.backend}")
    _assert_parsed_as_written(cfg, raw, path.name)


@pytest.mark.parametrize("path", PLANTED, ids=lambda p: p.stem)
def test_planted_config_parses_and_every_name_resolves(path):
    """Every attribute, category, action label and channel a planted config names exists in a
    shipped population or scenario: a misspelt name would silently contribute nothing."""
    from lsm.config import load_config
    from lsm.data_gen.gen import is_planted
    from lsm.data_gen.planted.config import PlantedConfig
    from lsm.society.scenario import DEFAULT_CHANNELS

    assert is_planted(path)
    cfg = load_config(PlantedConfig, path)
    pops = [build_world(p, GRAPHS[0], agents=50, seed=0).population for p in POPULATIONS]
    for attr, effects in {**cfg.identity, **({cfg.conformity_attribute: cfg.conformity} if cfg.conformity_attribute else {})}.items():
        known = set().union(*(p.categories.get(attr, []) for p in pops))
        assert known, f"{path.name}: attribute {attr} is in no shipped population"
        assert set(effects) <= known, f"{path.name}: {attr} categories {set(effects) - known} exist nowhere"
    assert set(cfg.identity_numeric) <= set().union(*(p.numeric for p in pops))
    labels = set().union(*(load_scenario(s).actions.labels for s in SCENARIOS))
    assert set(cfg.action_bias) | set(cfg.action_lean) <= labels
    channels = {c for c, _ in DEFAULT_CHANNELS}
    assert set(cfg.channel_loading) | set(cfg.channel_bias) <= channels


ROOT = Path(__file__).resolve().parents[1]
TRAIN_PRESETS = sorted((CONFIG_ROOT / "train").glob("*.yaml"))
TRAIN_OVERLAYS = sorted((CONFIG_ROOT / "train" / "overlay").glob("*.yaml"))
TRAIN_RUNS = [[p] for p in TRAIN_PRESETS] + [[p, o] for o in TRAIN_OVERLAYS for p in TRAIN_PRESETS]


def test_every_training_config_is_covered():
    """No training config hides in a folder the parse test below does not read."""
    assert {"debug", "small", "base"} <= {p.stem for p in TRAIN_PRESETS} and TRAIN_OVERLAYS
    assert set((CONFIG_ROOT / "train").rglob("*.y*ml")) == set(TRAIN_PRESETS) | set(TRAIN_OVERLAYS)


def _merge(base: dict, over: dict) -> dict:
    """A later --config over an earlier one: mappings merge key by key, anything else (a list of
    callbacks) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("configs", TRAIN_RUNS, ids=lambda cs: "+".join(c.stem for c in cs))
def test_training_config_parses_as_lsm_train_fit(configs, monkeypatch):
    """`lsm train fit --config PRESET [--config OVERLAY]` through the real CLI, with the fit itself
    stubbed out: every class path resolves and every value set in the YAML (merged in order) is
    the value of the object the CLI built."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lsm.cli import main

    built = []

    def no_fit(trainer, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, *_):
        built.append((trainer, model, datamodule))

    monkeypatch.setattr(Trainer, "_fit_impl", no_fit)
    monkeypatch.chdir(ROOT)  # presets name the corpus relative to the repository
    monkeypatch.setattr("sys.argv", ["lsm"])  # LightningCLI warns when pytest's own arguments are there too
    assert main(["train", "fit", *[a for c in configs for a in ("--config", str(c))]]) == 0
    (trainer, model, data), = built
    want: dict = {}
    for c in configs:
        want = _merge(want, yaml.safe_load(c.read_text()))

    def leaves(d: dict, prefix: str = "model"):  # model.student.dim -> 64
        for k, v in d.items():
            yield from leaves(v, f"{prefix}.{k}") if isinstance(v, dict) else [(f"{prefix}.{k}", v)]

    for k, v in leaves(want["model"]):
        got = model.hparams
        for part in k.split(".")[1:]:
            got = got[part]
        assert got == v, f"{k}: {got!r}, YAML says {v!r}"
    assert data.train_files == want["data"]["train_files"] and data.val_files == want["data"]["val_files"]
    assert data.train_paths and data.val_paths and all(Path(p).is_file() for p in data.train_paths + data.val_paths)
    t = want["trainer"]
    assert (trainer.max_epochs, trainer.default_root_dir, trainer.log_every_n_steps) == (
        t["max_epochs"], t["default_root_dir"], t["log_every_n_steps"])
    # the presets name no logger and no checkpoint folder: both follow default_root_dir (lsm.train.cli)
    logger = trainer.logger
    assert "logger" not in t and isinstance(logger, TensorBoardLogger)
    assert (logger.save_dir, logger.name) == (t["default_root_dir"], "tensorboard")
    checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    assert len(checkpoints) == len(t["callbacks"])  # an overlay replaces the list, never appends to it
    for cb, spec in zip(checkpoints, t["callbacks"]):
        assert isinstance(cb, _resolve(spec["class_path"]))
        a = spec["init_args"]
        assert "dirpath" not in a and cb.dirpath == str(ROOT / t["default_root_dir"] / "checkpoints")
        assert (cb.filename, cb.save_last, cb.monitor, cb.mode, cb._enable_version_counter) == (
            a["filename"], a["save_last"], a["monitor"], a["mode"], False)
