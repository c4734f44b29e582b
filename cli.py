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
) -> None:
    """Build a world (population + typed social graph), write it to HDF5 and print a summary.

    Args:
        population: population YAML (a path, or a shipped name such as `anes96`, `generic`).
        graph: social-graph YAML (a path, or a shipped name such as `default`).
        agents: number of agents N.
        seed: random seed (same seed and configs give the identical world).
        out: output HDF5 file.
    """
    from lsm.data_gen.world import build_world, save_world, world_summary

    w = build_world(resolve_config(population, "population"), resolve_config(graph, "graph"), agents, seed)
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


COMMANDS = {"world": world, "scenario": scenario, "info": info}


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import auto_cli

    from lsm.data_gen.store import StoreError

    try:
        auto_cli(COMMANDS, args=argv, as_positional=True)
    except (ConfigError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
