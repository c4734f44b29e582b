"""`lsm`: one command line, one subcommand per pipeline step.

Each subcommand is a plain function whose signature and docstring are its `--help`
(jsonargparse). Errors a user can fix (a malformed config or scenario, an unreadable file) are
printed as one paragraph without a traceback, and the exit status is 2.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from lsm.config import CONFIG_ROOT, ConfigError


class UsageError(ValueError):
    """A command was called without what it needs."""


def resolve_config(path: str, family: str) -> Path:
    """A config path as given, else a shipped one: `anes96` or `configs/population/anes96.yaml`
    resolve to the shipped file when no such file exists in the working directory."""
    p = Path(path)
    if p.exists():
        return p
    candidates = [CONFIG_ROOT.parent / p, CONFIG_ROOT / family / p, CONFIG_ROOT / family / f"{path}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    return p  # let the loader report the missing file by the name the user gave


def world(
    population: str = "configs/population/anes96.yaml",
    graph: str = "configs/graph/default.yaml",
    agents: int = 1000,
    seed: int = 0,
    out: str = "world.h5",
    backstories: bool = False,
    teacher: str = "embedded",
) -> None:
    """Build a world (population + typed social graph), write it to HDF5 and print a summary.

    Args:
        population: population YAML (a path, or a shipped name such as `anes96`, `generic`).
        graph: social-graph YAML (a path, or a shipped name such as `default`).
        agents: number of agents N.
        seed: random seed (same seed and configs give the identical world).
        out: output HDF5 file.
        backstories: have the LLM write a short backstory per agent from its attributes
            (meta-prompt, temperature and seed varied per agent), appended to its persona.
        teacher: teacher YAML whose backend writes the backstories.
    """
    from lsm.data_gen.world import build_world, save_world, world_summary

    w = build_world(resolve_config(population, "population"), resolve_config(graph, "graph"), agents, seed)
    if backstories:
        from lsm.config import load_config
        from lsm.data_gen.world.backstory import write_backstories
        from lsm.data_gen.teacher.config import TeacherConfig, make_backend

        t0 = time.perf_counter()
        cfg = load_config(TeacherConfig, resolve_config(teacher, "teacher"), kind="teacher config")
        b = write_backstories(w.population.persona, make_backend(cfg), seed=seed)
        w.population.persona = [f"{p} {s}".strip() for p, s in zip(w.population.persona, b.texts)]
        w.backstories = b
        w.timings["backstories_s"] = time.perf_counter() - t0
        print(f"Backstories: {agents - len(b.failed)} written, {len(b.failed)} left out (no usable text), "
              f"{w.timings['backstories_s']:.1f} s")
    t0 = time.perf_counter()
    save_world(w, out)
    w.timings["write_s"] = time.perf_counter() - t0
    size_mb = Path(out).stat().st_size / 2**20
    print(world_summary(w, {"Written": f"{out} ({size_mb:.1f} MiB)"}))


def scenario(file: str, world: str | None = None, seed: int = 0) -> None:
    """Validate a scenario file and print its timeline.

    Args:
        file: scenario YAML (a path, or a shipped name such as `vaccine_campaign`).
        world: optionally a world HDF5 file: also check the exposure rules against its
            attributes and outlets, and print how many agents each scheduled event reaches.
        seed: seed for the seeded exposure fractions in that preview.
    """
    from lsm.data_gen.scenario import check_against_world, load_scenario, timeline

    path = resolve_config(file, "scenarios")
    sc = load_scenario(path)
    print(f"{path}: valid.")
    print(timeline(sc))
    if world is not None:
        from lsm.data_gen.loop.events import EventSchedule
        from lsm.data_gen.world import load_world

        w = load_world(world)
        check_against_world(sc, w.population, w.graph, source=path)
        sched = EventSchedule(sc, w.population, w.graph, seed)
        print(f"\nExposure on {world} ({w.n:,} agents, seed {seed}):")
        for t in range(sc.ticks):
            for ev, col in zip(sched.events_at(t), sched.exposure(t).T):
                print(f"  tick {t:>3}  event {ev.uid}: {int(col.sum()):,} agents ({col.mean():.1%})")


def gen(
    world: str | None = None,
    scenario: str | None = None,
    teacher: str = "embedded",
    seed: int = 0,
    out: str = "traces.h5",
    llm_seed: int | None = None,
    restart: bool = False,
    quiet: bool = False,
) -> None:
    """Run LLM agents (the teacher) on a world and scenario; write every agent-tick to HDF5.

    Resumable: finished ticks are journaled in `<out>.journal/`; after a crash or kill, the same
    command continues where it stopped and ends with the same file as an uninterrupted run.

    Args:
        world: world HDF5 file (from `lsm world`).
        scenario: scenario YAML (a path, or a shipped name such as `guessing_game`).
        teacher: teacher YAML (a path, or a shipped name: `embedded`, `debug`, `openai`, `vllm`).
        seed: seed of the scenario's randomness (exposures, which neighbours are shown) and,
            unless `llm_seed` is given, of the LLM sampling.
        out: output trace file.
        llm_seed: seed of the LLM sampling alone: two runs differing only in it measure the
            teacher's own noise floor.
        restart: discard an existing journal for `out` instead of resuming it.
        quiet: no progress bar.
    """
    from lsm.data_gen.gen import format_summary, generate

    if world is None or scenario is None:
        raise UsageError("lsm gen needs --world WORLD.h5 and --scenario SCENARIO (see lsm gen --help)")
    summary = generate(world, resolve_config(scenario, "scenarios"), resolve_config(teacher, "teacher"), seed, out,
                       quiet=quiet, restart=restart, llm_seed=llm_seed)
    size_mb = Path(out).stat().st_size / 2**20
    print(format_summary(summary))
    print(f"Written: {out} ({size_mb:.1f} MiB)")


def sensitivity(trace: str, tick: int | None = None, agents: int = 16, seed: int = 0, write: bool = False) -> None:
    """How far the teacher's decisions move with neighbour messages and persona (FINDINGS §4):
    re-score a sample of agents with messages removed, messages of the opposite stance, or
    another agent's persona.

    Args:
        trace: teacher trace file (from `lsm gen`).
        tick: tick to probe (default: the last; tick 0 has no messages).
        agents: how many agents to sample.
        seed: seed of the sample.
        write: also store the result in the trace file (attribute `sensitivity`).
    """
    import json

    import h5py

    from lsm.data_gen.teacher.sensitivity import format_report, measure

    r = measure(trace, tick, agents, seed)
    print(format_report(r))
    if write:
        with h5py.File(trace, "a") as f:
            f.attrs["sensitivity"] = json.dumps(r)


def evaluate(checkpoint: str, held_out: str, mlp: str | None = None, train: str | None = None) -> None:
    """Held-out table: the student against the per-tick marginal, repeat-previous, the same
    student with shuffled edges and (optionally) an identity-only MLP checkpoint.

    Args:
        checkpoint: student checkpoint file or run folder (`runs/small/checkpoints`).
        held_out: comma-separated trace files or globs to evaluate on, e.g. the second LLM seed
            of the training scenarios or a scenario left out of training.
        mlp: checkpoint of the identity-only baseline (`--config configs/train/overlay/no_graph.yaml`).
        train: comma-separated trace files the marginal baseline is computed from (default: the
            checkpoint's own training files).
    """
    from lsm.train.data import load_episode
    from lsm.train.datamodule import expand_patterns
    from lsm.train.evaluate import evaluate as run_eval
    from lsm.train.evaluate import format_table
    from lsm.model.checkpoint import load_checkpoint

    student = load_checkpoint(checkpoint)
    train_paths = expand_patterns(train.split(",")) if train else student.train_paths
    if not train_paths:
        raise UsageError(f"{checkpoint} does not record its training files; pass --train")
    held_paths = expand_patterns(held_out.split(","))
    vocab = student.vocab
    train_eps = [load_episode(p, vocab) for p in train_paths]
    held_eps = [load_episode(p, vocab) for p in held_paths]
    baseline = load_checkpoint(mlp).model if mlp else None
    print(format_table(run_eval(student.model, train_eps, held_eps, baseline), f"held out: {', '.join(held_paths)}"))


def rollout(
    ckpt: str | None = None,
    world: str | None = None,
    scenario: str | None = None,
    out: str = "rollout.h5",
    ticks: int | None = None,
    seed: int = 0,
    report: str | None = None,
    by: str | None = None,
    clusters: int = 4,
    counterfactual: str | None = None,
    sweep: str | None = None,
    sweep2: str | None = None,
    sweep_action: str | None = None,
    teacher: str = "embedded",
    agent_chunk: int | None = None,
    store_text: bool = True,
    device: str = "cpu",
    quiet: bool = False,
    restart: bool = False,
) -> None:
    """Advance a whole population with the trained student, one forward pass per tick; stream
    every tick to HDF5 (trace schema, kind student_rollout) and write a report folder.

    Args:
        ckpt: student checkpoint file or folder (`runs/small/checkpoints`).
        world: world HDF5 file (any world: identities are encoded by category name).
        scenario: scenario YAML (a path or a shipped name), e.g. one you edited.
        out: rollout file.
        ticks: ticks to run (default: the scenario's).
        seed: seed of exposures, shown neighbours and sampled decisions (same seed, same draws).
        report: report folder (default: `<out without .h5>_report`).
        by: comma-separated categorical attributes to break shares and channels down by
            (default: the first two of the population).
        clusters: number of reasoning-profile clusters.
        counterfactual: a second scenario run on the same world and seed; per-agent diffs go to
            `<report>/counterfactual/`, its rollout to `<out without .h5>_cf.h5`.
        sweep: a `PATH=VALUES` axis over a scenario parameter (`events.0.credibility=0.2,0.5,0.9`,
            `events.0.exposure.fraction=0:1:5`); writes `<report>/sweep/` (grid, JSON, plot).
        sweep2: a second axis: the grid is sweep x sweep2 and the plot a heatmap.
        sweep_action: the action whose final share the sweep plot shows (default: the first).
        teacher: teacher config whose neighbour rule (K, edge-type weights) the rollout uses.
        agent_chunk: receivers per attention chunk (0: all at once; default: chunks of 2^17 beyond 2^17 agents).
        store_text: store predicted expression/reasoning embeddings (384 float16 each per agent-tick).
        device: `cpu` or `cuda`.
        quiet: no progress bar.
        restart: discard an interrupted run's journal (`<out>.journal/`) instead of resuming it.
    """
    import copy

    import numpy as np
    import yaml

    from lsm.config import load_config
    from lsm.data_gen.scenario import load_scenario
    from lsm.data_gen.teacher.config import TeacherConfig
    from lsm.data_gen.world import load_world
    from lsm.infer.counterfactual import SweepAxis, compare_runs, run_sweep
    from lsm.infer.report import RunView, write_report
    import torch

    from lsm.data_gen.embed import persona_embeddings
    from lsm.data_gen.gen import neighbor_rule_of
    from lsm.infer.rollout import Rollout, RolloutConfig
    from lsm.model.checkpoint import load_checkpoint

    if ckpt is None or world is None or scenario is None:
        raise UsageError("lsm rollout needs --ckpt DIR --world WORLD.h5 --scenario SCENARIO (see lsm rollout --help)")
    student = load_checkpoint(ckpt)
    if student.vocab is None:
        raise UsageError(f"{student.path} has no identity vocabulary (trained before it was stored); retrain it")
    rule = neighbor_rule_of(resolve_config(teacher, "teacher"))
    cfg = RolloutConfig(ticks=ticks, seed=seed, neighbors=rule.k, neighbor_weights=rule.weights, vary_neighbors=rule.vary,
                        agent_chunk=agent_chunk, store_text=store_text, device=device)
    w = load_world(world)
    sc_path = resolve_config(scenario, "scenarios")
    sc = load_scenario(sc_path)
    stem = out[:-3] if out.endswith(".h5") else out
    report_dir = Path(report or f"{stem}_report")
    # check the options before any work
    by_attrs = [b.strip() for b in by.split(",")] if by else None
    unknown = [a for a in by_attrs or [] if a not in w.population.categorical]
    if unknown:
        raise UsageError(f"--by {unknown}: not categorical attributes of {world} ({', '.join(w.population.categorical)})")
    cf_sc = None
    if counterfactual:
        cf_path = resolve_config(counterfactual, "scenarios")
        cf_sc = load_scenario(cf_path)
        if cf_sc.actions.labels != sc.actions.labels:
            raise UsageError(f"--counterfactual {cf_path}: a counterfactual scenario must keep the action space "
                             f"({', '.join(sc.actions.labels)}); it has {', '.join(cf_sc.actions.labels)}")
    if sweep2 and not sweep:
        raise UsageError("--sweep2 needs --sweep")
    if sweep_action and sweep_action not in sc.actions.labels:
        raise UsageError(f"--sweep_action {sweep_action!r} is not an action of {sc.name} ({', '.join(sc.actions.labels)})")
    axes = []
    if sweep:
        try:
            axes = [SweepAxis.parse(s) for s in (sweep, sweep2) if s]
            data = yaml.safe_load(Path(sc_path).read_text())
            for axis in axes:
                axis.apply(copy.deepcopy(data), axis.values[0])
        except ValueError as err:
            raise UsageError(str(err)) from None
    persona = torch.from_numpy(persona_embeddings(world, w.population.persona).astype(np.float32))  # (N, T)
    r = Rollout(student, w, sc, cfg, persona_emb=persona, scenario_source=str(sc_path))
    summary = r.run(out, world, Path(sc_path).read_text(), quiet=quiet, restart=restart)
    print(f"rollout: {r.n:,} agents x {r.n_ticks} ticks, {summary['forward_seconds_per_tick']:.3f} s forward per tick "
          f"({r.n / max(summary['forward_seconds_per_tick'], 1e-9):,.0f} agent-ticks/s), {summary['wall_seconds']:.1f} s wall")
    print(write_report(out, report_dir, by_attrs, clusters, seed))
    print(f"Written: {out}, report {report_dir}/")
    if cf_sc is not None:
        cf_out = f"{stem}_cf.h5"
        cf = Rollout(student, w, cf_sc, cfg, persona_emb=r.persona, scenario_source=str(cf_path))
        cf.run(cf_out, world, Path(cf_path).read_text())
        base = RunView.read(out)
        labels = np.load(report_dir / "cluster_labels.npy")
        text = compare_runs(base, RunView.read(cf_out), labels, by_attrs or list(base.groups)[:2], report_dir / "counterfactual")
        (report_dir / "counterfactual" / "summary.md").write_text(text)
        print(text)
        print(f"Written: {cf_out}, {report_dir / 'counterfactual'}/")
    if axes:
        def one(scn):
            return Rollout(student, w, scn, cfg, persona_emb=r.persona).run(None)

        grid = run_sweep(one, data, str(sc_path), axes, w, seed, report_dir / "sweep", sweep_action)
        print(f"sweep over {' x '.join(a['path'] for a in grid['axes'])}: {report_dir / 'sweep'}/ (sweep.csv, sweep.json, sweep.png)")


def validate(teacher: str | None = None, teacher_repeat: str | None = None, student: str | None = None,
             json: str | None = None, clusters: int = 4, seed: int = 0) -> None:
    """Fidelity of a student rollout to the teacher, each metric beside the teacher's noise floor
    (the teacher against its own repeat with another LLM sampling seed) and their ratio.

    Args:
        teacher: teacher trace (`lsm gen ... --llm_seed A`).
        teacher_repeat: the same run with another LLM sampling seed (`--llm_seed B`): the noise floor.
        student: student rollout on the same world and scenario (`lsm rollout`).
        json: also write `{metric: {"student": x, "floor": y, "ratio": x / y}}` to this file.
        clusters: k of the k-means partitions compared by the ARI.
        seed: k-means seed.
    """
    from lsm.infer.validate import format_table, write_json
    from lsm.infer.validate import validate as run_validate

    if teacher is None or teacher_repeat is None or student is None:
        raise UsageError("lsm validate needs --teacher T.h5 --teacher_repeat T2.h5 --student ROLLOUT.h5 (see lsm validate --help)")
    try:
        result = run_validate(teacher, teacher_repeat, student, clusters, seed)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"teacher {teacher} | repeat {teacher_repeat} | student {student}")
    print(format_table(result))
    if json:
        write_json(result, json)
        print(f"Written: {json}")


def bench(agents: str = "1e3,1e4,1e5,1e6", ckpt: str | None = None, teacher: str = "embedded", teacher_agents: int = 8,
          device: str = "cpu", ticks: int = 2, json: str | None = None) -> None:
    """Teacher vs student speed in one run on this machine: teacher agent-ticks/s (embedded LLM,
    one tick of a small world), student agent-ticks/s and peak memory per population size (each
    size in its own process; a size that does not fit is reported, not fatal), their ratio, and
    FLOPs per agent-tick against the measured matmul throughput.

    Args:
        agents: comma-separated population sizes (1e5 and 100000 both work).
        ckpt: student checkpoint (default: an untrained student of the `small` preset's size).
        teacher: teacher config timed (a path or shipped name; `none` skips the teacher).
        teacher_agents: agents of the teacher's timing run.
        device: `cpu` or `cuda` for the student.
        ticks: timed ticks per size (after one warm-up tick).
        json: also write the results to this file.
    """
    import json as jsonlib
    import platform

    from lsm.infer.bench import bench_sizes, default_student, flops_per_agent_tick, matmul_gflops, time_teacher

    try:
        sizes = [int(float(a)) for a in agents.split(",") if a.strip()]
    except ValueError:
        raise UsageError(f"--agents {agents!r}: expected comma-separated numbers such as 1e3,1e4") from None
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {__import__('torch').get_num_threads()}, device {device}")
    result: dict = {"device": device}
    if teacher != "none":
        t = time_teacher(teacher, teacher_agents)
        result["teacher"] = t
        result["teacher_agent_ticks_per_s"] = t["agent_ticks_per_s"]
        print(f"teacher ({teacher}, {t['agents']} agents x 1 tick): {t['agent_ticks_per_s']:.3f} agent-ticks/s of LLM time, "
              f"{t['tokens_per_s']:.0f} tokens/s")
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
    print("| agents | edges | s / tick | agent-ticks/s | peak RSS GiB | peak GPU GiB | vs teacher |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['agents']:,} | – | – | – | – | – | {r['error']} |")
            continue
        ratio = f"{r['agent_ticks_per_s'] / result['teacher_agent_ticks_per_s']:,.0f}x" if "teacher_agent_ticks_per_s" in result else "–"
        gpu = f"{r['peak_gpu_gb']:.2f}" if r.get("peak_gpu_gb") is not None else "–"
        print(f"| {r['agents']:,} | {r['edges']:,} | {r['seconds_per_tick']:.3f} | {r['agent_ticks_per_s']:,.0f} | "
              f"{r['peak_rss_gb']:.2f} | {gpu} | {ratio} |")
    print(f"student: {result['student_params']:,} parameters, {fl / 1e6:.2f} MFLOP per agent-tick (matmuls); "
          f"matmul throughput {gf:.0f} GFLOP/s -> at most {gf * 1e9 / fl:,.0f} agent-ticks/s if compute-bound; "
          f"measured best {best:,.0f} ({best * fl / (gf * 1e9):.0%} of it)")
    if "speedup" in result:
        print(f"speedup (best student / teacher): {result['speedup']:,.0f}x")
    if json:
        Path(json).write_text(jsonlib.dumps(result, indent=1))
        print(f"Written: {json}")


def demo(out: str = "out/demo", agents: int = 48, ticks: int = 3, scenario: str = "vaccine_campaign",
         teacher: str = "debug", preset: str = "small", epochs: int | None = None, seed: int = 0) -> None:
    """The whole pipeline on this CPU: world -> teacher traces with two LLM seeds (the second is
    the noise floor) -> student training -> rollout with a counterfactual -> validate -> plots.
    Each finished step is kept; rerunning the command resumes where it stopped.

    Args:
        out: demo folder (every artefact goes there).
        agents: agents of the ANES world (48 keeps the demo near 15 minutes on 2 cores; 100 takes ~35).
        ticks: ticks of the scenario (shortened; the debug teacher costs ~3 s per agent-tick on 2 cores).
        scenario: shipped scenario name or path.
        teacher: teacher config (`debug`: short answers; `embedded`: the full teacher).
        preset: training preset.
        epochs: training epochs (default: the preset's).
        seed: world and scenario seed.
    """
    from lsm.infer.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=out, agents=agents, ticks=ticks, scenario=scenario, teacher=teacher, preset=preset,
                        epochs=epochs, seed=seed))


def probe(ckpt: str | None = None, rollout: str | None = None, out: str = "probe_report", teacher: str | None = None,
          agent: int | None = None, seed: int = 0) -> None:
    """Linear probes on the student's state (axis recovery) and one agent's readout; writes a
    markdown + PNG report.

    Args:
        ckpt: student checkpoint file or folder.
        rollout: a rollout of that student (`lsm rollout`): identities are probed over its ticks,
            and the readout agent is replayed from it.
        out: report folder (`report.md`, `axis_recovery.png`, `probes.json`).
        teacher: a teacher trace of the same world: also probe the teacher's channel ratings,
            decisions and labelled reasoning features (the student replayed on that run).
        agent: the agent to read out (default: the first agent whose decision changed most often).
        seed: seed of the agent split.
    """
    import numpy as np

    from lsm.data_gen.store import TraceFile
    from lsm.probes.readout import agent_readout
    from lsm.probes.report import axis_recovery, write_probe_report
    from lsm.model.checkpoint import load_checkpoint

    if ckpt is None or rollout is None:
        raise UsageError("lsm probe needs --ckpt DIR --rollout ROLLOUT.h5 (see lsm probe --help)")
    student = load_checkpoint(ckpt)
    results = axis_recovery(student, rollout, teacher, seed)
    if agent is None:
        with TraceFile(rollout) as tf:
            d = tf.array("decision")
        agent = int(np.argmax((np.diff(d, axis=0) != 0).sum(0))) if len(d) > 1 else 0
    try:
        readout = agent_readout(student, rollout, agent)
    except ValueError as err:
        raise UsageError(str(err)) from None
    text = write_probe_report(results, out, f"Probe report: {rollout}", readout.markdown())
    print(text)
    print(f"Written: {out}/report.md, {out}/axis_recovery.png, {out}/probes.json")


def narrate(rollout: str | None = None, agent: str | None = None, ticks: str | None = None, teacher: str = "embedded",
            ask: str | None = None, ckpt: str | None = None, cluster: int | None = None, report: str | None = None,
            flipped: str | None = None, limit: int = 3, attempts: int = 3, seed: int = 0, out: str | None = None) -> None:
    """First-person narratives of chosen agents of a rollout, grounded in their records (every
    decision, number and tick the text names is checked; failures are regenerated, then flagged);
    with --ask, an interview: the agent answers a question from its record.

    Args:
        rollout: a student rollout (`lsm rollout`).
        agent: agent id(s), comma-separated.
        ticks: `A:B` (inclusive; default: all ticks).
        teacher: LLM config (a teacher YAML; `embedded` by default, any backend works).
        ask: a question to put to each chosen agent (interview mode).
        ckpt: the student that wrote the rollout (default: the checkpoint recorded in the file).
        cluster: choose agents of this reasoning-profile cluster (needs --report, the rollout's report folder).
        report: the rollout's report folder (default: `<rollout without .h5>_report`).
        flipped: a counterfactual rollout (`<out>_cf.h5`): choose agents whose final decision differs.
        limit: at most this many agents when chosen by cluster or flip.
        attempts: generations per narrative before it is flagged.
        seed: LLM sampling seed.
        out: also write the markdown to this file.
    """
    import numpy as np

    from lsm.config import load_config
    from lsm.data_gen.store import TraceFile, read_configs
    from lsm.data_gen.teacher.config import TeacherConfig, make_backend
    from lsm.narrate.narrator import narrate as run_narrate
    from lsm.probes.readout import agent_readout
    from lsm.model.checkpoint import load_checkpoint

    if rollout is None:
        raise UsageError("lsm narrate needs --rollout ROLLOUT.h5 and --agent ID (or --cluster K / --flipped CF.h5)")
    with TraceFile(rollout) as tf:
        n, T = tf.n_agents, tf.n_ticks
        final = tf.array("decision")[-1]
        recorded = read_configs(tf.f).get("student", {})
    if agent is not None:
        try:
            ids = [int(a) for a in str(agent).split(",") if a.strip() != ""]
        except ValueError:
            raise UsageError(f"--agent {agent!r}: expected agent ids such as 3 or 3,7") from None
    elif cluster is not None:
        labels_path = Path(report or (rollout[:-3] if rollout.endswith(".h5") else rollout) + "_report") / "cluster_labels.npy"
        if not labels_path.exists():
            raise UsageError(f"--cluster needs the rollout's report folder; {labels_path} does not exist (pass --report)")
        ids = [int(i) for i in np.nonzero(np.load(labels_path) == cluster)[0][:limit]]
    elif flipped is not None:
        with TraceFile(flipped) as tf:
            other = tf.array("decision")[-1]
        ids = [int(i) for i in np.nonzero(other != final)[0][:limit]]
        if not ids:
            print(f"No agent's final decision differs between {rollout} and {flipped}.")
            return
    else:
        raise UsageError("choose agents: --agent ID, --cluster K or --flipped CF.h5")
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise UsageError(f"--agent {bad}: {rollout} has agents 0..{n - 1}")
    if ticks:
        try:
            a, b = (int(x) for x in ticks.split(":"))
        except ValueError:
            raise UsageError(f"--ticks {ticks!r}: expected A:B, e.g. 0:2") from None
        if not (0 <= a <= b < T):
            raise UsageError(f"--ticks {ticks}: the rollout has ticks 0..{T - 1}")
        span = range(a, b + 1)
    else:
        span = range(T)
    ckpt = ckpt or recorded.get("checkpoint")
    if not ckpt or not Path(ckpt).exists():
        raise UsageError(f"the rollout's checkpoint {ckpt!r} is not here; pass --ckpt")
    student = load_checkpoint(ckpt)
    backend = make_backend(load_config(TeacherConfig, resolve_config(teacher, "teacher"), kind="teacher config"))
    parts = []
    for i in ids:
        record = agent_readout(student, rollout, i, span)
        nar = run_narrate(record, backend, question=ask, attempts=attempts, seed=seed)
        md = nar.markdown() + f"\n*{nar.seconds:.1f} s*\n"
        print(md, flush=True)
        parts.append(md)
    if out:
        Path(out).write_text("\n".join(parts))
        print(f"Written: {out}")


def serve(host: str = "127.0.0.1", port: int = 8000, batch_size: int = 8, verbose: bool = False) -> None:
    """Serve the embedded model over an OpenAI-compatible HTTP API (chat completions with JSON
    schemas and logprobs), for the `openai` backend or any OpenAI client.

    Args:
        host: interface to bind (loopback by default).
        port: TCP port (0: any free port; the URL is printed).
        batch_size: generation batch size of the embedded backend.
        verbose: log every request.
    """
    from lsm.data_gen.teacher.backends.embedded import EmbeddedBackend, EmbeddedConfig
    from lsm.data_gen.teacher.backends.server import serve as run_server

    run_server(EmbeddedBackend(EmbeddedConfig(batch_size=batch_size)), host, port, verbose)


def info(file: str) -> None:
    """Describe any LSM HDF5 file (world, teacher trace or student rollout).

    Args:
        file: the HDF5 file.
    """
    import json

    from lsm.data_gen.store import TRACE_FIELDS, TraceFile, check_header, open_h5

    with open_h5(file) as f:
        kind = check_header(f)
        print(f"{file}: {kind}, schema {f.attrs['schema_version']}, complete: {bool(f.attrs.get('complete', False))}")
        print(f"  seeds: {f.attrs.get('seeds', '{}')}")
        print(f"  configs: {', '.join(k.split('.', 1)[1] for k in f.attrs if k.startswith('config.'))}")
        print(f"  packages: {f.attrs.get('package_versions', '{}')}")
        if kind == "world":
            print(f"  agents: {int(f['population'].attrs['n']):,}, edges: {f['graph/edge_index'].shape[1]:,}")
            return
    with TraceFile(file, allow_partial=True) as tf:
        print(f"  agents: {tf.n_agents:,}, ticks: {tf.n_ticks}, dims: {json.dumps(tf.dims)}")
        for name in tf.fields:
            print(f"  {name:<18} {str(tf.f[name].shape):<22} {TRACE_FIELDS[name].doc}")


COMMANDS = {"world": world, "scenario": scenario, "gen": gen, "sensitivity": sensitivity, "evaluate": evaluate,
            "rollout": rollout, "validate": validate, "bench": bench, "demo": demo,
            "probe": probe, "narrate": narrate, "serve": serve, "info": info}


def _underscore_option(arg: str) -> str:
    if not arg.startswith("--") or arg == "--":
        return arg
    name, eq, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + eq + value


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import auto_cli

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["train"]:  # LightningCLI owns its own parser: `lsm train fit --config ...`
        from lsm.train.cli import main as train_main

        try:
            train_main(args[1:])
        except (ConfigError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    from lsm.data_gen.teacher.backends.openai_http import BackendError
    from lsm.data_gen.store import StoreError

    # `--teacher-repeat` and `--teacher_repeat` are the same option (names are Python parameters)
    args = [_underscore_option(a) for a in args]
    try:
        auto_cli(COMMANDS, args=args, as_positional=True)
    except (ConfigError, StoreError, UsageError, BackendError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
