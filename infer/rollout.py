"""Student rollouts: the whole population advances one tick per forward pass (DESIGN §8).

Each tick, like the teacher: the scenario's events (scheduled, plus those its triggers injected)
are exposed by the same `EventSchedule`; each agent is shown up to K neighbours drawn by the
teacher's own rule (`NeighborIndex`: Gumbel top-k by edge-type weight among neighbours that
broadcast last tick, same random keys for the same seed and tick); the student's decision
distribution is sampled (seeded) into a decision; triggers are evaluated on the student's
population state. Every tick is streamed to HDF5 in the trace schema (`kind: student_rollout`),
so every trace reader works on it.

Notation: N agents | K shown neighbours | A actions | C channels | Ev events this tick.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from lsm.data_gen.dynamics import EventSchedule, PopulationState
from lsm.data_gen.population import encode_identity
from lsm.data_gen.scenario import Scenario, check_against_world
from lsm.data_gen.store import TraceWriter
from lsm.data_gen.teacher import MAX_EVENTS, NeighborIndex
from lsm.data_gen.teacher_config import TeacherConfig
from lsm.data_gen.world import World
from lsm.model.society import TickInputs
from lsm.train.data import EdgeTyper, action_texts, embed_texts, event_tensors
from lsm.train.module import Student

TEXT_DIM = 384


@dataclass
class RolloutConfig:
    """How a rollout runs (the model is the checkpoint's)."""

    ticks: int | None = None
    """Ticks to run (default: the scenario's)."""
    seed: int = 0
    """Seed of exposures, shown neighbours and the sampled decisions."""
    neighbors: int = field(default_factory=lambda: TeacherConfig().neighbors)
    """K shown neighbours per agent and tick (the teacher's default)."""
    neighbor_weights: dict[str, float] = field(default_factory=lambda: dict(TeacherConfig().neighbor_weights))
    agent_chunk: int | None = None
    """Receivers per attention chunk (0: all at once; None: all up to 2^17 agents, chunks of 2^17 beyond)."""
    store_text: bool = True
    """Store the predicted expression and reasoning embeddings (N × 384 float16 per field and tick)."""
    device: str = "cpu"


@dataclass
class TickResult:
    tick: int
    data: dict[str, np.ndarray]
    """The tick's fields, as written to the file."""
    events: list
    """Events of this tick (`ScheduledEvent`)."""
    seconds: float
    """Student forward time (inputs built and outputs copied back excluded)."""
    capture: dict | None = None
    """With `ticks(capture=True)`: `attention` per layer (N, K + 1, H) over [shown..., self],
    `memory_read` (N, S), `write_slot` (N,), `event_uids` (Ev,) of this tick's event rows."""


def persona_embeddings(world_file: str | Path | None, personas: list[str]) -> torch.Tensor:
    """(N, 384) sentence embeddings of the personas, rounded to float16 (as traces store them).

    With `world_file`, cached beside it (`<world>.persona_emb.npz`, keyed by a hash of the
    persona texts), so a large world is encoded once (MiniLM on a CPU: minutes per 10^5
    personas), not at every rollout. Cached or not, the values are the same.
    """
    import hashlib

    key = hashlib.sha1("\x1f".join(personas).encode()).hexdigest()
    cache = Path(world_file).with_name(Path(world_file).name + ".persona_emb.npz") if world_file is not None else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            if str(z["key"]) == key and z["emb"].shape[0] == len(personas):
                return torch.from_numpy(z["emb"].astype(np.float32))
    emb = embed_texts(tuple(personas)).numpy().astype(np.float16)
    if cache is not None:
        try:
            tmp = cache.with_name(cache.name + ".tmp.npz")
            np.savez(tmp, key=np.array(key), emb=emb)
            tmp.replace(cache)
        except OSError:  # a read-only folder: no cache, same values
            pass
    return torch.from_numpy(emb.astype(np.float32))


def event_rows(events) -> list[dict]:
    """`ScheduledEvent`s as the rows of a trace's `events/` table (what `event_tensors` reads)."""
    return [{"source_type": e.event.source_type, "channel": e.event.channel, "framing": e.event.framing,
             "valence": e.event.valence, "credibility": e.event.credibility, "text": e.text} for e in events]


class Rollout:
    """A student on one world and scenario; iterate `ticks()` or call `run(out)`."""

    def __init__(self, student: Student, world: World, scenario: Scenario, cfg: RolloutConfig,
                 persona_emb: torch.Tensor | None = None, scenario_source: str | None = None):
        check_against_world(scenario, world.population, world.graph, scenario_source)
        self.student, self.world, self.sc, self.cfg = student, world, scenario, cfg
        self.model = student.model.to(cfg.device).eval()
        from lsm.infer.bench import auto_chunk

        self.model.agent_chunk = cfg.agent_chunk if cfg.agent_chunk is not None else auto_chunk(world.n)
        pop = world.population
        self.cat, self.num = encode_identity(pop, student.vocab)  # by category name: an unseen world works
        self.persona = persona_emb if persona_emb is not None else persona_embeddings(None, list(pop.persona))  # (N, 384)
        self.action_emb = embed_texts(tuple(action_texts(scenario)))  # (A, 384)
        self.neighbors = NeighborIndex.of(world.graph, cfg.neighbor_weights)
        self.typer = EdgeTyper(world.graph)
        self.numeric = scenario.actions.type == "numeric"
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def n(self) -> int:
        return self.world.n

    @property
    def n_ticks(self) -> int:
        return self.cfg.ticks if self.cfg.ticks is not None else self.sc.ticks

    def dims(self) -> dict[str, int]:
        c = self.student.config
        return {"N": self.n, "C": c.channels, "A": self.sc.actions.n, "K": max(1, self.cfg.neighbors), "E": MAX_EVENTS,
                "Z": c.latent_dim, "H": c.memory_dim, "D": TEXT_DIM}

    def fields(self) -> list[str]:
        f = ["channels", "decision", "decision_dist", "stance", "salience", "shown_neighbors", "exposed_events", "valid",
             "latent", "memory"]
        if self.cfg.store_text:
            f += ["expression_emb", "reasoning_emb"]
        if self.numeric:
            f.append("decision_value")
        return f

    def _encode(self, texts: tuple[str, ...]) -> torch.Tensor:
        if texts not in self._text_cache:
            self._text_cache[texts] = embed_texts(texts)
        return self._text_cache[texts]

    @torch.inference_mode()
    def ticks(self, capture: bool = False) -> Iterator[TickResult]:
        cfg, dev, n = self.cfg, self.cfg.device, self.n
        schedule = EventSchedule(self.sc, self.world.population, self.world.graph, cfg.seed)
        state = self.model.initial_state(n, self.sc.actions.n, device=dev)
        static = [t.to(dev) for t in (self.cat, self.num, self.persona, self.action_emb)]
        has_message = np.zeros(n, dtype=bool)  # tick 0: nobody has spoken yet (as in the teacher)
        for t in range(self.n_ticks):
            events = schedule.events_at(t)
            exposed = schedule.exposure(t)  # (N, Ev) bool
            ev_cat, ev_num, ev_emb = event_tensors(event_rows(events), self._encode)
            slot = np.cumsum(exposed, axis=1) - 1  # (N, Ev): the event's position in the agent's list
            agent, ev = np.nonzero(exposed & (slot < MAX_EVENTS))  # like the teacher, at most MAX_EVENTS per agent
            exposure = torch.from_numpy(np.stack([agent, ev]).astype(np.int64)).reshape(2, -1)
            ev_ids = np.full((n, MAX_EVENTS), -1, dtype=np.int32)
            for k, e in enumerate(events):
                rows = np.nonzero(exposed[:, k] & (slot[:, k] < MAX_EVENTS))[0]
                ev_ids[rows, slot[rows, k]] = e.uid
            k_shown = max(self.cfg.neighbors, 0)
            shown = self.neighbors.sample(k_shown, has_message, np.random.default_rng([cfg.seed, t, 17]))  # (N, K)
            if k_shown == 0:
                shown = np.full((n, 1), -1, dtype=np.int32)
            types = self.typer.table(shown)
            inp = TickInputs(static[0], static[1], static[2], torch.zeros(2, 0, dtype=torch.long, device=dev),
                             torch.zeros(0, dtype=torch.long, device=dev), ev_cat.to(dev), ev_num.to(dev), ev_emb.to(dev),
                             exposure.to(dev), static[3], torch.from_numpy(shown.astype(np.int64)).to(dev),
                             torch.from_numpy(types).to(dev))
            t0 = time.perf_counter()
            state, out = self.model(inp, state, return_attention=capture)
            if dev != "cpu":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            probs = torch.softmax(out.decision_logits.float(), -1)  # (N, A)
            g = torch.Generator(device=probs.device).manual_seed(cfg.seed * 1_000_003 + t)
            decision = torch.multinomial(probs, 1, generator=g).squeeze(1).cpu().numpy()
            data: dict[str, np.ndarray] = {
                "channels": out.channels.float().cpu().numpy(), "decision": decision.astype(np.int16),
                "decision_dist": probs.cpu().numpy(), "stance": out.stance.float().cpu().numpy(),
                "salience": out.salience.float().cpu().numpy(), "shown_neighbors": shown.astype(np.int32),
                "exposed_events": ev_ids, "valid": np.ones(n, dtype=bool),
                "latent": state.latent.cpu().numpy().astype(np.float16), "memory": state.memory.cpu().numpy().astype(np.float16),
            }
            if cfg.store_text:
                data["expression_emb"] = out.expression_text.cpu().numpy().astype(np.float16)
                data["reasoning_emb"] = out.reasoning_text.cpu().numpy().astype(np.float16)
            value = None
            if self.numeric:
                value = self.sc.actions.bin_centers[decision].astype(np.float32)  # the bin's centre stands for the number
                data["decision_value"] = value
            schedule.after_tick(t, PopulationState(decision=decision.astype(np.int64), decision_value=value,
                                                   channels=data["channels"], valid=data["valid"]))
            has_message = np.ones(n, dtype=bool)
            extra = None
            if capture:
                extra = {"attention": [a.cpu().numpy() for a in out.attention or [] if a is not None],
                         "memory_read": out.memory_read.cpu().numpy(), "write_slot": out.write_slot.cpu().numpy(),
                         "event_uids": np.array([e.uid for e in events], dtype=np.int64)}
            yield TickResult(t, data, list(schedule.events), seconds, extra)

    def run(self, out: str | Path | None, world_file: str | Path | None = None, scenario_yaml: str = "",
            configs: dict[str, Any] | None = None, keep: bool = False, quiet: bool = True) -> dict[str, Any]:
        """Run every tick; stream to `out` (if given). Returns a summary (and `ticks`, the
        in-memory results, with `keep`)."""
        writer = None
        if out is not None:
            assert world_file is not None, "streaming needs the world file (its population and graph are copied)"
            writer = TraceWriter(out, "student_rollout", world_file, scenario_yaml, self.dims(), self.fields(),
                                 configs={"student": json.dumps({**asdict(self.student.config), "checkpoint": self.student.path}),
                                          "rollout": json.dumps(asdict(self.cfg)), **(configs or {})},
                                 seeds={"seed": self.cfg.seed}, ticks_planned=self.n_ticks)
        kept, shares, seconds = [], [], []
        wall = time.perf_counter()
        try:
            for r in self.ticks():
                if writer is not None:
                    writer.add_events(r.events)
                    writer.append_tick(r.data)
                shares.append(np.bincount(r.data["decision"].astype(np.int64), minlength=self.sc.actions.n) / self.n)
                seconds.append(r.seconds)
                if keep:
                    kept.append(r)
                if not quiet:
                    top = ", ".join(f"{a} {s:.2f}" for a, s in zip(self.sc.actions.labels, shares[-1]))
                    print(f"tick {r.tick}: {r.seconds:.3f} s forward | {top}", flush=True)
        except BaseException:
            if writer is not None:
                writer.close(complete=False)
            raise
        summary = {"agents": self.n, "ticks": self.n_ticks, "actions": list(self.sc.actions.labels),
                   "decision_shares": [s.round(4).tolist() for s in shares],
                   "forward_seconds_per_tick": float(np.mean(seconds)) if seconds else 0.0,
                   "wall_seconds": time.perf_counter() - wall}
        if writer is not None:
            writer.close(complete=True, summary=summary)
        if keep:
            summary["ticks_data"] = kept
        return summary


def rollout_from_file(student: Student, path: str | Path, device: str = "cpu") -> Rollout:
    """The Rollout that wrote `path` (same world, scenario and rollout config), to replay it
    with readouts; `replay_matches(...)` checks the replay reproduces the file."""
    import yaml

    from lsm.data_gen.scenario import scenario_from_dict
    from lsm.data_gen.store import TraceFile, read_configs
    from lsm.data_gen.world import load_world

    with TraceFile(path) as tf:
        if tf.kind != "student_rollout":
            raise ValueError(f"{path} is a {tf.kind}, not a student rollout")
        sc = scenario_from_dict(yaml.safe_load(tf.f["scenario"].attrs["yaml"]), source=f"{path}:scenario")
        cfg_dict = read_configs(tf.f)["rollout"]  # JSON is YAML: a dict
    cfg = RolloutConfig(**{**cfg_dict, "device": device})
    return Rollout(student, load_world(path), sc, cfg)
