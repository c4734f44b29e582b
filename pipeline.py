"""`lsm demo`: the whole pipeline on a CPU with the embedded teacher, printing every artefact.

world (ANES, 48 agents by default) → the scenario, shortened to `ticks` and written into the demo folder
→ `gen` twice with two LLM sampling seeds (the second is the noise floor) → `train` (the
`small` preset on the first seed, validated on the second) → `rollout` (with a counterfactual:
the same scenario with its first event's credibility lowered) → `validate` → plots → a probe
report (`lsm probe`) and one agent's grounded narrative and interview (`lsm narrate`).
Every step skips itself when its output already exists, so a killed demo resumes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lsm.config import CONFIG_ROOT, resolve_config
from lsm.data_gen.gen import format_summary, generate
from lsm.data_gen.make_world import make_world
from lsm.infer.run import run_rollout, run_validation
from lsm.narrate.run import run_narrate
from lsm.probes.run import run_probe
from lsm.society.scenario import shorten
from lsm.society.store import TraceFile
from lsm.train.cli import main as train_main
from lsm.train.held_out import evaluate_checkpoint


@dataclass
class DemoConfig:
    out: str = "out/demo"
    agents: int = 48
    ticks: int = 3
    scenario: str = "vaccine_campaign"
    teacher: str = "demo"
    preset: str = "small"
    epochs: int | None = None
    """Training epochs (default: the preset's)."""
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def _step(cfg: DemoConfig, name: str, output: Path, fn) -> None:
    if output.exists():
        print(f"[demo] {name}: {output} exists, kept", flush=True)
        return
    print(f"[demo] {name} ...", flush=True)
    t0 = time.perf_counter()
    fn()
    cfg.timings[name] = time.perf_counter() - t0
    print(f"[demo] {name}: {cfg.timings[name]:.1f} s -> {output}", flush=True)


def run_demo(cfg: DemoConfig, extra_steps=None) -> dict[str, Path]:
    """Run (or resume) the demo; returns the artefacts by name."""

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    art = {"world": out / "world.h5", "scenario": out / "scenario.yaml", "counterfactual_scenario": out / "scenario_low_credibility.yaml",
           "teacher_a": out / "teacher_llm_seed0.h5", "teacher_b": out / "teacher_llm_seed1.h5",
           "checkpoint": out / "runs/checkpoints", "rollout": out / "rollout.h5", "report": out / "rollout_report",
           "validate": out / "validate.json"}

    _step(cfg, "world", art["world"], lambda: make_world("anes96", "default", cfg.agents, cfg.seed, art["world"], echo=print))

    def make_scenarios():
        sc = yaml.safe_load(resolve_config(cfg.scenario, "scenarios").read_text())
        sc = shorten(sc, cfg.ticks)
        if not sc["events"]:
            raise ValueError(f"{cfg.scenario} has no event before tick {cfg.ticks}; use more --ticks")
        art["scenario"].write_text(f"# {cfg.scenario}, shortened to {cfg.ticks} ticks by lsm demo\n" + yaml.safe_dump(sc, sort_keys=False))
        sc["events"][0]["credibility"] = round(max(0.0, float(sc["events"][0].get("credibility", 0.8)) - 0.6), 2)
        art["counterfactual_scenario"].write_text(
            f"# counterfactual: the first event's credibility lowered to {sc['events'][0]['credibility']}\n" + yaml.safe_dump(sc, sort_keys=False))

    _step(cfg, "scenario", art["scenario"], make_scenarios)
    for key, llm_seed in (("teacher_a", 0), ("teacher_b", 1)):
        def gen(key=key, llm_seed=llm_seed):
            s = generate(art["world"], art["scenario"], resolve_config(cfg.teacher, "teacher"), cfg.seed, art[key],
                         quiet=True, llm_seed=llm_seed)
            print(format_summary(s))

        _step(cfg, f"teacher (LLM seed {llm_seed})", art[key], gen)

    def train():
        # Checkpoints go to a `.partial` folder renamed when training ends: a run killed mid-training
        # continues from its last epoch (`--ckpt_path`) instead of keeping a half-trained student.
        partial = art["checkpoint"].with_name(art["checkpoint"].name + ".partial")
        overlay = out / "train_overlay.yaml"  # the preset, with this folder's data and output places
        overlay.write_text(yaml.safe_dump({
            "trainer": {"default_root_dir": str(out / "runs"),
                        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                   "init_args": {"save_dir": str(out / "runs"), "name": "tensorboard"}},
                        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                       "init_args": {"dirpath": str(partial), "filename": "student-{epoch}",
                                                     "save_last": True}}],
                        **({"max_epochs": cfg.epochs} if cfg.epochs is not None else {})},
            "data": {"train_files": [str(art["teacher_a"])], "val_files": [str(art["teacher_b"])]},
        }, sort_keys=False))
        resume = ["--ckpt_path", str(partial / "last.ckpt")] if (partial / "last.ckpt").exists() else []
        if resume:
            print(f"[demo] train: continuing from {partial / 'last.ckpt'}", flush=True)
        train_main(["fit", "--config", str(CONFIG_ROOT / f"train/{cfg.preset}.yaml"), "--config", str(overlay), *resume])
        partial.rename(art["checkpoint"])

    _step(cfg, f"train ({cfg.preset})", art["checkpoint"] / "last.ckpt", train)
    _step(cfg, "evaluate", out / "evaluate.txt", lambda: _keep(
        out / "evaluate.txt", evaluate_checkpoint(art["checkpoint"], [str(art["teacher_b"])]).text))
    _step(cfg, "rollout", art["rollout"], lambda: run_rollout(
        ckpt=art["checkpoint"], world=str(art["world"]), scenario=art["scenario"], out=str(art["rollout"]), seed=cfg.seed,
        report=art["report"], counterfactual=art["counterfactual_scenario"], quiet=True,
        store="latent,memory", echo=print))  # the probe report reads the student's latent and memory
    _step(cfg, "validate", art["validate"], lambda: print(run_validation(
        teacher=art["teacher_a"], teacher_repeat=art["teacher_b"], student=art["rollout"], json_out=art["validate"]).text))
    _step(cfg, "probe report", out / "probe_report" / "report.md", lambda: _keep(
        out / "probe.txt", run_probe(art["checkpoint"], art["rollout"], out / "probe_report", art["teacher_a"]).text))
    art["probe_report"] = out / "probe_report" / "report.md"

    def narration():

        with TraceFile(art["rollout"]) as a, TraceFile(str(art["rollout"])[:-3] + "_cf.h5") as b:
            changed = (a.array("decision")[-1] != b.array("decision")[-1]).nonzero()[0]
        who = str(int(changed[0])) if len(changed) else "0"  # an agent the counterfactual flipped, if any
        run_narrate(art["rollout"], agent=who, teacher=cfg.teacher, out=out / "narration.md", echo=print)
        run_narrate(art["rollout"], agent=who, teacher=cfg.teacher, out=out / "interview.md",
                    ask="Why did you decide as you did in the last tick?", echo=print)

    _step(cfg, "narration", out / "narration.md", narration)
    art["narration"] = out / "narration.md"
    art["interview"] = out / "interview.md"
    for name, path, fn in (extra_steps or []):
        art[name] = path
        _step(cfg, name, path, fn)
    total = time.perf_counter() - t_start
    print(f"\n[demo] done in {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in cfg.timings.items())}). Artefacts:")
    for name, path in art.items():
        print(f"  {name:<24} {path}")
    for png in sorted(art["report"].rglob("*.png")):
        print(f"  {'plot':<24} {png}")
    print(f"\nExplore them in a browser (charts, the social graph, every agent, what-if runs):\n  lsm explore {out}"
          + ("    (or: make explore)" if str(out) == "out/demo" else ""))
    return art


def _keep(path: Path, text: str) -> None:
    """Print a step's text and keep a copy in `path`."""
    print(text)
    path.write_text(text + "\n")
