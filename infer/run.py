"""The bodies of `lsm rollout`, `lsm validate` and `lsm bench`: each runs, writes its files and
returns its results with the text the command prints; `echo`, when given, receives each part of
that text as soon as it is ready (the command line passes `print`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lsm.config import ConfigError, UsageError, resolve_config
from lsm.data_gen.gen import neighbor_rule_of
from lsm.infer.bench import bench_sizes, default_student, flops_per_agent_tick, matmul_gflops, time_teacher
from lsm.infer.counterfactual import SweepAxis, compare_runs, counterfactual_inputs, run_sweep
from lsm.infer.report import RunView, write_report
from lsm.infer.launch import run_sharded, torchrun_rank
from lsm.infer.rollout import Rollout, RolloutConfig, parse_store
from lsm.infer.sharded import ShardedRun
from lsm.infer.validate import format_table, validate, write_json
from lsm.model.checkpoint import load_checkpoint
from lsm.society.embed import persona_tensor
from lsm.society.interventions import apply
from lsm.society.scenario import load_scenario
from lsm.society.world import load_world, save_world
from lsm.society.world.partition import partition
from lsm.transcript import Echo, Transcript


@dataclass
class RolloutRun:
    out: Path
    report: Path
    summary: dict[str, Any]
    """`Rollout.run`'s summary of the main run (timings, shares)."""
    counterfactual: Path | None = None
    """The counterfactual rollout (its diffs are in `report/counterfactual/`)."""
    sweep: dict | None = None
    """The sweep grid (`counterfactual.run_sweep`), written to `report/sweep/`."""
    text: str = ""


