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
        from lsm.data_gen.backstory import write_backstories
        from lsm.data_gen.teacher_config import TeacherConfig, make_backend

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
        from lsm.data_gen.dynamics import EventSchedule
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
    from lsm.data_gen.teacher import format_summary, generate

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

    from lsm.data_gen.sensitivity import format_report, measure

    r = measure(trace, tick, agents, seed)
    print(format_report(r))
    if write:
        with h5py.File(trace, "a") as f:
            f.attrs["sensitivity"] = json.dumps(r)


def evaluate(checkpoint: str, train: list[str], held_out: list[str], mlp: str | None = None) -> None:
    """Held-out table: the student against the per-tick marginal, repeat-previous, the same
    student with shuffled edges and (optionally) an identity-only MLP checkpoint.

    Args:
        checkpoint: student checkpoint (`runs/<preset>/checkpoints/last.ckpt`).
        train: trace files (or globs) the student was trained on (for the marginal baseline).
        held_out: trace files (or globs) to evaluate on, e.g. the second LLM seed or a left-out scenario.
        mlp: checkpoint of a student trained with `--model.graph_attention false`.
    """
    from lsm.train.datamodule import TraceDataModule
    from lsm.train.evaluate import evaluate as run_eval
    from lsm.train.evaluate import format_table
    from lsm.train.module import load_student

    model, _ = load_student(checkpoint)
    dm = TraceDataModule(train, held_out)
    dm.setup()
    baseline = load_student(mlp)[0] if mlp else None
    print(format_table(run_eval(model, dm.train_episodes, dm.val_episodes, baseline), f"held out: {', '.join(held_out)}"))


def serve(host: str = "127.0.0.1", port: int = 8000, batch_size: int = 8, verbose: bool = False) -> None:
    """Serve the embedded model over an OpenAI-compatible HTTP API (chat completions with JSON
    schemas and logprobs), for the `openai` backend or any OpenAI client.

    Args:
        host: interface to bind (loopback by default).
        port: TCP port (0: any free port; the URL is printed).
        batch_size: generation batch size of the embedded backend.
        verbose: log every request.
    """
    from lsm.data_gen.backends.embedded import EmbeddedBackend, EmbeddedConfig
    from lsm.data_gen.backends.server import serve as run_server

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


COMMANDS = {"world": world, "scenario": scenario, "gen": gen, "sensitivity": sensitivity, "evaluate": evaluate, "serve": serve, "info": info}


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

    from lsm.data_gen.backends.openai_http import BackendError
    from lsm.data_gen.store import StoreError

    try:
        auto_cli(COMMANDS, args=argv, as_positional=True)
    except (ConfigError, StoreError, UsageError, BackendError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
