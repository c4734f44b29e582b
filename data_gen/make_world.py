"""`lsm world`: build a world (optionally with LLM-written backstories), write it, summarise it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lsm.config import UsageError, load_config, resolve_config
from lsm.data_gen.teacher.config import TeacherConfig, make_backend
from lsm.limits import MAX_AGENTS
from lsm.paths import check_output_file
from lsm.society.embed import persona_features
from lsm.society.world import WORLD_STEPS, World, build_world, save_world, world_summary
from lsm.society.world.backstory import write_backstories
from lsm.transcript import Echo, Transcript


@dataclass
class MadeWorld:
    world: World
    path: Path
    text: str
    """What `lsm world` prints: the backstory line (if any) and the world summary."""


def make_world(population: str | Path = "anes96", graph: str | Path = "default", agents: int = 1000, seed: int = 0,
               out: str | Path = "world.h5", backstories: bool = False, teacher: str | Path = "embedded",
               echo: Echo = None, quiet: bool = False) -> MadeWorld:
    """Build a world from population and graph configs (paths or shipped names), optionally have
    the teacher's LLM append a backstory to every persona, and write it to `out`.

    `echo` receives each part of the text as soon as it is ready (the backstories take a while);
    unless `quiet`, a progress bar on stderr names each step as it runs.
    """
    import sys

    from tqdm import tqdm

    say = Transcript(echo)
    if not 1 <= agents <= MAX_AGENTS:
        raise UsageError(f"--agents {agents}: expected a number of agents from 1 to {MAX_AGENTS:,} (lsm.limits.MAX_AGENTS)")
    check_output_file(out)
    bars: list[tqdm] = []  # opened at the first step, once the configs have loaded (a bad one is one clean paragraph)

    def step(name: str) -> None:
        if not bars:
            bars.append(tqdm(total=len(WORLD_STEPS) + 1, unit="step", desc=f"world of {agents:,} agents", disable=quiet,
                             file=sys.stderr, dynamic_ncols=True,
                             bar_format="{desc}: {n_fmt}/{total_fmt} steps [{elapsed}]{postfix}"))
            bars[0].set_postfix_str(name)
        else:  # the previous step is done: one refresh shows the count and the new step
            bars[0].set_postfix_str(name, refresh=False)
            bars[0].update(1)

    try:
        w = build_world(resolve_config(population, "population"), resolve_config(graph, "graph"), agents, seed, step=step)
        if not backstories:
            step("writing")
            _save(w, out)
            bars[0].update(1)
    finally:
        for bar in bars:
            bar.close()
    if backstories:

        t0 = time.perf_counter()
        cfg = load_config(TeacherConfig, resolve_config(teacher, "teacher"), kind="teacher config")
        b = write_backstories(w.population.persona, make_backend(cfg), seed=seed, desc=None if quiet else "writing backstories")
        w.population.persona = [f"{p} {s}".strip() for p, s in zip(w.population.persona, b.texts)]
        w.population.backstory = list(b.texts)
        w.backstories = b
        w.timings["backstories_s"] = time.perf_counter() - t0
        say(f"Backstories: {agents - len(b.failed)} written, {len(b.failed)} left out (no usable text), "
            f"{w.timings['backstories_s']:.1f} s")
        t0 = time.perf_counter()
        w.population.backstory_emb = persona_features(w.population, desc=None if quiet else "embedding backstories")  # stored with the world
        w.timings["backstory_embedding_s"] = time.perf_counter() - t0
        say(f"Backstories embedded: {len(set(b.texts) - {''}):,} distinct texts in {w.timings['backstory_embedding_s']:.1f} s "
            f"({(agents - len(b.failed)) / max(w.timings['backstory_embedding_s'], 1e-9):,.0f} agents/s)")
        _save(w, out)
    size_mb = Path(out).stat().st_size / 2**20
    say(world_summary(w, {"Written": f"{out} ({size_mb:.1f} MiB)"}))
    return MadeWorld(w, Path(out), str(say))


def _save(w: World, out: str | Path) -> None:
    t0 = time.perf_counter()
    save_world(w, out)
    w.timings["write_s"] = time.perf_counter() - t0
