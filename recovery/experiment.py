"""`lsm recovery`: the known-answer distillation experiment, end to end.

For each training size: a training world and one shared held-out world (other seeds); planted
traces on both (the held-out one with two noise seeds: the second is the process's own floor),
and the null variant (no influence); the student, the identity-only model (no graph) and a
student of the null variant trained on the training world; then, on the held-out world,
everything `metrics.py` measures. Every step is skipped when its output exists (resume).

Layout of DIR: `worlds/`, `traces/`, `students/<name>_n<N>/last.ckpt`, `rollouts/`, `recovery.json`.
With `--planted random:K` (`run_random_recovery`): `worlds/` (built once), one such folder per
drawn configuration, `random_<k>/` (its configuration in `random_<k>/planted.yaml`), and
`recovery.json` with every configuration's results.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import yaml

from lsm.config import ConfigError, UsageError, load_config, read_yaml, resolve_config, to_dict
from lsm.data_gen.gen import generate
from lsm.data_gen.make_world import make_world
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.prior import (
    RandomSpec,
    draw_planted,
    parse_random,
    population_attributes,
    scenario_labels,
    write_planted,
)
from lsm.model.society import StudentConfig
from lsm.recovery.metrics import INTERVENTIONS, intervention_inputs, measure
from lsm.recovery.report import GOALS, format_table
from lsm.society import seeds
from lsm.society.variants import jitter_events
from lsm.society.world import load_world
from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule

PATHWAYS = ("social_sum", "event_sum", "stance_noise", "channel_effects")
"""The student's pathways for the planted mechanisms (`StudentConfig` switches) that `ablations` can switch off."""
ABLATION_ROW_KEYS = ("ablation_tv_ratio", "ablation_signed_error", "influence_slope", "influence_rank_ok", "kl_oracle_normalised",
                     "student_kl", "intervention_rel_error_max", "interventions_pass", "channel_sd_ratio", "tail_survival_min")
"""The figures of one row of the pathway ablation table (missing ones are null)."""
HELD_OUT_SEED, TRAIN_SEED, VALIDATION_SEED = 2, 1, 3
"""World seeds: the held-out world is never trained on; the validation world only stops training."""


@dataclass
class RecoveryConfig:
    agents: list[int] = field(default_factory=lambda: [2000])
    """Training-world sizes (one row of the scaling curve each)."""
    held_out_agents: int = 2000
    scenario: str = "vaccine_campaign"
    planted: str = "planted"
    """The planted configuration (a path or a shipped name); its null variant sets `dose: 0`.
    `random:K` (or `random:K@SEED`): K configurations drawn from the prior
    (`lsm.data_gen.planted.prior`), one whole experiment each (`run_random_recovery`)."""
    steps: int = 1500
    """Optimiser steps of each model (a step budget, the same at every size: an epoch of a small
    world is a few steps, of a big one many); training stops earlier when the validation loss
    has not improved for `patience` checks, and the best checkpoint is kept."""
    epochs: int | None = None
    """Train for this many epochs instead of `steps` (without early stopping: the earlier behaviour)."""
    max_agents: int = 256
    """Agents per training batch (`TraceDataModule.max_agents`): each batch hears the teacher's
    messages of the whole population, so a batch is exact, and smaller batches make more steps."""
    val_every: int = 50
    """Training batches between two validations (a batch is `ticks / bptt` optimiser steps)."""
    patience: int = 6
    """Validations without improvement before training stops."""
    val_agents: int = 1000
    """Size of the validation world (its own seed) whose planted trace early stopping watches."""
    ablations: list[str] = field(default_factory=list)
    """Pathways to switch off, one student each (`PATHWAYS`, or `all`: every one), trained to the
    same step budget and measured like the student: one row each in `ablation_rows`."""
    samples: int = 2
    """Paired draws of the student's stochastic latents per replay."""
    seeds: int = 4
    """Common seeds of the intervention runs (student rollouts and planted runs alike): the
    truth's seed-to-seed spread is the floor an intervention's error is judged against."""
    train_variants: int = 8
    """Extra training traces on copies of the scenario whose events' valences (uniform in -1..1)
    and credibilities (uniform in 0.1..1) are drawn at random (`jitter_events`, seeded): with one
    scenario, an event's valence and credibility are one number each per event, confounded with
    its text and its source, and their effect cannot be learned."""
    variant_keep_sign: bool = False
    """Variants keep each event's sign of valence (|valence| drawn in 0..1) instead of drawing it in -1..1."""
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


