"""Student rollouts: the whole population advances one tick per forward pass (docs/design.md §8).

The student is a policy of the society loop (`lsm.society.loop.runner`): the loop exposes
the scenario's events, shows each agent its neighbours by the teacher's own rule, evaluates
triggers on the student's population state, journals every tick (a killed rollout resumes) and
streams the run to HDF5 in the trace schema (`kind: student_rollout`), so every trace reader
works on it. The policy runs one forward pass per tick and samples each agent's decision from
its distribution (seeded).

Notation: N agents | K shown neighbours | A actions | C channels | Ev events | T text width.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from lsm.model.checkpoint import Student
from lsm.model.chunks import auto_chunk, forward_chunk
from lsm.model.features import action_texts, context_text, embed_texts, event_tensors
from lsm.model.society import Draws, TickInputs
from lsm.model.state import AgentState
from lsm.model.tick import advance
from lsm.society import seeds
from lsm.society.embed import persona_tensor
from lsm.society.groups import logit_offsets
from lsm.society.interventions import Interventions
from lsm.society.loop.neighbors import EdgeTyper, NeighborRule
from lsm.society.loop.runner import (
    Perception,
    Progress,
    SocietyLoop,
    TickOutput,
    TickRecord,
)
from lsm.society.scenario import Scenario, event_features
from lsm.society.store import TraceFile, TraceWriter, read_configs
from lsm.society.world import World, load_world
from lsm.society.world.graph import peak_rss_gb


@dataclass
class RolloutConfig:
    """How a rollout runs (the model is the checkpoint's)."""

    ticks: int | None = None
    """Ticks to run (default: the scenario's)."""
    seed: int = 0
    """Seed of exposures, shown neighbours and the sampled decisions."""
    neighbors: NeighborRule | None = None
    """Who hears whom; None: the checkpoint's (the rule of its training traces), else the default
    `NeighborRule()`. A rollout file records the rule it ran under."""
    agent_chunk: int | None = None
    """Agents per forward pass (`SocietyModel.forward_in_chunks`; 0: all at once; None:
    `model.chunks.forward_chunk(device)`). The result does not depend on it."""
    store: list[str] = field(default_factory=list)
    """Optional per-tick fields to store beside the default ones (`DEFAULT_FIELDS`), among
    `OPTIONAL_FIELDS`: `latent` (N × Z), `memory` (N × H), `text` (the predicted expression and
    reasoning embeddings, N × T each). They hold 96% of a full rollout's bytes (1.1 of 1.2 GB at
    10^5 agents x 8 ticks); the report, `lsm validate` and `lsm narrate` need none of them."""
    device: str = "cpu"

    def for_student(self, student: Student) -> "RolloutConfig":
        """This config with the neighbour rule resolved: its own, else the checkpoint's, else the default."""
        if self.neighbors is not None:
            return self
        return replace(self, neighbors=student.neighbor_rule or NeighborRule())


def event_rows(events) -> list[dict]:
    """`ScheduledEvent`s as the rows of a trace's `events/` table (what `event_tensors` reads)."""
    return [{"source_type": e.event.source_type, "channel": e.event.channel, "framing": e.event.framing,
             **event_features(e.event), "text": e.text} for e in events]


DEFAULT_FIELDS = ("channels", "decision", "decision_dist", "stance", "salience", "valid")
"""What every rollout stores (with `shown_neighbors` and `exposed_events`, and `decision_value`
for numeric actions): what the report, `lsm validate`, `lsm narrate` and the trace readers use."""
OPTIONAL_FIELDS = {"latent": ("latent",), "memory": ("memory",), "text": ("expression_emb", "reasoning_emb")}
"""`RolloutConfig.store` name -> the fields it adds (`lsm rollout --store latent,memory,text`, or `all`)."""


def parse_store(store: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`"latent,memory"` / `"all"` / a list -> the checked list of optional field groups (ValueError otherwise)."""
    names = [s.strip() for s in store.split(",")] if isinstance(store, str) else list(store or [])
    names = [s for s in names if s]
    if names == ["all"]:
        return list(OPTIONAL_FIELDS)
    unknown = [s for s in names if s not in OPTIONAL_FIELDS]
    if unknown:
        raise ValueError(f"--store {','.join(names)}: {', '.join(map(repr, unknown))} is not a field group; expected a "
                         f"comma-separated subset of {', '.join(OPTIONAL_FIELDS)}, or all")
    return list(dict.fromkeys(names))


def missing_fields(fields, need: dict[str, str], path: str | Path, what: str) -> str | None:
    """The message asking for optional rollout fields `path` lacks (`need`: field -> its --store
    group), or None when it has them all; `what` names what needs them."""
    groups = sorted({g for f, g in need.items() if f not in fields})
    if not groups:
        return None
    return (f"{path} has no {', '.join(f for f, g in need.items() if g in groups)}, which {what} needs: rollouts store "
            f"them only on request; rerun lsm rollout with --store {','.join(groups)}")


class StudentPolicy:
    """The trained student answering for every agent, one forward pass per tick."""

    kind = "student_rollout"
    journal_every = 4
    """Journal the agents' state (1.4 GiB at 10^6 agents) every 4th tick: a resumed run loads the
    newest and recomputes the ticks after it (at most 3 forward passes), since a tick of the
    student is cheap to recompute and exactly reproducible; the ticks' outputs are journaled every tick."""

    def __init__(self, student: Student, world: World, scenario: Scenario, cfg: RolloutConfig,
                 persona_emb: torch.Tensor | None = None):
        self.student, self.world, self.sc, self.cfg = student, world, scenario, cfg.for_student(student)
        cfg = self.cfg
        self.model = student.model.to(cfg.device).eval()
        self.chunk = cfg.agent_chunk if cfg.agent_chunk is not None else forward_chunk(cfg.device)
        pop = world.population
        # by attribute and category name: a world from another population works, unknown where it differs
        self.cat, self.num = student.identity(pop)  # (N, n_cat), (N, n_num)
        self.persona = persona_emb if persona_emb is not None else \
            persona_tensor(pop)  # (N, T)
        self.action_emb = embed_texts(tuple(action_texts(scenario)))  # (A, T)
        self.typer = EdgeTyper(world.graph, receivers=self.rows)
        self.numeric = scenario.actions.type == "numeric"
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._static = [t.to(cfg.device) for t in (self.cat, self.num, self.persona, self.action_emb)]
        self.context = embed_texts((context_text(scenario),))[0].to(cfg.device)  # (T,)
        offsets = logit_offsets(scenario, pop)
        self.offsets = None if offsets is None else torch.from_numpy(offsets).to(cfg.device)  # (N, A) the scenario's fitted leans
        self.state = self.fresh_state()

    def fresh_state(self) -> AgentState:
        """The initial state, with every agent's stochastic latent drawn from its prior (seeded)."""
        state = self.model.initial_state(self.world.n, self.sc.actions.n, device=self.cfg.device)
        g = seeds.torch_generator(self.cfg.seed, seeds.Stream.AGENT_NOISE)
        state.agent_noise = self.model.draw_agent_noise(self.world.n, g).to(self.cfg.device)
        return state

    # -- the policy's contract -------------------------------------------------------------
    def dims(self) -> dict[str, int]:
        c = self.student.config
        return {"C": c.channels, "Z": c.latent_dim, "H": c.memory_dim}

    def fields(self) -> list[str]:
        f = list(DEFAULT_FIELDS) + [name for group in self.cfg.store for name in OPTIONAL_FIELDS[group]]
        if self.numeric:
            f.append("decision_value")
        return f

    interventions: Interventions | None = None
    """The edits this run's scenario and world were made with (a what-if, counterfactual or
    recovery intervention): recorded as `config.interventions` (`Rollout(interventions=...)`)."""

    def configs(self) -> dict[str, Any]:
        out = {"student": json.dumps({**asdict(self.student.config), "checkpoint": self.student.path}),
               "rollout": json.dumps(asdict(self.cfg))}
        if self.interventions:
            out["interventions"] = self.interventions.to_yaml()
        return out

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {k: v.cpu().numpy() for k, v in vars(self.state).items()}

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.state = AgentState(**{k: torch.from_numpy(v).to(self.cfg.device) for k, v in arrays.items()})

    def finalize(self, writer: TraceWriter) -> None:
        pass

    def _encode(self, texts: tuple[str, ...]) -> torch.Tensor:
        if texts not in self._text_cache:
            self._text_cache[texts] = embed_texts(texts)
        return self._text_cache[texts]

    senders: torch.Tensor | None = None
    """(N_r + halo, X + 1) what this tick's receivers hear, when not their own broadcasts (a shard's)."""

    def forward(self, inp: TickInputs, capture: bool):
        """One tick of the model with this rollout's settings (chunking, text decoding); with
        `capture` (attention weights, readouts of a few agents' runs) in one pass."""
        self.model.decode_text = "text" in self.cfg.store
        try:
            if capture:
                assert self.senders is None, "readouts are captured on one process"
                self.model.agent_chunk = auto_chunk(self.world.n)
                return advance(self.model, self.state, inp, return_attention=True)
            self.model.agent_chunk = 0 if self.chunk else auto_chunk(self.world.n)
            own = None if self.senders is None else torch.arange(self.state.n, device=self.senders.device)
            return advance(self.model, self.state, inp, senders=self.senders, receivers=own, chunk=self.chunk)
        finally:
            self.model.decode_text = True  # the model is shared (training, replays): leave its default

    rows: np.ndarray | None = None
    """(N_r,) the agents this policy answers for (a shard's, `infer.sharded`); None: every agent."""

    def sender_ids(self, p: Perception, shown: np.ndarray) -> np.ndarray:
        """(N_r, K) the shown senders as rows of what the receivers hear (here: agent ids, the
        population's own broadcasts; a shard maps them into its own rows and halo)."""
        return shown

    def inputs(self, p: Perception) -> TickInputs:
        """The student's inputs for one tick, for its `rows`: identities, this tick's events and
        who sees them, and the shown-neighbour table typed by the graph (the padded fast path).
        Random numbers are drawn for the whole population and the rows' taken, so an agent's
        draws do not depend on which rows a process answers for."""
        dev, rows = self.cfg.device, self.rows
        assert (rows is None) == (p.rows is None), "a shard's policy perceives its rows (`SocietyLoop.receivers`)"
        pick = (lambda x: x) if rows is None else (lambda x: x[rows])  # noqa: E731
        ev_cat, ev_num, ev_emb = event_tensors(event_rows(p.events), self._encode)
        shown = p.shown  # (N_r, K) agent ids
        agent, ev = np.nonzero(p.seen)
        exposure = torch.from_numpy(np.stack([agent, ev]).astype(np.int64)).reshape(2, -1)  # (2, V)
        cat, num, persona, actions = self._static
        none = torch.zeros(2, 0, dtype=torch.long, device=dev)
        g = seeds.torch_generator(self.cfg.seed, seeds.Stream.TICK_NOISE, p.tick)
        tick_noise = pick(torch.randn(p.n, self.model.cfg.tick_noise, generator=g)).to(dev)  # (N_r, Rt) from the prior
        draws = self.draws(p.tick, p.n)
        return TickInputs(cat, num, persona, none, torch.zeros(0, dtype=torch.long, device=dev), ev_cat.to(dev),
                          ev_num.to(dev), ev_emb.to(dev), exposure.to(dev), actions,
                          torch.from_numpy(self.sender_ids(p, shown).astype(np.int64)).to(dev),
                          torch.from_numpy(self.typer.table(shown, rows)).to(dev),
                          self.context, tick_noise, draws if rows is None else draws.rows(torch.from_numpy(rows)), self.offsets)

    def draws(self, tick: int, n: int) -> Draws:
        """This tick's random numbers, per agent and seeded (`society.seeds`): the decision's
        inverse-CDF uniform, the stance's and the reported channels' standard-normal noise (the
        last two where the student predicts them: `stance_noise`, `channel_effects`)."""
        c, dev = self.model.cfg, self.cfg.device
        uniform = torch.rand(n, generator=seeds.torch_generator(self.cfg.seed, seeds.Stream.STUDENT_DECISION, tick))  # (N,)
        stance = torch.randn(n, generator=seeds.torch_generator(self.cfg.seed, seeds.Stream.STUDENT_STANCE, tick)) \
            if c.stance_noise else None  # (N,)
        channels = torch.randn(n, c.channels, generator=seeds.torch_generator(self.cfg.seed, seeds.Stream.STUDENT_CHANNELS, tick)) \
            if c.channel_effects else None  # (N, C)
        return Draws(uniform=uniform, stance_eps=stance, channel_eps=channels).to(dev)

    @torch.inference_mode()
    def act(self, p: Perception, progress: Progress | None = None, capture: bool = False) -> TickOutput:
        cfg = self.cfg
        n = p.n if self.rows is None else len(self.rows)
        inp = self.inputs(p)
        t0 = time.perf_counter()
        self.state, out = self.forward(inp, capture)
        if cfg.device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        probs = torch.softmax(out.decision_logits.float(), -1)  # (N, A)
        assert out.drawn is not None  # drawn in the tick (`Draws.uniform`); the state records it
        decision = out.drawn.cpu().numpy()
        state = self.state
        data: dict[str, np.ndarray] = {
            "channels": out.channels.float().cpu().numpy(), "decision": decision.astype(np.int16),
            "decision_dist": probs.cpu().numpy(), "stance": out.stance.float().cpu().numpy(),
            "salience": out.salience.float().cpu().numpy(), "valid": np.ones(n, dtype=bool),
        }
        if "latent" in cfg.store:
            data["latent"] = state.latent.cpu().numpy().astype(np.float16)
        if "memory" in cfg.store:
            data["memory"] = state.memory.cpu().numpy().astype(np.float16)
        if "text" in cfg.store:
            assert out.expression_text is not None and out.reasoning_text is not None
            data["expression_emb"] = out.expression_text.cpu().numpy().astype(np.float16)
            data["reasoning_emb"] = out.reasoning_text.cpu().numpy().astype(np.float16)
        if self.numeric:
            data["decision_value"] = self.sc.actions.bin_centers[decision].astype(np.float32)  # the bin's centre stands for the number
        extra = None
        if capture:
            extra = {"attention": [a.cpu().numpy() for a in out.attention or [] if a is not None],
                     "memory_read": out.memory_read.cpu().numpy(), "write_slot": out.write_slot.cpu().numpy(),
                     "event_uids": np.array([e.uid for e in p.events], dtype=np.int64)}
        if progress is not None:
            progress(n, f"{seconds:.3f} s forward, {n / max(seconds, 1e-9):,.0f} agent-ticks/s")
        return TickOutput(data, np.ones(n, dtype=bool), {"forward_s": seconds}, extra)

    def summary(self, stats: list[dict[str, Any]], wall: float, resumed: int) -> dict[str, Any]:
        seconds = [s["forward_s"] for s in stats]
        journal = [s["journal_s"] for s in stats if "journal_s" in s]
        return {"agents": self.world.n, "ticks": len(stats), "actions": list(self.sc.actions.labels),
                "decision_shares": [s["shares"] for s in stats],
                "forward_seconds_per_tick": float(np.mean(seconds)) if seconds else 0.0, "wall_seconds": wall,
                "journal_seconds_per_tick": float(np.mean(journal)) if journal else 0.0, "resumed_from_tick": resumed}


@dataclass
class TickResult:
    tick: int
    data: dict[str, np.ndarray]
    """The tick's fields, as written to the file."""
    events: list
    """Every event instance so far (`ScheduledEvent`)."""
    seconds: float
    """Student forward time (inputs built and outputs copied back excluded)."""
    capture: dict | None = None
    """With `ticks(capture=True)`: `attention` per layer (N, K + 1, H) over [shown..., self],
    `memory_read` (N, S), `write_slot` (N,), `event_uids` (Ev,) of this tick's event rows."""

    @classmethod
    def of(cls, rec: TickRecord) -> "TickResult":
        return cls(rec.tick, rec.data, rec.events, rec.stats["forward_s"], rec.capture)


class Rollout:
    """A student on one world and scenario; iterate `ticks()` or call `run(out)`."""

    def __init__(self, student: Student, world: World, scenario: Scenario, cfg: RolloutConfig,
                 persona_emb: torch.Tensor | None = None, scenario_source: str | None = None,
                 interventions: Interventions | None = None):
        """`interventions`: the edits that made `scenario` and `world` from a base (recorded in the file)."""
        self.student, self.world, self.sc, self.source = student, world, scenario, scenario_source
        self.policy = StudentPolicy(student, world, scenario, cfg, persona_emb)
        self.policy.interventions = interventions
        self.cfg = self.policy.cfg  # the neighbour rule resolved
        self.persona, self.typer = self.policy.persona, self.policy.typer
        self.loop = self._loop()

    def _loop(self) -> SocietyLoop:
        self.policy.state = self.policy.fresh_state()
        return SocietyLoop(self.policy, self.sc, self.world.population, self.world.graph, self.cfg.seed,
                           self.rule, self.cfg.ticks, self.source)

    @property
    def rule(self) -> NeighborRule:
        assert self.cfg.neighbors is not None  # resolved by StudentPolicy
        return self.cfg.neighbors

    @property
    def n(self) -> int:
        return self.world.n

    @property
    def n_ticks(self) -> int:
        return self.loop.n_ticks

    def ticks(self, capture: bool = False) -> Iterator[TickResult]:
        """Every tick from the initial state, in memory."""
        self.loop = self._loop()
        for rec in self.loop.ticks(capture):
            yield TickResult.of(rec)

    def run(self, out: str | Path | None, world_file: str | Path | None = None, scenario_yaml: str = "",
            keep: bool = False, quiet: bool = True, restart: bool = False, desc: str | None = None,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Run every tick; with `out`, journaled (a killed run resumes) and written to `out`.
        Returns a summary (and `ticks_data`, the results computed by this process, with `keep`).
        Unless `quiet`, a progress bar (agents/s) on stderr, titled `desc`; `progress(tick)` is
        called as each tick this process computes is done (the explorer's bar)."""
        kept: list[TickResult] = []
        self.loop = self._loop()
        desc = desc or f"rollout {self.sc.name}"
        if out is None:
            import sys

            from tqdm import tqdm

            stats, wall = [], time.perf_counter()
            with tqdm(total=self.n_ticks * self.n, unit="agent", unit_scale=True, disable=quiet, file=sys.stderr, desc=desc,
                      dynamic_ncols=True) as bar:
                for rec in self.loop.ticks():
                    stats.append(rec.stats)
                    bar.update(self.n)
                    bar.set_postfix_str(f"tick {rec.tick + 1}/{self.n_ticks}, {rec.stats['forward_s']:.2f} s forward")
                    if keep:
                        kept.append(TickResult.of(rec))
                    if progress is not None:
                        progress(rec.tick)
            summary = self.policy.summary(stats, time.perf_counter() - wall, 0)
        else:
            assert world_file is not None, "a rollout file needs the world file (its population and graph are copied)"

            def on_tick(rec: TickRecord) -> None:
                if keep:
                    kept.append(TickResult.of(rec))
                if progress is not None:
                    progress(rec.tick)

            summary = self.loop.run(out, world_file, scenario_yaml, {"seed": self.cfg.seed}, inputs=[self.student.path],
                                    restart=restart, quiet=quiet, desc=desc, on_tick=on_tick)
            summary["peak_rss_gib"] = round(peak_rss_gb(), 3)
        if keep:
            summary["ticks_data"] = kept
        return summary


def recorded_config(cfg_dict: dict[str, Any], device: str = "cpu") -> RolloutConfig:
    """The `RolloutConfig` a rollout file records (its `config.rollout`), on `device`."""
    cfg_dict = dict(cfg_dict)
    if "store_text" in cfg_dict:  # written before `store`: latent and memory always, text unless store_text was false
        cfg_dict["store"] = ["latent", "memory"] + (["text"] if cfg_dict.pop("store_text") else [])
    cfg_dict = NeighborRule.upgrade_flat(cfg_dict)  # written before the rule was one `NeighborRule`: flat fields
    if isinstance(cfg_dict.get("neighbors"), dict):
        cfg_dict["neighbors"] = NeighborRule(**cfg_dict["neighbors"])
    return RolloutConfig(**{**cfg_dict, "device": device})


def rollout_from_file(student: Student, path: str | Path, device: str = "cpu") -> Rollout:
    """The Rollout that wrote `path` (same world, scenario and rollout config), to replay it
    with readouts; `replay_matches(...)` checks the replay reproduces the file."""

    with TraceFile(path) as tf:
        if tf.kind != "student_rollout":
            raise ValueError(f"{path} is a {tf.kind}, not a student rollout")
        sc = tf.scenario
        cfg_dict = read_configs(tf.f)["rollout"]  # JSON is YAML: a dict
    return Rollout(student, load_world(path), sc, recorded_config(cfg_dict, device))
