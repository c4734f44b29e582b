"""`lsm`: one command line, one subcommand per pipeline step.

Each subcommand is a plain function whose signature and docstring are its `--help`
(jsonargparse); its body calls the function of the package that does the work (`lsm.infer.run`,
`lsm.narrate.run`, ...), which returns results and text, and prints. Notebooks, `lsm demo` and
the tests call those same functions; no package imports this module. Errors a user can fix (a
malformed config or scenario, an unreadable file, a `UsageError`) are printed as one paragraph
without a traceback, and the exit status is 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lsm.config import ConfigError, UsageError, resolve_config
from lsm.errors import quiet_teardown
from lsm.paths import check_output_file


def world(
    population: str = "configs/population/anes96.yaml",
    graph: str = "configs/graph/default.yaml",
    agents: int = 1000,
    seed: int = 0,
    out: str = "world.h5",
    backstories: bool = False,
    teacher: str = "embedded",
    quiet: bool = False,
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
        quiet: no progress bar (steps, backstories written and embedded, per second).
    """
    from lsm.data_gen.make_world import make_world

    make_world(population, graph, agents, seed, out, backstories, teacher, echo=print, quiet=quiet)


def scenario(file: str, world: str | None = None, seed: int = 0) -> None:
    """Validate a scenario file and print its timeline.

    Args:
        file: scenario YAML (a path, or a shipped name such as `vaccine_campaign`).
        world: optionally a world HDF5 file: also check the exposure rules against its
            attributes and outlets, and print how many agents each scheduled event reaches.
        seed: seed for the seeded exposure fractions in that preview.
    """
    from lsm.society.scenario_preview import preview_scenario

    print(preview_scenario(file, world, seed).text)