def held_out_world(out: str | Path, cfg: RecoveryConfig) -> Path:
    return Path(out) / f"worlds/held_out_n{cfg.held_out_agents}.h5"


def train_world(out: str | Path, n: int) -> Path:
    return Path(out) / f"worlds/train_n{n}.h5"


def check_interventions(sc_path: Path, world: Path) -> None:
    """Refuse, before anything is generated or trained, a scenario that the measured
    interventions (`metrics.INTERVENTIONS`: they name its scheduled events by index) do not apply to."""
    w = load_world(world)
    for name, spec in INTERVENTIONS.items():
        try:
            intervention_inputs(spec, sc_path, w, source=f"recovery intervention {name}")
        except ConfigError as err:
            raise UsageError(f"--scenario {sc_path}: `lsm recovery` measures the intervention {name} ({spec}), which "
                             f"this scenario does not allow ({err}) Use a scenario with at least three scheduled events, "
                             "e.g. vaccine_campaign, product_adoption or policy_announcement.") from None


def train_student(train_files: list[Path], out: Path, cfg: RecoveryConfig, student: StudentConfig,
                  val_files: list[Path] | None = None) -> dict[str, Any]:
    """Train `student` (Lightning; `cfg.training`: `DistillModule`'s training knobs) on planted
    traces by a step budget with early stopping on `val_files` (`cfg.steps`, `cfg.patience`), or
    for `cfg.epochs`, and save `out` (the best checkpoint: everything a rollout needs). Returns
    the steps trained, whether training stopped early, the best validation loss and the time per step."""
    import logging
    import warnings

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    for name in ("lightning.pytorch", "lightning.fabric"):  # one line per step is what this command prints
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")

    L.seed_everything(cfg.seed, verbose=False)
    by_steps = cfg.epochs is None and bool(val_files)
    dm = TraceDataModule([str(p) for p in train_files], [str(p) for p in val_files or []] if by_steps else None,
                         max_agents=cfg.max_agents, seed=cfg.seed)
    module = DistillModule(student, seed=cfg.seed, **cfg.training)
    best = ModelCheckpoint(dirpath=out.parent / "best", filename="best", monitor="val_loss", mode="min", save_top_k=1,
                           enable_version_counter=False)
    stop = EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience)
    common: dict[str, Any] = dict(accelerator="cpu", devices=1, deterministic=True, logger=False, enable_progress_bar=False,
                                  enable_model_summary=False, num_sanity_val_steps=0)
    if by_steps:
        trainer = L.Trainer(max_steps=cfg.steps, val_check_interval=cfg.val_every, check_val_every_n_epoch=None,
                            callbacks=[best, stop], **common)
    else:
        trainer = L.Trainer(max_epochs=cfg.epochs or 1, enable_checkpointing=False, limit_val_batches=0, **common)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    if by_steps and best.best_model_path:
        shutil.copyfile(best.best_model_path, out)
        shutil.rmtree(out.parent / "best", ignore_errors=True)
    else:
        trainer.save_checkpoint(out)
    score = best.best_model_score
    return {"steps": int(trainer.global_step), "stopped_early": bool(by_steps and trainer.global_step < cfg.steps),
            "best_val_loss": float(score) if score is not None else float("nan"),
            "seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(trainer.global_step, 1), 4)}


def train_step(files: list[Path], out: Path, cfg: RecoveryConfig, student: StudentConfig, val: Path) -> None:
    """`train_student` as a resumable step: `out` appears (atomically) only once the checkpoint and
    its `training.json` beside it are complete, so a run killed at any moment retrains or keeps it whole."""
    partial_ckpt = out.with_name(out.name + ".partial")
    done = train_student(files, partial_ckpt, cfg, student, [val])
    out.with_name("training.json").write_text(json.dumps(done))
    os.replace(partial_ckpt, out)


def run_recovery(out_dir: str | Path, cfg: RecoveryConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every size in `cfg.agents`; returns `{"rows": [per-size results], **the largest size's results}`.
    With `cfg.planted` = `random:K[@SEED]`: `run_random_recovery`, one experiment per drawn configuration."""

    spec = parse_random(cfg.planted)
    if spec is not None:
        return run_random_recovery(out_dir, cfg, spec, say)
    out = Path(out_dir)
    step = Steps(say)
    planted = resolve_config(cfg.planted, "teacher")
    sc_path = resolve_config(cfg.scenario, "scenarios")
    null = planted_variant(planted, out / "configs/planted_null.yaml", dose=0.0, name="planted_null")
    shipped = out / "configs/planted.yaml"
    if not shipped.exists():
        planted_variant(planted, shipped)
    held = held_out_world(out, cfg)
    step("held-out world", held, partial(make_world, agents=cfg.held_out_agents, seed=HELD_OUT_SEED, out=held, quiet=True))
    check_interventions(sc_path, held)
    traces = out / "traces"
    held_tr = {}
    # planted_s1: the process's own noise again (same agents' random effects); population: another
    # scenario seed, i.e. fresh random effects, exposures and neighbours (a floor for distributions)
    for name, conf, seed, llm in (("planted_s0", shipped, 0, 0), ("planted_s1", shipped, 0, 1), ("null_s0", null, 0, 0),
                                  ("planted_population", shipped, 1, 1)):
        held_tr[name] = step(f"held-out trace {name}", traces / f"held_out_{name}.h5", partial(
            generate, held, sc_path, conf, seed, traces / f"held_out_{name}.h5", llm_seed=llm, quiet=True))
    val_world = out / f"worlds/validation_n{cfg.val_agents}.h5"  # early stopping watches it (never measured on)
    step("validation world", val_world, partial(make_world, agents=cfg.val_agents, seed=VALIDATION_SEED, out=val_world, quiet=True))
    val_tr = {name: step(f"validation trace {name}", traces / f"validation_{name}.h5", partial(
        generate, val_world, sc_path, conf, 0, traces / f"validation_{name}.h5", quiet=True)) for name, conf in
        (("planted", shipped), ("null", null))}
    rows = []
    for n in cfg.agents:
        say(f"training world: {n} agents")
        world = train_world(out, n)
        step("training world", world, partial(make_world, agents=n, seed=TRAIN_SEED, out=world, quiet=True))
        tr = {}
        for name, conf in (("planted", shipped), ("null", null)):
            p = traces / f"train_n{n}_{name}.h5"
            tr[name] = step(f"training trace {name}", p, partial(generate, world, sc_path, conf, 0, p, quiet=True))
        variants = []
        for k in range(1, cfg.train_variants + 1):
            scen = scenario_variant(sc_path, out / f"configs/scenario_variant_{k}.yaml", partial(jitter_events, seed=k, keep_sign=cfg.variant_keep_sign))
            p = traces / f"train_n{n}_planted_variant{k}.h5"
            variants.append(step(f"training trace, scenario variant {k}", p, partial(generate, world, scen, shipped, k, p, quiet=True)))
        ckpt, training = {}, {}
        for name, files, extra, val in (("student", [tr["planted"], *variants], {}, val_tr["planted"]),
                                        ("identity_mlp", [tr["planted"], *variants], {"graph": False}, val_tr["planted"]),
                                        ("null_student", [tr["null"]], {}, val_tr["null"])):
            p = out / f"students/{name}_n{n}/last.ckpt"

            def fit(p=p, files=files, extra=extra, val=val):
                train_step(files, p, cfg, StudentConfig.from_preset(cfg.preset, **{**cfg.student, **extra}), val)

            budget = f"{cfg.epochs} epochs" if cfg.epochs is not None else f"≤ {cfg.steps} steps"
            ckpt[name] = step(f"train {name} ({budget})", p, fit)
            kept = p.with_name("training.json")
            if kept.exists():  # measured when it was trained (a resumed run keeps the figures)
                training[name] = json.loads(kept.read_text())
                say(f"    {name}: {training[name]['steps']} steps, {training[name]['seconds_per_step']} s/step"
                    + (", stopped early" if training[name]["stopped_early"] else ""))
        rows_off = {}
        for off in cfg.ablations:
            switches = {k: False for k in (PATHWAYS if off == "all" else (off,))}
            p = out / f"students/student_without_{off}_n{n}/last.ckpt"

            def fit_off(p=p, switches=switches):
                train_step([tr["planted"], *variants], p, cfg, StudentConfig.from_preset(cfg.preset, **{**cfg.student, **switches}),
                           val_tr["planted"])

            step(f"train the student without {off}", p, fit_off)

            def row(p=p, off=off):
                res = measure({**ckpt, "student": p}, held, sc_path, held_tr, shipped, out / f"rollouts/n{n}_without_{off}", cfg, say)
                p.with_name("row.json").write_text(json.dumps({k: res.get(k) for k in ABLATION_ROW_KEYS}))

            rows_off[off] = json.loads(step(f"measure the student without {off}", p.with_name("row.json"), row).read_text())
        t0 = time.perf_counter()
        result = measure(ckpt, held, sc_path, held_tr, shipped, out / f"rollouts/n{n}", cfg, say)
        if rows_off:
            result["ablation_rows"] = {"student": {k: result.get(k) for k in ABLATION_ROW_KEYS}, **{f"without {k}": v for k, v in rows_off.items()}}
        result.update({"agents": n, "held_out_agents": cfg.held_out_agents, "steps": cfg.steps, "epochs": cfg.epochs,
                       "max_agents": cfg.max_agents, "training": training, "measure_seconds": round(time.perf_counter() - t0, 1)})
        rows.append(result)
        (out / f"recovery_n{n}.json").write_text(json.dumps(result, indent=1))
    final = copy.deepcopy(rows[-1])
    final["rows"] = rows
    (out / "recovery.json").write_text(json.dumps(final, indent=1))
    return final


# -- random planted configurations (`--planted random:K`) ----------------------------------------


def _share(src: Path, dst: Path) -> None:
    """`dst` as a hard link to `src` (a copy where links are not supported): the worlds are built
    once and read by every configuration's experiment."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


def random_config(path: Path, k: int, spec: RandomSpec, draw: Callable[[], PlantedConfig]) -> PlantedConfig:
    """Configuration `k`: the one written at `path` by an earlier run (resume), else `draw()`n and written there."""
    name = f"random_{spec.seed}_{k}"
    if path.exists():
        pc = load_config(PlantedConfig, path, kind="planted society config")
        if pc.name != name:
            raise UsageError(f"{path} holds the planted configuration {pc.name!r}, not {name!r} (random:{spec.configs}@"
                             f"{spec.seed}): this folder was started with another prior seed; use a new --out.")
        return pc
    pc = draw()
    write_planted(pc, path)
    return pc


def run_random_recovery(out_dir: str | Path, cfg: RecoveryConfig, spec: RandomSpec,
                        say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole experiment once per configuration 0..K-1 of the prior (`spec`), each in
    `DIR/random_<k>/` (its configuration in `planted.yaml` there, drawn for the held-out world's
    attributes and the scenario's labels, and read back on resume). The worlds are built once in
    `DIR/worlds/` and linked into each folder. Returns (and writes to `DIR/recovery.json`)
    `{"planted", "prior_seed", "goals_met", "configs": [{"name", "planted", "result"}, ...]}`,
    `result` being what `run_recovery` returns for that configuration."""
    out = Path(out_dir)
    step = Steps(say)
    sc_path = resolve_config(cfg.scenario, "scenarios")
    held = held_out_world(out, cfg)
    step("held-out world (shared)", held, partial(make_world, agents=cfg.held_out_agents, seed=HELD_OUT_SEED, out=held,
                                                  quiet=True))
    check_interventions(sc_path, held)
    for n in cfg.agents:
        w = train_world(out, n)
        step(f"training world, {n} agents (shared)", w, partial(make_world, agents=n, seed=TRAIN_SEED, out=w, quiet=True))
    attrs: list[Any] = []

    def draw(k: int) -> PlantedConfig:
        if not attrs:
            attrs.extend([*population_attributes(held), *scenario_labels(sc_path)])
        cats, nums, actions, channels = attrs
        return draw_planted(k, spec.seed, categories=cats, numeric=nums, actions=actions, channels=channels)

    configs = []
    for k in range(spec.configs):
        sub = out / f"random_{k}"
        path = sub / "planted.yaml"
        pc = random_config(path, k, spec, partial(draw, k))
        say(f"planted configuration {k + 1}/{spec.configs}: {pc.name} ({sub})")
        _share(held, held_out_world(sub, cfg))
        for n in cfg.agents:
            _share(train_world(out, n), train_world(sub, n))
        result = run_recovery(sub, dataclasses.replace(cfg, planted=str(path)), say)
        configs.append({"name": pc.name, "planted": to_dict(pc), "result": result})
    final = {"planted": cfg.planted, "prior_seed": spec.seed, "goals_met": goals_met(configs), "configs": configs}
    (out / "recovery.json").write_text(json.dumps(final, indent=1))
    return final


def goals_met(configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per headline figure with a goal (`report.GOALS`): in how many configurations (their largest
    training size) it is met, out of those where it was measured."""
    out = {}
    for key, (goal, ok) in GOALS.items():
        if goal == "–":
            continue
        scored = [c["result"] for c in configs if key in c["result"]
                  and not (isinstance(c["result"][key], float) and math.isnan(c["result"][key]))]
        out[key] = {"goal": goal, "met": sum(bool(ok(r[key], r)) for r in scored), "scored": len(scored)}
    return out


def describe_planted(p: dict[str, Any]) -> str:
    """One line on a planted configuration (as data): what the prior drew."""
    order = " > ".join(f"{t} {b:g}" for t, b in sorted(p["influence"].items(), key=lambda kv: -kv[1]))
    conf = "none"
    if p.get("conformity_attribute"):
        (first, lo), *_, (last, hi) = p["conformity"].items()
        conf = f"by {p['conformity_attribute']} ({first} {lo:g} … {last} {hi:g})"
    rare = min(p["action_bias"], key=p["action_bias"].get) if p["action_bias"] else "none"
    return (f"influence {order}; conformity {conf}; γ {p['events']['valence_credibility']:g}; persistence "
            f"{p['persistence']:g}; agent sd {p['agent_sd']:g}, noise sd {p['noise_sd']:g}; rare action {rare}")


def format_random(result: dict[str, Any]) -> str:
    """What `lsm recovery --planted random:K` prints: one goal table per configuration
    (`report.format_table`), then how many configurations meet each goal."""
    lines: list[str] = []
    for c in result["configs"]:
        lines += [f"## {c['name']}", "", describe_planted(c["planted"]), "", format_table(c["result"]), ""]
    lines += [f"## Goals met over {len(result['configs'])} planted configurations (largest training size)", "",
              "| figure | goal | met |", "|---|---|---|"]
    for key, g in result["goals_met"].items():
        lines.append(f"| {key} | {g['goal']} | {g['met']}/{g['scored']} |")
    return "\n".join(lines)