def run_rollout(ckpt: str | Path, world: str | Path, scenario: str | Path, out: str = "rollout.h5", ticks: int | None = None,
                seed: int = 0, report: str | Path | None = None, by: str | Sequence[str] | None = None, clusters: int = 4,
                counterfactual: str | Path | None = None, sweep: str | None = None, sweep2: str | None = None,
                sweep_action: str | None = None, neighbors: str | Path | None = None, agent_chunk: int | None = None,
                store: str | Sequence[str] = (), device: str = "cpu", quiet: bool = False, restart: bool = False,
                echo: Echo = None, nproc: int = 1) -> RolloutRun:
    """Run a student checkpoint on a world and scenario (paths or shipped names), write the
    rollout to `out` and a report folder (default `<out without .h5>_report`); optionally a
    counterfactual on the same world and seed (another scenario, or interventions: see
    `society.interventions`), and a sweep over one or two edits (`EDIT=VALUES`). The arguments are those of `lsm rollout` (see its `--help`);
    every option is checked before any work, a bad one raises `UsageError`. `nproc` > 1 (or
    torchrun's ranks): the main rollout is sharded (`infer.launch`); under torchrun only rank 0
    writes the report and the further runs."""
    import time

    t_start = time.perf_counter()
    import numpy as np

    say = Transcript(echo)
    phases: dict[str, float] = {}
    lap = [t_start]

    def phase(name: str) -> None:  # the time since the previous phase ended
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - lap[0]
        lap[0] = now

    student = load_checkpoint(ckpt)
    if student.vocab is None:
        raise UsageError(f"{student.path} has no identity vocabulary (trained before it was stored); retrain it")
    rule = neighbor_rule_of(resolve_config(neighbors, "teacher")) if neighbors is not None else None  # None: the checkpoint's
    try:
        extras = parse_store(store)
    except ValueError as err:
        raise UsageError(str(err)) from None
    cfg = RolloutConfig(ticks=ticks, seed=seed, neighbors=rule,
                        agent_chunk=agent_chunk, store=extras, device=device)
    w = load_world(world)
    student.check_world(w.population, str(world))  # nothing in common: refused before any work; else one warning
    sc_path = resolve_config(scenario, "scenarios")
    sc = load_scenario(sc_path)
    out = str(out)
    stem = out[:-3] if out.endswith(".h5") else out
    report_dir = Path(report or f"{stem}_report")
    # check the options before any work
    by_attrs = ([b.strip() for b in by.split(",")] if isinstance(by, str) else list(by)) if by else None
    unknown = [a for a in by_attrs or [] if a not in w.population.categorical]
    if unknown:
        raise UsageError(f"--by {unknown}: not categorical attributes of {world} ({', '.join(w.population.categorical)})")
    cf = None
    if counterfactual:
        cf, cf_path = counterfactual_inputs(counterfactual, sc, w)  # a bad spec: ConfigError, exit 2
        assert cf.scenario is not None and cf.world is not None
        if cf.scenario.actions.labels != sc.actions.labels:
            raise UsageError(f"--counterfactual {cf_path}: a counterfactual scenario must keep the action space "
                             f"({', '.join(sc.actions.labels)}); it has {', '.join(cf.scenario.actions.labels)}")
        if cf.perception is not None:
            raise UsageError(f"--counterfactual {counterfactual}: a messages edit acts on replays (lsm recovery's paired "
                             "ablations), not on a rollout: use event, exposure, sever or agents edits")
    if sweep2 and not sweep:
        raise UsageError("--sweep2 needs --sweep")
    if sweep_action and sweep_action not in sc.actions.labels:
        raise UsageError(f"--sweep_action {sweep_action!r} is not an action of {sc.name} ({', '.join(sc.actions.labels)})")
    axes = []
    if sweep:
        try:
            axes = [SweepAxis.parse(s, f"--sweep{'2' if k else ''}") for k, s in enumerate(x for x in (sweep, sweep2) if x)]
            for axis in axes:  # each axis's edit fits the scenario and world (ConfigError before any work)
                apply(axis.edits_at(axis.values[0]), scenario=sc, world=w, source=f"--sweep {axis.name}")
        except ConfigError:
            raise
        except ValueError as err:
            raise UsageError(str(err)) from None
    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: expected at least 1 rank")
    sharded = nproc > 1 or torchrun_rank() is not None
    if nproc > 1 and (partition(w.graph.household, nproc).sizes() == 0).any():
        raise UsageError(f"--nproc {nproc}: {world} has {len(np.unique(w.graph.household))} households, and a shard holds "
                         "whole households; use at most that many ranks")
    if sharded and device != "cpu":
        raise UsageError(f"--nproc {nproc} --device {device}: sharded rollouts run on CPUs (gloo) for now; "
                         "on a GPU, one process holds 10^7 agents")
    phase("start (imports, checkpoint, world, scenario)")
    r: Rollout | None = None
    if sharded:
        summary, leader = run_sharded(ShardedRun(str(student.path), str(world), str(sc_path), out, cfg, restart, quiet), nproc)
        if not leader:
            return RolloutRun(Path(out), report_dir, summary, text="")
        say(f"sharded over {summary['ranks']} ranks ({', '.join(f'{a:,}' for a in summary['rank_agents'])} agents), "
            f"edge cut {summary['edge_cut']:.1%}, halo {summary['halo_bytes_per_tick'] / 2**20:,.1f} MiB per tick, "
            f"peak memory per rank {', '.join(f'{g:.2f}' for g in summary['peak_rss_gib_per_rank'])} GiB")
    else:
        persona = persona_tensor(w.population, desc=None if quiet else "embedding backstories")  # (N, T)
        phase("persona features")
        r = Rollout(student, w, sc, cfg, persona_emb=persona, scenario_source=str(sc_path))
        summary = r.run(out, world, Path(sc_path).read_text(), quiet=quiet, restart=restart)
    forward = summary["forward_seconds_per_tick"] * summary["ticks"]
    phase("rollout")
    phases["rollout"] -= summary["write_seconds"]
    phases["writing the file"] = summary["write_seconds"]
    say(f"rollout: {w.n:,} agents x {summary['ticks']} ticks, {summary['forward_seconds_per_tick']:.3f} s forward per tick "
        f"({w.n / max(summary['forward_seconds_per_tick'], 1e-9):,.0f} agent-ticks/s), {summary['wall_seconds']:.1f} s wall"
        + (f", peak memory {summary['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in summary else ""))
    if echo is not None and not quiet:
        echo(f"report: reading {out} and writing {report_dir}/ ...")
    say(write_report(out, report_dir, by_attrs, clusters, seed))
    say(f"Written: {out} ({Path(out).stat().st_size / 2**20:,.0f} MiB), report {report_dir}/")
    phase("report")
    result = RolloutRun(Path(out), report_dir, summary)
    if cf is not None:
        cf_out, cf_world = f"{stem}_cf.h5", world
        if cf.world is not w:  # severed ties or edited attributes: the counterfactual's file copies its own world
            cf_world = f"{stem}_cf_world.h5"
            save_world(cf.world, cf_world)
        persona_cf = r.persona if r is not None and cf.world.population is w.population else persona_tensor(cf.world.population)
        cf_yaml = Path(cf_path).read_text() if not cf.interventions else cf.scenario_yaml
        Rollout(student, cf.world, cf.scenario, cfg, persona_emb=persona_cf, scenario_source=str(cf_path),
                interventions=cf.interventions or None).run(cf_out, cf_world, cf_yaml, quiet=quiet, restart=restart)
        base = RunView.read(out)
        labels = np.load(report_dir / "cluster_labels.npy")
        text = compare_runs(base, RunView.read(cf_out), labels, by_attrs or list(base.groups)[:2], report_dir / "counterfactual")
        (report_dir / "counterfactual" / "summary.md").write_text(text)
        say(text)
        say(f"Written: {cf_out}, {report_dir / 'counterfactual'}/")
        result.counterfactual = Path(cf_out)
        phase("counterfactual")
    if axes:
        def one(scn, world_p, desc):
            persona_p = r.persona if r is not None and world_p.population is w.population else persona_tensor(world_p.population)
            return Rollout(student, world_p, scn, cfg, persona_emb=persona_p).run(None, quiet=quiet, desc=desc)

        result.sweep = run_sweep(one, sc, w, axes, seed, report_dir / "sweep", sweep_action, source=f"--sweep ({sc_path})")
        say(f"sweep over {' x '.join(a['path'] for a in result.sweep['axes'])}: {report_dir / 'sweep'}/ "
            "(sweep.csv, sweep.json, sweep.png)")
        phase("sweep")
    total = time.perf_counter() - t_start
    summary["phase_seconds"] = {k: round(v, 2) for k, v in phases.items()}
    say(f"Phase timings ({total:.1f} s in all): " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
        + f"; of the rollout, {forward:.1f} s forward")
    result.text = str(say)
    return result


@dataclass
class Validation:
    metrics: dict[str, dict[str, float]]
    """`{metric: {"student": x, "floor": y, "ratio": x / y}}` (see `infer.validate`)."""
    text: str


def run_validation(teacher: str | Path, teacher_repeat: str | Path, student: str | Path, json_out: str | Path | None = None,
                   clusters: int = 4, seed: int = 0) -> Validation:
    """A student rollout against the teacher, each metric beside the teacher's noise floor (the
    teacher against its repeat with another LLM sampling seed); with `json_out`, also written
    there. Files that do not fit together (another world, another action space) raise `UsageError`."""

    try:
        metrics = validate(teacher, teacher_repeat, student, clusters, seed)
    except ValueError as err:
        raise UsageError(str(err)) from None
    lines = [f"teacher {teacher} | repeat {teacher_repeat} | student {student}", format_table(metrics)]
    if json_out:
        write_json(metrics, json_out)
        lines.append(f"Written: {json_out}")
    return Validation(metrics, "\n".join(lines))


def parse_sizes(agents: str) -> list[int]:
    """`"1e3,1e4"` -> `[1000, 10000]`."""
    try:
        return [int(float(a)) for a in agents.split(",") if a.strip()]
    except ValueError:
        raise UsageError(f"--agents {agents!r}: expected comma-separated numbers such as 1e3,1e4") from None


@dataclass
class BenchRun:
    result: dict[str, Any] = field(default_factory=dict)
    """What `--json` writes: per-size student timings, the teacher's, FLOPs, matmul throughput, speedup."""
    text: str = ""


def run_bench(sizes: str | Sequence[int] = "1e3,1e4,1e5,1e6", ckpt: str | None = None, teacher: str = "embedded",
              teacher_agents: int = 8, device: str = "cpu", ticks: int = 2, json_out: str | Path | None = None,
              echo: Echo = None, teacher_baseline: str = "none") -> BenchRun:
    """Teacher vs student speed on this machine (see `infer.bench` and `lsm bench --help`):
    `sizes` as numbers or one comma-separated string; `teacher="none"` skips the teacher;
    `teacher_baseline` is timed first on the same world and the teacher's ratio to it printed."""
    import json
    import platform

    import torch

    sizes = parse_sizes(sizes) if isinstance(sizes, str) else [int(n) for n in sizes]
    say = Transcript(echo)
    say(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {device}")
    result: dict = {"device": device}
    if teacher != "none" and teacher_baseline != "none":
        b = time_teacher(teacher_baseline, teacher_agents)
        result["teacher_baseline"] = b
        say(f"teacher baseline ({teacher_baseline}, {b['agents']} agents x 1 tick): {b['agent_ticks_per_s']:.3f} agent-ticks/s "
            f"of LLM time, {b['tokens_per_s']:.0f} tokens/s")
    if teacher != "none":
        t = time_teacher(teacher, teacher_agents)
        result["teacher"] = t
        result["teacher_agent_ticks_per_s"] = t["agent_ticks_per_s"]
        say(f"teacher ({teacher}, {t['agents']} agents x 1 tick): {t['agent_ticks_per_s']:.3f} agent-ticks/s of LLM time, "
            f"{t['tokens_per_s']:.0f} tokens/s" + (f" ({t['agent_ticks_per_s'] / b['agent_ticks_per_s']:.2f}x the baseline)" if "teacher_baseline" in result else ""))
    rows = bench_sizes(sizes, ckpt, device, ticks)
    result["student"] = rows
    model = default_student(ckpt)
    fl = flops_per_agent_tick(model)
    gf = matmul_gflops(device=device)
    result["flops_per_agent_tick"] = fl
    result["matmul_gflops"] = gf
    result["student_params"] = sum(p.numel() for p in model.parameters())
    best = max((r["agent_ticks_per_s"] for r in rows if "agent_ticks_per_s" in r), default=0.0)
    if "teacher_agent_ticks_per_s" in result and best:
        result["speedup"] = best / result["teacher_agent_ticks_per_s"]
    lines = ["| agents | edges | s / tick | agent-ticks/s | peak RSS GiB | peak GPU GiB | vs teacher |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['agents']:,} | – | – | – | – | – | {r['error']} |")
            continue
        ratio = f"{r['agent_ticks_per_s'] / result['teacher_agent_ticks_per_s']:,.0f}x" if "teacher_agent_ticks_per_s" in result else "–"
        gpu = f"{r['peak_gpu_gb']:.2f}" if r.get("peak_gpu_gb") is not None else "–"
        lines.append(f"| {r['agents']:,} | {r['edges']:,} | {r['seconds_per_tick']:.3f} | {r['agent_ticks_per_s']:,.0f} | "
                     f"{r['peak_rss_gb']:.2f} | {gpu} | {ratio} |")
    lines.append(f"student: {result['student_params']:,} parameters, {fl / 1e6:.2f} MFLOP per agent-tick (matmuls); "
                 f"matmul throughput {gf:.0f} GFLOP/s -> at most {gf * 1e9 / fl:,.0f} agent-ticks/s if compute-bound; "
                 f"measured best {best:,.0f} ({best * fl / (gf * 1e9):.0%} of it)")
    if "speedup" in result:
        lines.append(f"speedup (best student / teacher): {result['speedup']:,.0f}x")
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1))
        lines.append(f"Written: {json_out}")
    say("\n".join(lines))
    return BenchRun(result, str(say))
