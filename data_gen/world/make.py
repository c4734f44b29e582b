"""`lsm world`: build a world (optionally with LLM-written backstories), write it, summarise it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lsm.config import UsageError, resolve_config
from lsm.limits import MAX_AGENTS
from lsm.paths import check_output_file
from lsm.data_gen.world import World, build_world, save_world, world_summary
from lsm.transcript import Echo, Transcript


@dataclass
class MadeWorld:
    world: World
    path: Path
    text: str
    """What `lsm world` prints: the backstory line (if any) and the world summary."""


def make_world(population: str | Path = "anes96", graph: str | Path = "default", agents: int = 1000, seed: int = 0,
               out: str | Path = "world.h5", backstories: bool = False, teacher: str | Path = "embedded",
               echo: Echo = None) -> MadeWorld:
    """Build a world from population and graph configs (paths or shipped names), optionally have
    the teacher's LLM append a backstory to every persona, and write it to `out`.

    `echo` receives each part of the text as soon as it is ready (the backstories take a while).
    """
    say = Transcript(echo)
    if not 1 <= agents <= MAX_AGENTS:
        raise UsageError(f"--agents {agents}: expected a number of agents from 1 to {MAX_AGENTS:,} (lsm.limits.MAX_AGENTS)")
    check_output_file(out)
    w = build_world(resolve_config(population, "population"), resolve_config(graph, "graph"), agents, seed)
    if backstories:
        from lsm.config import load_config
        from lsm.data_gen.teacher.config import TeacherConfig, make_backend
        from lsm.data_gen.world.backstory import write_backstories

        t0 = time.perf_counter()
        cfg = load_config(TeacherConfig, resolve_config(teacher, "teacher"), kind="teacher config")
        b = write_backstories(w.population.persona, make_backend(cfg), seed=seed)
        w.population.persona = [f"{p} {s}".strip() for p, s in zip(w.population.persona, b.texts)]
        w.backstories = b
        w.timings["backstories_s"] = time.perf_counter() - t0
        say(f"Backstories: {agents - len(b.failed)} written, {len(b.failed)} left out (no usable text), "
            f"{w.timings['backstories_s']:.1f} s")
    t0 = time.perf_counter()
    save_world(w, out)
    w.timings["write_s"] = time.perf_counter() - t0
    size_mb = Path(out).stat().st_size / 2**20
    say(world_summary(w, {"Written": f"{out} ({size_mb:.1f} MiB)"}))
    return MadeWorld(w, Path(out), str(say))
