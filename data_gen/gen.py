"""`lsm gen`: a teacher policy plays a scenario on a world; every agent-tick goes into a trace file.

The teacher is the LLM (`configs/teacher/{embedded,debug,openai,vllm}.yaml`) or the planted
reference society (`configs/teacher/planted*.yaml`, recognised by `policy: planted`); both run
through the one society loop, so they see the world identically for the same seed. Resumable:
killed at any point, the same command continues from the journal (`<out>.journal/`).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from lsm.config import from_dict, load_config, read_yaml
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.policy import PlantedSociety
from lsm.data_gen.teacher.backends.base import LLMBackend
from lsm.data_gen.teacher.config import TeacherConfig, make_backend
from lsm.data_gen.teacher.llm import Teacher
from lsm.society.embed import SentenceEncoder
from lsm.society.loop.neighbors import NeighborRule
from lsm.society.loop.runner import SocietyLoop
from lsm.society.scenario import load_scenario
from lsm.society.world import load_world


def is_planted(teacher: str | Path) -> bool:
    """Whether a teacher config names the planted reference society (`policy: planted`)."""
    data = read_yaml(teacher, kind="teacher config")
    return isinstance(data, dict) and data.get("policy") == "planted"


def neighbor_rule_of(teacher: str | Path) -> NeighborRule:
    """The shown-neighbour rule a file holds: a neighbour-rule YAML itself (`k`, `weights`,
    `vary`), or the `neighbors:` of a teacher config (LLM or planted)."""
    data = read_yaml(teacher, kind="neighbour rule or teacher config")
    if isinstance(data, dict) and data and set(data) <= {f.name for f in fields(NeighborRule)}:
        return from_dict(NeighborRule, data, source=teacher, kind="neighbour rule")
    if is_planted(teacher):

        return load_config(PlantedConfig, teacher, kind="planted society config").neighbors
    return load_config(TeacherConfig, teacher, kind="teacher config").neighbors


def generate(world: str | Path, scenario: str | Path, teacher: str | Path, seed: int, out: str | Path,
             backend: LLMBackend | None = None, quiet: bool = False, restart: bool = False,
             llm_seed: int | None = None) -> dict[str, Any]:
    """Run the teacher and write `out`; resumes from `<out>.journal/` when present.

    `seed` drives the scenario's randomness (exposures, shown neighbours); `llm_seed` (default:
    `seed`) the teacher's own sampling: the LLM's, or the planted process's noise. `backend`
    overrides the LLM backend built from the config (tests wrap a real backend). Returns the
    run summary.
    """

    world, out = Path(world), Path(out)
    sc = load_scenario(scenario)
    scenario_yaml = Path(scenario).read_text()
    w = load_world(world)
    llm_seed = seed if llm_seed is None else llm_seed
    if is_planted(teacher):

        pcfg = load_config(PlantedConfig, teacher, kind="planted society config")
        policy: Any = PlantedSociety(pcfg, sc, w.population, w.graph, seed, llm_seed, world_file=world)
        rule = pcfg.neighbors
        desc = f"planted {sc.name} seed {seed}/{llm_seed}"
    else:
        cfg = load_config(TeacherConfig, teacher, kind="teacher config")
        policy = _llm_teacher(cfg, backend or make_backend(cfg), sc, w, seed, llm_seed, SentenceEncoder())
        rule = cfg.neighbors
        desc = f"{sc.name} seed {seed}/{llm_seed}"
    loop = SocietyLoop(policy, sc, w.population, w.graph, seed, rule, scenario_source=scenario)
    return loop.run(out, world, scenario_yaml, {"teacher": seed, "llm": llm_seed}, restart=restart, quiet=quiet, desc=desc)


def _llm_teacher(cfg, backend, sc, w, seed, llm_seed, encoder):

    return Teacher(cfg, backend, sc, w.population, w.graph, seed, encoder, llm_seed=llm_seed)


def format_profile(summary: dict[str, Any]) -> str:
    """`lsm gen --profile`: seconds per phase, in all and per agent-tick, the backend's own
    phases indented under the teacher's (they are part of generation and scoring)."""
    prof = summary.get("profile") or {}
    if not prof:
        return "profile: none recorded (a planted run, or a run resumed from an older journal)"
    agent_ticks = max(summary.get("agent_ticks", 0), 1)
    wall = summary.get("wall_seconds_this_process", 0.0)
    lines = [f"profile ({summary.get('agent_ticks', 0):,} agent-ticks; the backend's own phases indented):",
             "| phase | seconds | s per agent-tick | share of wall |", "|---|---|---|---|"]
    outer = [k for k in prof if not k.startswith("llm ")]
    inner = [k for k in prof if k.startswith("llm ")]
    for k in outer + inner:
        v = prof[k]["seconds"]
        name = f"&nbsp;&nbsp;{k[4:]}" if k in inner else k
        lines.append(f"| {name} | {v:.2f} | {v / agent_ticks:.3f} | {v / max(wall, 1e-9):.1%} |")
    counted = sum(prof[k]["seconds"] for k in outer)
    lines.append(f"| (other: loop, exposures, bars) | {max(wall - counted, 0):.2f} | {max(wall - counted, 0) / agent_ticks:.3f} | "
                 f"{max(wall - counted, 0) / max(wall, 1e-9):.1%} |")
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> str:
    llm = "agent_ticks_per_llm_second" in summary
    lines = [f"teacher: {summary['backend']}",
             f"agent-ticks: {summary['agent_ticks']:,}  invalid: {summary['invalid']} ({summary['invalid_rate']:.1%})  "
             f"repaired: {summary['repaired']}"]
    if llm:
        lines.append(f"tokens: {summary['tokens']:,}  LLM time: {summary['llm_seconds']} s  "
                     f"({summary['agent_ticks_per_llm_second']} agent-ticks/s, {summary['tokens_per_llm_second']} tokens/s)  "
                     f"wall (this process): {summary['wall_seconds_this_process']} s")
    else:
        lines.append(f"wall (this process): {summary['wall_seconds_this_process']} s "
                     f"({summary['agent_ticks_per_second']:,.0f} agent-ticks/s)")
    if summary["resumed_from_tick"]:
        lines[-1] += f"  resumed at tick {summary['resumed_from_tick']}"
    if "scoring" in summary:
        lines.append(f"option scoring: {summary['scoring']}; approximate scores: {summary['approximate_scores']:,}")
    lines.append("decision shares per tick:")
    for t, s in enumerate(summary["decision_shares"]):
        extra = f"  mean {summary['mean_decision_value'][t]}" if "mean_decision_value" in summary else ""
        lines.append(f"  tick {t}: " + "  ".join(f"{k} {v:.2f}" for k, v in s.items() if v is not None) + extra)
    return "\n".join(lines)
