"""A student rollout on P ranks (`lsm rollout --nproc P`, or under `torchrun`): each rank holds
its shard's agents and answers for them; ranks exchange only the broadcasts of the senders shown
across the cut (the halo).

Per tick, rank r needs the last broadcasts (expression and stance) of the senders shown to its
agents that other ranks hold. It sends each owner the ids it needs (ascending; one `all_to_all`
of counts, one of ids) and receives their rows (one `all_to_all` of X + 1 floats per sender);
the rank then hears a table of its own broadcasts followed by the halo, with the shown ids
mapped into it. Every random number
is drawn for the whole population and the shard's rows taken (`StudentPolicy.inputs`), so the
result is the same for every P (tested bitwise). The loop (`society.loop.sharded`) gathers the
population state for triggers and writes one file.

Notation: N agents | N_r the rank's agents | K shown | X expression width | P ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsm.infer.rollout import RolloutConfig, StudentPolicy
from lsm.model.checkpoint import Student, load_checkpoint
from lsm.model.state import AgentState
from lsm.society import seeds
from lsm.society.loop.comm import Comm
from lsm.society.loop.runner import Perception
from lsm.society.loop.sharded import ShardedLoop
from lsm.society.scenario import Scenario, load_scenario
from lsm.society.world import World, load_world
from lsm.society.world.graph import peak_rss_gb
from lsm.society.world.partition import partition


class ShardPolicy(StudentPolicy):
    """The student answering for one rank's agents (`comm.mine`)."""

    def __init__(self, student: Student, world: World, scenario: Scenario, cfg: RolloutConfig, comm: Comm,
                 persona_emb: torch.Tensor | None = None):
        self.comm = comm
        self.rows = comm.mine
        super().__init__(student, world, scenario, cfg, persona_emb)
        rows = torch.from_numpy(self.rows)
        cat, num, persona, actions = self._static
        if persona.stride(0) == 0:  # one row expanded (no backstories): keep it so
            persona = persona[:1].expand(len(rows), -1)
        else:
            persona = persona[rows]
        self._static = [cat[rows], num[rows], persona, actions]
        self.offsets = None if self.offsets is None else self.offsets[rows]
        self.edge_cut = comm.part.edge_cut(world.graph.edge_index)

    def fresh_state(self) -> AgentState:
        """The shard's rows of the population's initial state (agent noise drawn for all, rows taken)."""
        rows = torch.from_numpy(self.comm.mine)
        state = self.model.initial_state(len(rows), self.sc.actions.n, device=self.cfg.device)
        g = seeds.torch_generator(self.cfg.seed, seeds.Stream.AGENT_NOISE)
        state.agent_noise = self.model.draw_agent_noise(self.world.n, g)[rows].to(self.cfg.device)
        return state

    def summary(self, stats: list[dict[str, Any]], wall: float, resumed: int) -> dict[str, Any]:
        halo = [s["halo_bytes"] for s in stats if "halo_bytes" in s]
        part = self.comm.part
        return {**super().summary(stats, wall, resumed), "ranks": part.shards, "rank_agents": part.sizes().tolist(),
                "edge_cut": round(self.edge_cut, 4),
                "halo_bytes_per_tick": float(np.mean(halo)) if halo else 0.0}

    def sender_ids(self, p: Perception, shown: np.ndarray) -> np.ndarray:
        """The halo exchange (module docstring): sets `self.senders` (N_r + halo, X + 1) and
        returns `shown` (N_r, K) as rows of it."""
        c = self.comm
        owner = c.part.owner
        ids = np.unique(shown[shown >= 0])
        ids = ids[owner[ids] != c.rank]
        need = [ids[owner[ids] == q] for q in range(c.size)]  # (H_q,) the agents of rank q heard here, ascending
        asked = c.exchange(need, c.exchange_counts([len(x) for x in need]))  # the ids of mine each rank hears
        own = torch.cat([self.state.expression, self.state.stance[:, None]], -1).float().cpu().numpy()  # (N_r, X + 1)
        recv = c.exchange([own[np.searchsorted(c.mine, a)] for a in asked], [len(x) for x in need])
        local = np.full(self.world.n, -1, dtype=np.int64)  # (N,) agent id -> row of the heard table
        local[c.mine] = np.arange(len(c.mine))
        start = len(c.mine)
        for x in need:
            local[x] = start + np.arange(len(x))
            start += len(x)
        self.senders = torch.from_numpy(np.concatenate([own, *recv])).to(self.cfg.device)
        return np.where(shown >= 0, local[np.maximum(shown, 0)], -1)


@dataclass
class ShardedRun:
    """What every rank of a sharded rollout is given (picklable: the launcher sends it to spawned ranks)."""

    ckpt: str
    world: str
    scenario: str
    """The scenario file's path."""
    out: str
    cfg: RolloutConfig
    restart: bool = False
    quiet: bool = False


def run_rank(run: ShardedRun) -> dict[str, Any]:
    """This rank's part of a sharded rollout (the process group is initialised); returns the
    run's summary with the partition's and every rank's figures (the same on every rank)."""
    import torch.distributed as dist

    rank, size = dist.get_rank(), dist.get_world_size()
    student = load_checkpoint(run.ckpt)
    world = load_world(run.world, persona=False)  # a rank never shows or writes persona texts
    sc = load_scenario(run.scenario)
    part = partition(world.graph.household, size)
    comm = Comm(part)
    policy = ShardPolicy(student, world, sc, run.cfg, comm)
    cfg = policy.cfg
    assert cfg.neighbors is not None
    loop = ShardedLoop(policy, sc, world.population, world.graph, cfg.seed, cfg.neighbors, cfg.ticks, run.scenario, comm=comm)
    g = world.graph  # the shard's in-edges are in its perception (`NeighborIndex`, `EdgeTyper`): the whole list can go
    g.edge_index, g.edge_type, g.edge_weight = (np.zeros((2, 0), g.edge_index.dtype), np.zeros(0, g.edge_type.dtype),
                                                np.zeros(0, g.edge_weight.dtype))  # (no views: they would keep the arrays)
    summary = loop.run(run.out, run.world, Path(run.scenario).read_text(), {"seed": cfg.seed}, inputs=[student.path],
                       restart=run.restart, quiet=run.quiet or rank > 0, desc=f"rollout {sc.name} ({size} ranks)")
    peak = torch.tensor([peak_rss_gb()], dtype=torch.float64)
    peaks = [torch.zeros(1, dtype=torch.float64) for _ in range(size)]
    dist.all_gather(peaks, peak)
    summary["peak_rss_gib_per_rank"] = [round(float(x.item()), 3) for x in peaks]
    return summary
