"""`lsm recovery`: the known-answer distillation experiment, end to end.

For each training size: a training world and one shared held-out world (other seeds); planted
traces on both (the held-out one with two noise seeds: the second is the process's own floor),
and the null variant (no influence); the student, the identity-only model (no graph) and a
student of the null variant trained on the training world; then, on the held-out world,
everything `metrics.py` measures. Every step is skipped when its output exists (resume).

Layout of DIR: `worlds/`, `traces/`, `students/<name>_n<N>/last.ckpt`, `rollouts/`, `recovery.json`.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import yaml

from lsm.config import read_yaml, resolve_config
from lsm.data_gen.gen import generate
from lsm.data_gen.make_world import make_world
from lsm.model.society import StudentConfig
from lsm.recovery.metrics import measure
from lsm.society import seeds
from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule

HELD_OUT_SEED, TRAIN_SEED = 2, 1
"""World seeds: the held-out world is never trained on."""


@dataclass
class RecoveryConfig:
    agents: list[int] = field(default_factory=lambda: [2000])
    """Training-world sizes (one row of the scaling curve each)."""
    held_out_agents: int = 2000
    scenario: str = "vaccine_campaign"
    planted: str = "planted"
    """The planted configuration (a path or a shipped name); its null variant sets `dose: 0`."""
    epochs: int = 60
    max_agents: int = 10000
    """Train on sampled subgraphs of at most this many seed agents (bigger worlds)."""
    samples: int = 2
    """Paired draws of the student's stochastic latents per replay."""
    train_variants: int = 0
    """Extra training traces on copies of the scenario whose events' credibilities are drawn
    uniformly in 0.1..1 (seeded): with one scenario, an event's credibility is one number per
    event, confounded with its text, and its effect cannot be learned."""
    seed: int = 0
    preset: str = "small"
    """The training preset (a shipped name or a path) whose student is trained: its `model.student`
    block (`StudentConfig`, the one definition of the student's size; `small`: the reference size
    on a CPU). The training knobs are `DistillModule`'s defaults, with `training` applied."""
    student: dict[str, Any] = field(default_factory=dict)
    """Overrides of the preset's student (`StudentConfig` fields), e.g. {"agent_noise": 0}."""
    training: dict[str, Any] = field(default_factory=dict)
    """Overrides of the training knobs (`DistillModule` arguments besides `student`), e.g. {"bptt": 8}."""


class Steps:
    """Run-or-skip steps with one progress line each."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def __call__(self, what: str, out: Path, fn: Callable[[], Any]) -> Path:
        if out.exists():
            self.say(f"  [skip] {what}: {out} exists")
            return out
        t0 = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        fn()
        self.say(f"  {what}: {time.perf_counter() - t0:.1f} s")
        return out


def planted_variant(cfg_path: Path, out: Path, **changes: Any) -> Path:
    data = read_yaml(cfg_path, kind="planted society config")
    data.update(changes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def scenario_variant(sc_path: Path, out: Path, edit: Callable[[dict], None]) -> Path:
    data = read_yaml(sc_path, kind="scenario")
    edit(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def jitter_credibility(data: dict, seed: int) -> None:
    """Draw every event's credibility uniformly in 0.1..1 (a scenario variant for training)."""
    rng = seeds.rng(seed, seeds.Stream.CREDIBILITY_JITTER)
    for ev in data.get("events", []):
        ev["credibility"] = round(float(rng.uniform(0.1, 1.0)), 3)


