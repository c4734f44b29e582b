"""A world = a population + its typed social graph, built from two YAML files and a seed."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lsm.config import from_dict, to_dict
from lsm.paths import array_bytes, check_room
from lsm.society.store import (
    _write_header,
    check_header,
    open_h5,
    read_configs,
    read_world_groups,
    write_checksums,
    write_world_groups,
)
from lsm.society.world.backstory import META_PROMPTS
from lsm.society.world.graph import (
    EDGE_TYPES,
    GRAPH_STEPS,
    GraphConfig,
    SocialGraph,
    build_graph,
    degree_stats,
    homophily_attributes,
    homophily_stats,
    load_graph_config,
    peak_rss_gb,
)
from lsm.society.world.population import (
    Population,
    PopulationConfig,
    load_population_config,
    marginals_table,
    sample_population,
)

if TYPE_CHECKING:
    from torch_geometric.data import HeteroData


@dataclass
class World:
    population: Population
    graph: SocialGraph
    population_config: PopulationConfig
    graph_config: GraphConfig
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    backstories: Any = None
    """`backstory.Backstories` when the personas were extended by an LLM."""

    @property
    def n(self) -> int:
        return self.population.n

    def to_pyg(self) -> "HeteroData":
        """The world as a PyG `HeteroData`, for models built from `torch_geometric.nn` layers.

        Node type `agent` (N agents): `x` (N, F) float, the categorical codes then the numeric
        attributes, one column each, named by `x_names`; also `x_cat` (N, F_cat) long codes into
        `categories[name]` and `x_num` (N, F_num) float values. One edge type per social tie,
        `("agent", t, "agent")` for t in `EDGE_TYPES` (all of them, empty ones included, so every
        world has the same metadata): `edge_index` (2, E_t) long, row 0 the sender j and row 1 the
        receiver i as stored (PyG's default `source_to_target` flow: messages go j -> i), and
        `edge_weight` (E_t,) float. Self loops are not added.
        """
        import torch
        from torch_geometric.data import HeteroData

        pop, g = self.population, self.graph
        data = HeteroData()
        agent = data["agent"]
        agent.num_nodes = pop.n
        cat = [torch.from_numpy(pop.categorical[a].astype("int64")) for a in pop.categorical]
        num = [torch.from_numpy(pop.numeric[a].astype("float32")) for a in pop.numeric]
        agent.x_cat = torch.stack(cat, 1) if cat else torch.zeros((pop.n, 0), dtype=torch.long)  # (N, F_cat)
        agent.x_num = torch.stack(num, 1) if num else torch.zeros((pop.n, 0))  # (N, F_num)
        agent.x = torch.cat([agent.x_cat.float(), agent.x_num], 1)  # (N, F_cat + F_num)
        agent.x_names = list(pop.categorical) + list(pop.numeric)
        agent.categories = {a: list(pop.categories[a]) for a in pop.categorical}
        for code, name in enumerate(EDGE_TYPES):
            m = g.edge_type == code
            data["agent", name, "agent"].edge_index = torch.from_numpy(g.edge_index[:, m].astype("int64"))  # (2, E_t)
            data["agent", name, "agent"].edge_weight = torch.from_numpy(g.edge_weight[m].astype("float32"))  # (E_t,)
        return data


WORLD_STEPS = ("population",) + GRAPH_STEPS
"""The steps of `build_world`, in order (`step` is called with each name as it starts)."""


def build_world(population: str | Path | PopulationConfig, graph: str | Path | GraphConfig, agents: int, seed: int,
                step: Callable[[str], None] | None = None) -> World:
    """Sample a population of `agents` and its social graph (deterministic for `seed`); `step(name)`
    is told each of `WORLD_STEPS` as it starts (a progress bar)."""
    pop_src = str(population) if not isinstance(population, PopulationConfig) else None
    graph_src = str(graph) if not isinstance(graph, GraphConfig) else None
    pop_cfg = population if isinstance(population, PopulationConfig) else load_population_config(population)
    graph_cfg = graph if isinstance(graph, GraphConfig) else load_graph_config(graph)
    t0 = time.perf_counter()
    if step is not None:
        step(WORLD_STEPS[0])
    pop = sample_population(pop_cfg, agents, seed, source_file=pop_src)
    t1 = time.perf_counter()
    g = build_graph(graph_cfg, pop, seed, source=graph_src, step=step)
    t2 = time.perf_counter()
    return World(pop, g, pop_cfg, graph_cfg, seed, timings={"population_s": t1 - t0, "graph_s": t2 - t1})


def save_world(world: World, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    check_room(tmp, array_bytes(world.population, world.graph) + (1 << 20), f"a world of {world.n:,} agents")
    with open_h5(tmp, "w") as f:
        _write_header(f, "world", {"population": to_dict(world.population_config), "graph": to_dict(world.graph_config)},
                      {"seed": world.seed})
        write_world_groups(f, world.population, world.graph)
        if world.backstories is not None:
            b = world.backstories

            f["population"].attrs["backstories"] = json.dumps({"meta_prompts": list(META_PROMPTS), "failed": b.failed})
            f["population"].create_dataset("backstory_prompt", data=b.prompt_index.astype("int8"))
            f["population"].create_dataset("backstory_temperature", data=b.temperature.astype("float32"))
        write_checksums(f)
        f.attrs["complete"] = True
    tmp.replace(path)  # never leave a half-written world under the final name


def load_world(path: str | Path, persona: bool = True) -> World:
    """Read a world (or the world embedded in a trace / rollout file); `persona` False: without
    the persona texts (0.4 GB at 10^6 agents), for a reader that never shows or writes them (a
    rank of a sharded rollout)."""

    with open_h5(path) as f:
        check_header(f, ["world", "teacher_trace", "student_rollout"])
        pop, graph = read_world_groups(f, persona=persona)
        cfg = read_configs(f)
        seeds = json.loads(f.attrs.get("seeds", "{}"))
    seed = int(seeds.get("seed", seeds.get("world_seed", 0)))
    return World(pop, graph, from_dict(PopulationConfig, cfg["population"], f"{path}:config.population"),
                 from_dict(GraphConfig, cfg["graph"], f"{path}:config.graph"), seed)


def world_summary(world: World, extra: dict[str, Any] | None = None) -> str:
    """The readable summary `lsm world` prints."""
    pop, g = world.population, world.graph
    lines = [f"World: {pop.n:,} agents ({world.population_config.name}, source {pop.source}), "
             f"{g.num_edges:,} directed edges ({world.graph_config.name}), seed {world.seed}"]
    lines.append("\nAttribute marginals" + (f" (synthetic: {', '.join(pop.synthetic)})" if pop.synthetic else ""))
    lines += ["  " + line for line in marginals_table(pop)]
    lines.append("\nIncoming degree per edge type        edges        mean   median      max")
    for name, s in degree_stats(g).items():
        lines.append(f"  {name:<32} {s['edges']:>11,} {s['mean']:>9.2f} {s['median']:>8.0f} {s['max']:>8,}")
    hh_sizes = (g.household.max() + 1) if pop.n else 0
    lines.append(f"  households: {hh_sizes:,}, mean size {pop.n / max(hh_sizes, 1):.2f}; "
                 f"opinion leaders: {len(g.leaders):,}; outlets: {', '.join(g.outlets) or 'none'}")
    attrs = homophily_attributes(world.graph_config, pop)
    if attrs:
        stats = homophily_stats(g, pop, attrs, seed=world.seed)
        head = "".join(f"{n:>13}" for n in ("all",) + EDGE_TYPES)
        lines.append("\nHomophily (categorical: same-group share / random baseline, 1 = none; numeric: endpoint correlation, 0 = none)")
        lines.append(f"  {'attribute':<18}{head}")
        for a, row in stats.items():
            kind = "x" if a in pop.categorical else "r"
            lines.append(f"  {a + ' (' + kind + ')':<18}" + "".join(f"{row[n]:>13.2f}" for n in ("all",) + EDGE_TYPES))
    t = world.timings
    if t:
        lines.append(f"\nBuild time: population {t.get('population_s', 0):.1f} s, graph {t.get('graph_s', 0):.1f} s"
                     + (f", write {t['write_s']:.1f} s" if "write_s" in t else "")
                     + f"; peak memory {peak_rss_gb():.2f} GiB")
    for k, v in (extra or {}).items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines)