def gen(
    world: str | None = None,
    scenario: str | None = None,
    teacher: str = "embedded",
    seed: int = 0,
    out: str = "traces.h5",
    llm_seed: int | None = None,
    restart: bool = False,
    quiet: bool = False,
    profile: bool = False,
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
        profile: print seconds per phase (prompts, generation with its prefill, decode and
            constrained decoding, repairs, option scoring, calibration, sentence embedding,
            journal); the run summary stores them either way (`profile`).
    """
    from lsm.data_gen.gen import format_profile, format_summary, generate

    if world is None or scenario is None:
        raise UsageError("lsm gen needs --world WORLD.h5 and --scenario SCENARIO (see lsm gen --help)")
    check_output_file(out)
    summary = generate(world, resolve_config(scenario, "scenarios"), resolve_config(teacher, "teacher"), seed, out,
                       quiet=quiet, restart=restart, llm_seed=llm_seed)
    size_mb = Path(out).stat().st_size / 2**20
    print(format_summary(summary))
    if profile:
        print(format_profile(summary))
    print(f"Written: {out} ({size_mb:.1f} MiB)")


def sensitivity(trace: str, tick: int | None = None, agents: int = 16, seed: int = 0, write: bool = False,
                json: str | None = None, orders: int = 4) -> None:
    """How far the teacher's decisions move with its neighbours' messages, and why.

    Re-scores a sample of agents with the messages removed, in several orders, one at a time, as
    same-length placebo texts, as the most opposite-stance messages, or with another agent's
    persona; prints order noise, the presence, content and total social effects, how additive
    single messages are and how well sender stance, tie type and message embedding predict a
    message's content effect (95 % bootstrap intervals over agents).

    Args:
        trace: teacher trace file (from `lsm gen`).
        tick: tick to probe (default: the last; tick 0 has no messages).
        agents: how many agents to sample.
        seed: seed of the sample, of the message orders and of the placebo texts.
        write: also store the result in the trace file (attribute `sensitivity`).
        json: also write the result here (`lsm evaluate --sensitivity` puts the student's TV for
            the same agents and tick beside it).
        orders: orders of the shown messages scored per agent (all of them where there are no
            more); their average is the order-free distribution.
    """
    import json as _json

    from lsm.data_gen.teacher.sensitivity import format_report, measure
    from lsm.society.store import open_h5

    if orders < 1:
        raise UsageError("--orders must be 1 or more")
    r = measure(trace, tick, agents, seed, orders=orders)
    print(format_report(r))
    if write:
        with open_h5(trace, "a") as f:
            f.attrs["sensitivity"] = _json.dumps(r)
    if json:
        Path(json).write_text(_json.dumps(r, indent=1))


def evaluate(ckpt: str | None = None, held_out: str | None = None, mlp: str | None = None, train: str | None = None,
             sensitivity: str | None = None) -> None:
    """Score a student on held-out traces against baselines, with its paired ablations.

    The held-out table: the student against the per-tick marginal, repeat-previous, the same
    student with shuffled senders and (optionally) an identity-only MLP checkpoint; then the
    student's paired ablations (messages removed, senders shuffled, opposite stances).

    Args:
        ckpt: student checkpoint file or run folder (`runs/small/checkpoints`).
        held_out: comma-separated trace files or globs to evaluate on, e.g. the second LLM seed
            of the training scenarios or a scenario left out of training.
        mlp: checkpoint of the identity-only baseline (`--config configs/train/overlay/no_graph.yaml`).
        train: comma-separated trace files the marginal baseline is computed from (default: the
            checkpoint's own training files).
        sensitivity: a JSON from `lsm sensitivity TRACE --json S.json` on one of the held-out
            traces: the student's paired-ablation TV for the same agents and tick is printed beside
            the teacher's own.
    """
    from lsm.train.held_out import evaluate_checkpoint

    if ckpt is None or held_out is None:
        raise UsageError("lsm evaluate needs --ckpt DIR --held_out TRACES (see lsm evaluate --help)")
    print(evaluate_checkpoint(ckpt, held_out, mlp, train, sensitivity).text)


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
    neighbors: str | None = None,
    teacher: str | None = None,
    agent_chunk: int | None = None,
    store: str = "",
    device: str = "cpu",
    quiet: bool = False,
    restart: bool = False,
    nproc: int = 1,
) -> None:
    """Advance a whole population with the trained student; write the rollout and a report.

    One forward pass per tick; every tick is streamed to HDF5 (trace schema, kind
    student_rollout) and a report folder is written.

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
        counterfactual: a second run on the same world and seed: another scenario (a path or
            shipped name), or interventions -- typed (`"events[0].credibility*=0.5; sever=household"`)
            or a YAML file of them (`society.interventions`); per-agent diffs go to
            `<report>/counterfactual/`, its rollout (recording its interventions) to `<out without .h5>_cf.h5`.
        sweep: one edit over values, `EDIT=VALUES` (`events[0].credibility=0.2,0.5,0.9`,
            `events[0].exposure.fraction=0:1:5`, `events[0].credibility*=0.5,1,2`; `events.0.credibility`
            spells the same); writes `<report>/sweep/` (grid, JSON, plot).
        sweep2: a second axis: the grid is sweep x sweep2 and the plot a heatmap.
        sweep_action: the action whose final share the sweep plot shows (default: the first).
        neighbors: who hears whom, overriding the checkpoint's rule (that of its training traces):
            a neighbour-rule YAML (`k`, `weights`, `vary`) or a teacher config (path or shipped name).
        teacher: deprecated spelling of --neighbors with a teacher config.
        agent_chunk: agents per forward pass (0: all at once; default: 16,384 on a CPU, all on a GPU);
            the result does not depend on it, the speed and memory do.
        store: optional per-tick fields, comma-separated: `latent` (free latent, for `lsm probe`),
            `memory` (memory summary, for `lsm probe`), `text` (predicted expression and reasoning
            embeddings, 2 x 384 float16 per agent-tick), or `all`. By default a rollout stores
            decisions and their distributions, channels, stance, salience, shown neighbours and
            exposures: what the report, `lsm validate` and `lsm narrate` read.
        device: `cpu` or `cuda`.
        quiet: no progress bar.
        restart: discard an interrupted run's journal (`<out>.journal/`) instead of resuming it.
        nproc: ranks the main rollout is sharded over, each holding its share of the agents
            (torch.distributed, gloo; docs/sharding.md); the file is the same for every value. Under
            `torchrun` the ranks are torchrun's.
    """
    from lsm.infer.run import run_rollout

    if ckpt is None or world is None or scenario is None:
        raise UsageError("lsm rollout needs --ckpt DIR --world WORLD.h5 --scenario SCENARIO (see lsm rollout --help)")
    check_output_file(out)
    if teacher is not None:
        print("lsm rollout: --teacher is deprecated; the rule comes from the checkpoint, --neighbors overrides it",
              file=sys.stderr)
    run_rollout(ckpt, world, scenario, out, ticks, seed, report, by, clusters, counterfactual, sweep, sweep2, sweep_action,
                neighbors or teacher, agent_chunk, store, device, quiet, restart, echo=print, nproc=nproc)


def validate(reference: str | None = None, repeat: str | None = None, student: str | None = None,
             json: str | None = None, clusters: int = 4, seed: int = 0) -> None:
    """Fidelity of a student rollout to a teacher trace, each metric beside the teacher's noise floor.

    The noise floor is the teacher against its own repeat with another LLM sampling seed; each
    metric is printed with the floor and their ratio.

    Args:
        reference: the teacher trace the student is compared with (`lsm gen ... --llm_seed A`).
        repeat: the same teacher run with another LLM sampling seed (`--llm_seed B`): the noise floor.
        student: student rollout on the same world and scenario (`lsm rollout`).
        json: also write `{metric: {"student": x, "floor": y, "ratio": x / y}}` to this file.
        clusters: k of the k-means partitions compared by the ARI.
        seed: k-means seed.
    """
    from lsm.infer.run import run_validation

    if reference is None or repeat is None or student is None:
        raise UsageError("lsm validate needs --reference T.h5 --repeat T2.h5 --student ROLLOUT.h5 (see lsm validate --help)")
    print(run_validation(reference, repeat, student, json, clusters, seed).text)


def bench(agents: str = "1e3,1e4,1e5,1e6", ckpt: str | None = None, teacher: str = "embedded", teacher_agents: int = 8,
          device: str = "cpu", ticks: int = 2, json: str | None = None, teacher_baseline: str = "none") -> None:
    """Teacher vs student speed in one run on this machine.

    Teacher agent-ticks/s (embedded LLM, one tick of a small world), student agent-ticks/s and
    peak memory per population size (each size in its own process; a size that does not fit is
    reported, not fatal), their ratio, and FLOPs per agent-tick against the measured matmul
    throughput.

    Args:
        agents: comma-separated population sizes (1e5 and 100000 both work).
        ckpt: student checkpoint (default: an untrained student of the `small` preset's size).
        teacher: teacher config timed (a path or shipped name; `none` skips the teacher).
        teacher_agents: agents of the teacher's timing run.
        device: `cpu` or `cuda` for the student.
        ticks: timed ticks per size (after one warm-up tick).
        json: also write the results to this file.
        teacher_baseline: another teacher config timed first on the same world, and the
            teacher's ratio to it (`embedded_baseline`: the embedded teacher before its speed work).
    """
    from lsm.infer.run import run_bench

    run_bench(agents, ckpt, teacher, teacher_agents, device, ticks, json, echo=print, teacher_baseline=teacher_baseline)


def demo(out: str = "out/demo", agents: int = 48, ticks: int = 3, scenario: str = "vaccine_campaign",
         teacher: str = "demo", preset: str = "small", epochs: int | None = None, seed: int = 0) -> None:
    """The whole pipeline on this CPU, from a world to a validated student rollout and plots.

    World -> teacher traces with two LLM seeds (the second is the noise floor) -> student
    training -> rollout with a counterfactual -> validate -> plots. Each finished step is kept;
    rerunning the command resumes where it stopped.

    Args:
        out: demo folder (every artefact goes there).
        agents: agents of the ANES world (48: about 7 minutes on 2 cores, 93 % of it the teacher).
        ticks: ticks of the scenario (shortened; the demo teacher takes ~1.3 s per agent-tick on 2 cores).
        scenario: shipped scenario name or path.
        teacher: teacher config (`demo`: short answers, bfloat16 where native; `debug`: the same in float32; `embedded`: the full teacher).
        preset: training preset.
        epochs: training epochs (default: the preset's).
        seed: world and scenario seed.
    """
    from lsm.pipeline import DemoConfig, run_demo

    run_demo(DemoConfig(out=out, agents=agents, ticks=ticks, scenario=scenario, teacher=teacher, preset=preset,
                        epochs=epochs, seed=seed))


def probe(ckpt: str | None = None, rollout: str | None = None, out: str = "probe_report", reference: str | None = None,
          agent: int | None = None, seed: int = 0) -> None:
    """Linear probes on the student's state (axis recovery) and one agent's readout, as a report.

    Writes a markdown + PNG report folder.

    Args:
        ckpt: student checkpoint file or folder.
        rollout: a rollout of that student (`lsm rollout`): identities are probed over its ticks,
            and the readout agent is replayed from it.
        out: report folder (`report.md`, `axis_recovery.png`, `probes.json`).
        reference: a teacher trace of the same world: also probe the teacher's channel ratings,
            decisions and labelled reasoning features (the student replayed on that run).
        agent: the agent to read out (default: the first agent whose decision changed most often).
        seed: seed of the agent split.
    """
    from lsm.probes.run import run_probe

    if ckpt is None or rollout is None:
        raise UsageError("lsm probe needs --ckpt DIR --rollout ROLLOUT.h5 (see lsm probe --help)")
    print(run_probe(ckpt, rollout, out, reference, agent, seed).text)


def narrate(rollout: str | None = None, agent: str | None = None, ticks: str | None = None, teacher: str = "embedded",
            ask: str | None = None, ckpt: str | None = None, cluster: int | None = None, report: str | None = None,
            flipped: str | None = None, limit: int = 3, attempts: int = 3, seed: int = 0, out: str | None = None,
            battery: int | None = None) -> None:
    """First-person narratives (or, with --ask, interviews) of chosen agents of a rollout or teacher trace.

    The facts that answer the question are chosen from the agent's record; the LLM phrases
    them; the answer is checked (grounded, relevant, attributed, complete), regenerated, and
    where it still fails, replaced by the facts as plain text, flagged. With --battery N, every
    kind of question is put to N agents and the rate of answers passing each check is printed.

    Args:
        rollout: a student rollout (`lsm rollout`) or a teacher trace (`lsm gen`).
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
        seed: LLM sampling seed (and, with --battery, of the agents and questions drawn).
        out: also write the markdown (with --battery: every answer as JSON) to this file.
        battery: put the question battery to this many agents, drawn across final decisions and groups.
    """
    from lsm.narrate.run import run_battery_on, run_narrate

    if rollout is None:
        raise UsageError("lsm narrate needs --rollout ROLLOUT.h5 and --agent ID (or --cluster K / --flipped CF.h5 / --battery N)")
    if battery is not None:
        run_battery_on(rollout, battery, teacher, ckpt, ticks, attempts, seed, out, echo=lambda text: print(text, flush=True))
        return
    run_narrate(rollout, agent, ticks, teacher, ask, ckpt, cluster, report, flipped, limit, attempts, seed, out,
                echo=lambda text: print(text, flush=True))


def serve(host: str = "127.0.0.1", port: int = 8000, batch_size: int = 8, verbose: bool = False) -> None:
    """Serve the embedded model over an OpenAI-compatible HTTP API.

    For the `openai` backend or any OpenAI client: chat completions with JSON schemas and
    logprobs, completions with token-id prompts and `prompt_logprobs`, and `/tokenize`, as vLLM's
    server speaks them (so the openai backend scores options exactly against it).

    Args:
        host: interface to bind (loopback by default).
        port: TCP port (0: any free port; the URL is printed).
        batch_size: generation batch size of the embedded backend.
        verbose: log every request.
    """
    from lsm.data_gen.teacher.backends.embedded import EmbeddedBackend, EmbeddedConfig
    from lsm.data_gen.teacher.backends.server import serve as run_server

    run_server(EmbeddedBackend(EmbeddedConfig(batch_size=batch_size)), host, port, verbose)


def explore(path: str, ckpt: str | None = None, port: int = 8765, host: str = "127.0.0.1", teacher: str = "embedded") -> None:
    """Serve a web explorer of worlds, teacher traces and student rollouts on this machine.

    Overview charts (decision shares, groups, channels, events), the social graph, every
    agent's record with narration and interviews, and what-if runs of the student.

    Args:
        path: a folder (every LSM file under it), a file, or several, comma-separated. Only
            files under these are served.
        ckpt: the student checkpoint for attention, narration and what-ifs (default: the one
            each rollout records, or `runs/checkpoints` beside it).
        port: TCP port.
        host: interface to bind: loopback by default; anything else serves the files to the network.
        teacher: teacher preset whose LLM narrates (a path or a shipped name).
    """
    from lsm.explore.app import ExploreConfig
    from lsm.explore.app import serve as run_server

    run_server(ExploreConfig([p for p in path.split(",") if p.strip()], ckpt, teacher), host, port)


def capacity(traces: str = "data_gen/corpus/n200/vaccine_campaign_s0.h5,data_gen/corpus/n200/vaccine_campaign_s1.h5",
             sizes: str = "25,50,100,150", held_out: int = 50, steps: int = 300, beta: float = 1.5, seed: int = 0,
             json: str | None = None) -> None:
    """The text pathway's capacity on real messages, with a known answer.

    Keeps real teacher traces (world, who was shown whom, the real messages and their
    embeddings) and plants the decisions: influence through a hidden direction of the message
    embeddings, unrelated to the senders' stances. Trains a student on a growing number of
    agents (the same steps each; with and without the paired loss) and prints, for held-out
    agents, how well its change when messages are removed follows the truth's (docs/recovery.md#the-text-pathways-capacity-lsm-capacity).

    Args:
        traces: teacher traces of one world, comma-separated.
        sizes: training agents per trace, comma-separated (the sample-size curve).
        held_out: agents held out of training and scored.
        steps: optimiser steps of every model.
        beta: the planted influence's strength (logit change per unit of the hidden projection).
        seed: seed of the direction, the split and training.
        json: also write the results here.
    """
    from lsm.recovery.capacity import CapacityConfig, main_capacity

    try:
        size_list = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--sizes {sizes!r}: comma-separated whole numbers of agents, e.g. 25,50,100") from None
    files = [x for x in traces.split(",") if x.strip()]
    for f in files:
        if not Path(f).is_file():
            raise UsageError(f"--traces: {f} is not a file")
    if not size_list or min(size_list) < 1 or held_out < 1 or steps < 1:
        raise UsageError(f"--sizes {sizes!r}, --held_out {held_out}, --steps {steps}: each at least 1")
    main_capacity(CapacityConfig(files, size_list, held_out, steps, beta=beta, seed=seed), json)


def calibrate(
    ckpt: str | None = None,
    world: str | None = None,
    scenario: str | None = None,
    observed: str | None = None,
    fit: str | None = None,
    out: str = "calibration",
    method: str = "adam",
    baseline: str = "none",
    restarts: int = 3,
    steps: int = 30,
    lr: float = 0.3,
    budget: int = 0,
    seed: int = 0,
    check: bool = False,
    truth: str = "planted",
    planted: str = "planted",
    true: str | None = None,
    device: str = "cpu",
    quiet: bool = False,
    restart: bool = False,
) -> None:
    """Fit a scenario's unknowns to observed aggregates by the gradient through the student.

    The rollout of the student is made differentiable in the unknowns (event features and group
    offsets enter as tensors, draws are straight-through with fixed random numbers) and Adam
    fits them from several seeded starts; the fitted scenario is an ordinary scenario that
    `lsm rollout` takes (docs/calibrate.md).

    Args:
        ckpt: student checkpoint file or folder.
        world: world HDF5 file the population is simulated on.
        scenario: the base scenario (a path or a shipped name); the unknowns are written into it.
        observed: the observation file (CSV: tick, metric, target, group, value, se, n;
            docs/calibrate.md#the-observation-file). With --check, made from the truth.
        fit: the unknowns with bounds: a YAML file, or inline
            `events.0.credibility=0..1,events.1.valence=-1..0,offsets.vaccinate.party=republican=-2..2`
            (also events.I.exposure.fraction and neighbors.weights.TIE, gradient-free methods only).
        out: output folder (fitted_scenario.yaml, fit.json, series.csv, fit.png, loss.png, report.md).
        method: adam (the gradient), cmaes or random.
        baseline: also run a gradient-free method (cmaes or random) with the same number of rollouts,
            and report how much faster and closer the gradient is (none: skip).
        restarts: Adam's seeded starting points.
        steps: Adam's steps per restart (one differentiable rollout each).
        lr: Adam's step size in the reparameterised unknowns.
        budget: rollouts of a gradient-free method (0: restarts x steps).
        seed: seed of the rollouts (exposures, neighbours, draws), the starts and the search.
        check: the known-answer check: a truth with hidden values plays the scenario, only its
            aggregates are fitted, and fitted values are scored against the true ones.
        truth: the check's truth: planted (the planted society; a student trained on its traces)
            or student (the student itself with the hidden values).
        planted: the planted society's config for --truth planted (a path or a shipped name).
        true: the check's hidden values, `PATH=VALUE,...` (default: drawn with --seed).
        device: cpu or cuda.
        quiet: no progress bar.
        restart: discard the saved progress (`OUT/progress.json`) instead of resuming it.
    """
    from lsm.calibrate.fit import FitConfig

    if ckpt is None or world is None or scenario is None or fit is None or (observed is None and not check):
        raise UsageError("lsm calibrate needs --ckpt DIR --world WORLD.h5 --scenario SCENARIO --fit PARAMS and "
                         "--observed OBS.csv (or --check); see lsm calibrate --help")
    cfg = FitConfig(method=method, baseline=baseline, restarts=restarts, steps=steps, lr=lr, budget=budget, seed=seed)
    if check:
        from lsm.calibrate.check import run_check

        print(run_check(ckpt, world, scenario, fit, out, cfg, truth, planted, true, seed, device, quiet, restart).text)
        return
    from lsm.calibrate.run import run_calibrate

    assert observed is not None
    print(run_calibrate(ckpt, world, scenario, observed, fit, out, cfg, seed, device, quiet, restart).text)


def recovery(out: str = "out/recovery", agents: str = "2000", held_out_agents: int = 2000, steps: int = 1500,
             epochs: int | None = None, planted: str = "planted", scenario: str = "vaccine_campaign", samples: int = 2,
             max_agents: int = 256, patience: int = 6, json: str | None = None, seed: int = 0, train_variants: int = 8,
             variant_keep_sign: bool = False, ablations: str = "", seeds: int = 4) -> None:
    """The known-answer experiment: does the student recover a planted society's mechanism?

    Trains the student on a planted society whose mechanism is written down, then measures on a
    held-out world whether it recovered social influence, persistence and heterogeneity (paired
    ablations, influence by tie type, interventions, rollout fidelity), beside the identity-only
    model and the process's own noise floor.

    Args:
        out: experiment folder (every step is skipped when its output exists: a killed run resumes).
        agents: training-world sizes, comma-separated (`200,1000,10000`: the scaling curve).
        held_out_agents: size of the held-out world (one, shared by every size).
        steps: optimiser steps of each model (the same budget at every size); training stops
            earlier when the loss on a validation world has not improved for `patience` checks,
            and the best checkpoint is kept.
        epochs: train this many epochs instead (no early stopping: the earlier behaviour).
        planted: planted configuration (a path or a shipped name, e.g. `planted`); its null
            variant (dose 0) is derived from it. `random:K` (or `random:K@SEED`, seed 0 unless
            given): K configurations drawn from the prior of `lsm.data_gen.planted.prior`, the
            whole experiment once per configuration in OUT/random_<k>/, one goal table each.
        scenario: scenario (a path or a shipped name: vaccine_campaign, product_adoption,
            policy_announcement; the measured interventions need three scheduled events).
        samples: paired draws of the student's stochastic latents per replay.
        max_agents: agents per training batch (each hears the teacher's messages of the whole
            population: exact; smaller batches, more steps per epoch).
        patience: validations without improvement before a model stops training.
        json: also write the results here (headline figures at top level, the largest size;
            with `random:K`, `configs`: each configuration's name, parameters and results).
        seed: training seed.
        train_variants: also train on this many copies of the scenario with its events'
            valences (-1..1) and credibilities (0.1..1) drawn at random (otherwise they are
            confounded with their event, and their effect cannot be learned).
        variant_keep_sign: the variants keep each event's sign of valence (|valence| drawn in 0..1).
        ablations: pathways to switch off, one student each at the same step budget, comma-separated
            (`social_sum,event_sum,stance_noise,channel_effects`, or `all` for every one at once):
            one row each in the printed table and in the JSON's `ablation_rows`.
        seeds: common seeds of the intervention runs (student and planted alike; at least 2, so
            that the truth's seed-to-seed spread gives a floor).
    """
    import json as _json

    from lsm.infer.run import parse_sizes
    from lsm.recovery.experiment import RecoveryConfig, format_random, run_recovery
    from lsm.recovery.report import format_table

    from lsm.recovery.experiment import PATHWAYS

    off = [a.strip() for a in ablations.split(",") if a.strip()]
    unknown = [a for a in off if a not in (*PATHWAYS, "all")]
    if unknown:
        raise UsageError(f"--ablations {ablations}: {', '.join(map(repr, unknown))} is not a pathway; expected a comma-separated "
                         f"subset of {', '.join(PATHWAYS)}, or all")
    if seeds < 2:
        raise UsageError(f"--seeds {seeds}: the intervention runs need at least 2 common seeds (their spread is the floor)")
    cfg = RecoveryConfig(agents=parse_sizes(agents), held_out_agents=held_out_agents, scenario=scenario, planted=planted,
                         steps=steps, epochs=epochs, max_agents=max_agents, patience=patience, samples=samples, seed=seed,
                         train_variants=train_variants, variant_keep_sign=variant_keep_sign, ablations=off, seeds=seeds)
    result = run_recovery(out, cfg, say=print)
    print(format_random(result) if "configs" in result else format_table(result))
    if json:
        Path(json).write_text(_json.dumps(result, indent=1))
        print(f"Written: {json}")


def info(file: str, verify: bool = False) -> None:
    """Describe any LSM HDF5 file (world, teacher trace or student rollout).

    Args:
        file: the HDF5 file.
        verify: recompute the content checksum of every dataset and compare it with the one
            stored when the file was written (exit status 2 and the changed dataset on a mismatch).
    """
    from lsm.society.info import describe
    from lsm.society.store import verify_checksums

    print("\n".join(describe(file)))
    if verify:
        print(verify_checksums(file))


DESCRIPTION = ("LSM, a Large Societal Model. Also: `lsm train {fit,validate,test} --config configs/train/PRESET.yaml` "
               "trains the student (LightningCLI; `lsm train fit --help`).")

COMMANDS = {"world": world, "scenario": scenario, "gen": gen, "sensitivity": sensitivity, "evaluate": evaluate,
            "rollout": rollout, "validate": validate, "bench": bench, "demo": demo,
            "probe": probe, "narrate": narrate, "serve": serve, "explore": explore, "recovery": recovery, "capacity": capacity,
            "calibrate": calibrate, "info": info}


# Renamed options: (command, old spelling, new spelling, what the value is). The old spelling is
# still accepted, with one line on stderr, until the next release. An old spelling in capitals was
# a positional argument (the first such row is the command's first positional, and so on).
RENAMES: tuple[tuple[str, str, str, str], ...] = (
    ("evaluate", "CHECKPOINT", "--ckpt", "the checkpoint"),
    ("evaluate", "HELD_OUT", "--held_out", "the held-out traces"),
    ("validate", "--teacher", "--reference", "a trace file"),
    ("validate", "--teacher_repeat", "--repeat", "a trace file"),
    ("probe", "--teacher", "--reference", "a trace file"),
)
_NO_VALUE = {"-h", "--help", "--print_config"}  # options that never take the next argument as their value


def _option_name(arg: str) -> str:
    """`--teacher-repeat=x` -> `--teacher_repeat`: an option's name, spelled with underscores."""
    return "--" + arg.partition("=")[0][2:].replace("-", "_")


def underscore_options(args: list[str]) -> list[str]:
    """Hyphen and underscore spellings are the same option (`--teacher-repeat`, `--teacher_repeat`;
    `--trainer.default-root-dir`, `--trainer.default_root_dir`): option names are the Python
    parameters they come from, so they are rewritten with underscores. Values, and everything
    after `--`, are left as they are. Used by every command, `lsm train` included."""
    out = list(args)
    for i, a in enumerate(out):
        if a == "--":
            break
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            out[i] = _option_name(name) + eq + value
    return out


def apply_renames(args: list[str], warn=lambda line: print(line, file=sys.stderr)) -> list[str]:
    """Rewrite the old spellings of `RENAMES` into the new ones, with one deprecation line each."""
    at = next((i for i, a in enumerate(args) if a in COMMANDS), None)
    if at is None:
        return list(args)
    command = args[at]
    options = {old: (new, what) for c, old, new, what in RENAMES if c == command and old.startswith("--")}
    positionals = [(new, what) for c, old, new, what in RENAMES if c == command and not old.startswith("--")]
    said: set[str] = set()

    def deprecated(key: str, line: str) -> None:
        if key not in said:
            said.add(key)
            warn(f"lsm {command}: {line}")

    out, rest, i = list(args[:at + 1]), args[at + 1:], 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            out += rest[i:]
            break
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            key = _option_name(name) if name.startswith("--") else name
            if key in options:
                new, what = options[key]
                deprecated(key, f"{name} is deprecated for {what}; use {new}")
                a = new + eq + value
            out.append(a)
            if not eq and key not in _NO_VALUE and i + 1 < len(rest):
                out.append(rest[i + 1])  # its value, never an option to rename
                i += 1
        elif positionals:
            new, what = positionals.pop(0)
            deprecated(new, f"{what} as a positional argument is deprecated; use {new}")
            out += [new, a]
        else:
            out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import auto_cli

    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["train"]:  # LightningCLI owns its own parser: `lsm train fit --config ...`
        from lsm.train.cli import main as train_main

        try:
            train_main(underscore_options(args[1:]))
        except (ConfigError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    from lsm.data_gen.teacher.backends.openai_http import BackendError
    from lsm.society.store import StoreError

    args = underscore_options(apply_renames(args))  # the deprecation line names the spelling used
    try:
        auto_cli(COMMANDS, args=args, as_positional=True, description=DESCRIPTION)
    except (ConfigError, StoreError, UsageError, BackendError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a permission, a folder where a file was expected
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}. Outputs are written under temporary names and renamed when "
              "complete, so no partial file looks finished; rerun the same command once the cause is fixed "
              "(gen and rollout resume from their journal).", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: a run that saved its state says how to resume (Interrupted)
        quiet_teardown()
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