def train_student(train_files: list[Path], out: Path, epochs: int, max_agents: int, seed: int, student: StudentConfig,
                  **training: Any) -> float:
    """Train `student` (Lightning; `training`: `DistillModule`'s training knobs) on planted traces
    and save `out` (a checkpoint with everything a rollout needs). Returns seconds per epoch."""
    import logging
    import warnings

    import lightning as L


    for name in ("lightning.pytorch", "lightning.fabric"):  # one line per step is what this command prints
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")

    L.seed_everything(seed, verbose=False)
    dm = TraceDataModule([str(p) for p in train_files], max_agents=max_agents, seed=seed)
    module = DistillModule(student, seed=seed, **training)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, deterministic=True, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    per_epoch = (time.perf_counter() - t0) / max(epochs, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(out)
    return per_epoch


def run_recovery(out_dir: str | Path, cfg: RecoveryConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every size in `cfg.agents`; returns `{"rows": [per-size results], **the largest size's results}`."""

    out = Path(out_dir)
    step = Steps(say)
    planted = resolve_config(cfg.planted, "teacher")
    sc_path = resolve_config(cfg.scenario, "scenarios")
    null = planted_variant(planted, out / "configs/planted_null.yaml", dose=0.0, name="planted_null")
    shipped = out / "configs/planted.yaml"
    if not shipped.exists():
        planted_variant(planted, shipped)
    held = out / f"worlds/held_out_n{cfg.held_out_agents}.h5"
    step("held-out world", held, partial(make_world, agents=cfg.held_out_agents, seed=HELD_OUT_SEED, out=held, quiet=True))
    traces = out / "traces"
    held_tr = {}
    # planted_s1: the process's own noise again (same agents' random effects); population: another
    # scenario seed, i.e. fresh random effects, exposures and neighbours (a floor for distributions)
    for name, conf, seed, llm in (("planted_s0", shipped, 0, 0), ("planted_s1", shipped, 0, 1), ("null_s0", null, 0, 0),
                                  ("planted_population", shipped, 1, 1)):
        held_tr[name] = step(f"held-out trace {name}", traces / f"held_out_{name}.h5", partial(
            generate, held, sc_path, conf, seed, traces / f"held_out_{name}.h5", llm_seed=llm, quiet=True))
    rows = []
    for n in cfg.agents:
        say(f"training world: {n} agents")
        world = out / f"worlds/train_n{n}.h5"
        step("training world", world, partial(make_world, agents=n, seed=TRAIN_SEED, out=world, quiet=True))
        tr = {}
        for name, conf in (("planted", shipped), ("null", null)):
            p = traces / f"train_n{n}_{name}.h5"
            tr[name] = step(f"training trace {name}", p, partial(generate, world, sc_path, conf, 0, p, quiet=True))
        variants = []
        for k in range(1, cfg.train_variants + 1):
            scen = scenario_variant(sc_path, out / f"configs/scenario_variant_{k}.yaml", partial(jitter_credibility, seed=k))
            p = traces / f"train_n{n}_planted_variant{k}.h5"
            variants.append(step(f"training trace, scenario variant {k}", p, partial(generate, world, scen, shipped, k, p, quiet=True)))
        timing: dict[str, float] = {}
        ckpt = {}
        for name, files, extra in (("student", [tr["planted"], *variants], {}),
                                   ("identity_mlp", [tr["planted"], *variants], {"graph": False}),
                                   ("null_student", [tr["null"]], {})):
            p = out / f"students/{name}_n{n}/last.ckpt"

            def fit(p=p, files=files, extra=extra):
                student = StudentConfig.from_preset(cfg.preset, **{**cfg.student, **extra})
                per_epoch = train_student(files, p, cfg.epochs, cfg.max_agents, cfg.seed, student, **cfg.training)
                p.with_name("seconds_per_epoch.json").write_text(json.dumps(per_epoch))

            ckpt[name] = step(f"train {name} ({cfg.epochs} epochs)", p, fit)
            kept = p.with_name("seconds_per_epoch.json")
            if kept.exists():  # measured when it was trained (a resumed run keeps the figure)
                timing[f"{name}_s_per_epoch"] = round(float(json.loads(kept.read_text())), 3)
        t0 = time.perf_counter()
        result = measure(ckpt, held, sc_path, held_tr, shipped, out / f"rollouts/n{n}", cfg, say)
        result.update({"agents": n, "held_out_agents": cfg.held_out_agents, "epochs": cfg.epochs, **timing,
                       "measure_seconds": round(time.perf_counter() - t0, 1)})
        rows.append(result)
        (out / f"recovery_n{n}.json").write_text(json.dumps(result, indent=1))
    final = copy.deepcopy(rows[-1])
    final["rows"] = rows
    (out / "recovery.json").write_text(json.dumps(final, indent=1))
    return final
