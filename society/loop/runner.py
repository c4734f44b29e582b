"""The society loop: one simulation of a society, tick by tick, whatever answers for the agents.

The loop is written once and owns the per-tick process (docs/design.md §2, "The loop and its policies"):

    for t in range(T):
        events  = schedule.events_at(t)            # scheduled + injected by triggers last tick
        seen    = exposure, capped at MAX_EVENTS per agent (in schedule order)
        shown   = neighbours.shown(rule, spoke, seed, t)   # who each agent hears, one seeded rule
        out     = policy.act(Perception(t, events, seen, event_ids, shown, spoke))
        spoke   = out.spoke                          # who broadcast a message this tick
        schedule.after_tick(t, population state of out)  # triggers -> events at t + 1
        journal the tick (fields + loop and policy state); stream it to the trace store

A *policy* receives what every agent perceives and returns the tick's outputs in the trace
schema (`TRACE_FIELDS`): the LLM teacher (`lsm.data_gen.teacher.llm`), the planted reference
society (`lsm.data_gen.planted`) and the student (`lsm.infer.rollout`). So teacher and student
can never disagree about what an agent saw.

Resume: `run(out)` journals every finished tick (`journal.Journal`); killed at any point and
rerun with the same inputs, it continues from the last finished tick and writes the same file.
The HDF5 file is assembled from the journal into `<out>.tmp` and renamed when the run ends, so a
file at `out` is always complete.

Notation: N agents | K shown neighbours | E events per agent-tick (MAX_EVENTS) | Ev events this tick.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from lsm.config import Interrupted
from lsm.paths import check_room
from lsm.society.embed import TEXT_DIM
from lsm.society.loop.events import EventSchedule, PopulationState, ScheduledEvent
from lsm.society.loop.journal import Journal, fingerprint
from lsm.society.loop.neighbors import NeighborIndex, NeighborRule
from lsm.society.scenario import Scenario, check_against_world
from lsm.society.store import StoreError, TraceWriter, check_header, open_h5

MAX_EVENTS = 4
"""E: at most this many events per agent-tick (the first ones in schedule order)."""

Progress = Callable[[int, str], None]
"""`progress(agents_done, postfix)`: a policy reports agents finished within a tick."""


def capped_exposure(exposed: np.ndarray, events: list[ScheduledEvent]) -> tuple[np.ndarray, np.ndarray]:
    """(seen (N, Ev) bool, event_ids (N, E) int32 uids, -1 padded): each agent's first
    MAX_EVENTS exposed events of the tick, in schedule order."""
    n = exposed.shape[0]
    slot = np.cumsum(exposed, axis=1) - 1  # (N, Ev): the event's position in the agent's list
    seen = exposed & (slot < MAX_EVENTS)
    ids = np.full((n, MAX_EVENTS), -1, dtype=np.int32)
    for k, e in enumerate(events):
        rows = np.nonzero(seen[:, k])[0]
        ids[rows, slot[rows, k]] = e.uid
    return seen, ids


@dataclass
class Perception:
    """What every agent perceives at one tick."""

    tick: int
    events: list[ScheduledEvent]
    """This tick's events (Ev), in schedule order."""
    seen: np.ndarray
    """(N, Ev) bool: agent i sees event k (after the MAX_EVENTS cap)."""
    event_ids: np.ndarray
    """(N, E) int32: uids of the events each agent sees, in order, -1 padded."""
    shown: np.ndarray
    """(N, K) int32: the neighbours whose last-tick messages each agent is shown, -1 padded."""
    spoke: np.ndarray
    """(N,) bool: who broadcast a message last tick."""
    rows: np.ndarray | None = None
    """(N_r,) the agents whose rows `seen`, `event_ids` and `shown` hold (a shard's, ascending
    ids); None: every agent."""

    @property
    def n(self) -> int:
        """N, the whole population."""
        return len(self.spoke)

    def events_of(self, i: int) -> list[ScheduledEvent]:
        return [self.events[k] for k in np.nonzero(self.seen[i])[0]]


@dataclass
class TickOutput:
    """A policy's answer for one tick."""

    data: dict[str, np.ndarray]
    """The tick's per-agent fields (trace schema) except `shown_neighbors` and `exposed_events`,
    which the loop adds."""
    spoke: np.ndarray
    """(N,) bool: who broadcast a message this tick (heard by neighbours next tick)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """JSON-able figures of the tick for the run summary (tokens, seconds, ...)."""
    capture: dict[str, Any] | None = None
    """Readouts when asked for (`capture=True`): the student's attention and memory."""


@dataclass
class TickRecord:
    tick: int
    data: dict[str, np.ndarray]
    """Every field of the tick as written to the trace."""
    events: list[ScheduledEvent]
    """Every event instance so far (scheduled and injected), for the `events/` table."""
    stats: dict[str, Any]
    capture: dict[str, Any] | None = None


class Policy(Protocol):
    """What answers for the agents: receives perceptions, returns trace fields."""

    kind: str
    """Trace kind written: `teacher_trace` or `student_rollout`."""

    def dims(self) -> dict[str, int]:
        """Sizes of the per-tick dims of its fields beyond N, K, E, A, C, D (e.g. Z, H)."""
        ...

    def fields(self) -> list[str]:
        """Per-tick fields it returns (the loop adds shown_neighbors and exposed_events)."""
        ...

    def configs(self) -> dict[str, Any]:
        """Configs embedded in the trace file (YAML/JSON text); also fingerprint a resumed run."""
        ...

    def act(self, p: Perception, progress: Progress | None = None, capture: bool = False) -> TickOutput: ...

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able state, array state) after the last tick: what a resumed run needs. A policy
        whose ticks are cheap to recompute may set `journal_every = K`: its state is then journaled
        every K-th tick, and a resumed run replays the ticks since (the student does)."""
        ...

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...

    def finalize(self, writer: TraceWriter) -> None:
        """Static datasets and attributes written once, when the run is complete."""
        ...

    def summary(self, stats: list[dict[str, Any]], wall: float, resumed: int) -> dict[str, Any]:
        """The run summary from the per-tick stats (each holds the loop's `shares`, `invalid`, ...)."""
        ...


class SocietyLoop:
    """One run of `policy` on a world and scenario (module docstring)."""

    receivers: np.ndarray | None = None
    """(N_r,) the agents the policy answers for, when not every one (a shard's: `sharded.ShardedLoop`)."""

    def __init__(self, policy: Policy, scenario: Scenario, pop, graph, seed: int, rule: NeighborRule,
                 ticks: int | None = None, scenario_source: str | Path | None = None):
        check_against_world(scenario, pop, graph, source=scenario_source)
        self.policy, self.sc, self.pop, self.graph, self.seed, self.rule = policy, scenario, pop, graph, seed, rule
        self.n_ticks = scenario.ticks if ticks is None else ticks
        self.schedule = EventSchedule(scenario, pop, graph, seed)
        self.neighbors = NeighborIndex.of(graph, rule.weights, receivers=self.receivers)
        self.spoke = np.zeros(pop.n, dtype=bool)  # tick 0: nobody has spoken yet
        self.numeric = scenario.actions.type == "numeric"

    @property
    def n(self) -> int:
        return self.pop.n

    def dims(self) -> dict[str, int]:
        return {"N": self.n, "C": len(self.sc.channel_names), "A": self.sc.actions.n, "D": TEXT_DIM,
                "K": max(1, self.rule.k), "E": MAX_EVENTS, **self.policy.dims()}

    def fields(self) -> list[str]:
        return list(dict.fromkeys(self.policy.fields() + ["shown_neighbors", "exposed_events"]))

    def perceive(self, t: int) -> Perception:
        """What the agents perceive at tick t (the `receivers`' rows only, where set)."""
        events = self.schedule.events_at(t)
        exposed = self.schedule.exposure(t)  # (N, Ev)
        seen, ids = capped_exposure(exposed if self.receivers is None else exposed[self.receivers], events)
        shown = self.neighbors.shown(self.rule, self.spoke, self.seed, t)
        return Perception(t, events, seen, ids, shown, self.spoke.copy(), self.receivers)

    def population(self, data: dict[str, np.ndarray], spoke: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(fields, spoke) of every agent from the policy's rows (here they are every agent's; a
        shard gathers the other ranks'): what triggers and the tick's statistics read."""
        return data, spoke

    def step(self, t: int, progress: Progress | None = None, capture: bool = False) -> TickRecord:
        p = self.perceive(t)
        out = self.policy.act(p, progress, capture)
        data = {**out.data, "shown_neighbors": p.shown, "exposed_events": p.event_ids}
        whole, spoke = self.population({k: data[k] for k in ("valid", "decision", "channels", "decision_value") if k in data},
                                       out.spoke)
        valid = whole["valid"].astype(bool)
        decision = whole["decision"].astype(np.int64)
        value = whole.get("decision_value") if self.numeric else None
        self.schedule.after_tick(t, PopulationState(decision=decision, decision_value=value, channels=whole["channels"],
                                                    valid=valid))
        self.spoke = spoke.astype(bool)
        d = decision[valid]
        stats = {"tick": t, "agents": self.n, "invalid": int((~valid).sum()),
                 "shares": (np.bincount(d, minlength=self.sc.actions.n) / max(len(d), 1)).round(4).tolist() if len(d) else None,
                 **out.stats}
        if self.numeric and value is not None:
            stats["mean_value"] = round(float(np.nanmean(value[valid])), 2) if valid.any() else None
        return TickRecord(t, data, list(self.schedule.events), stats, out.capture)

    def ticks(self, capture: bool = False) -> Iterator[TickRecord]:
        """Every tick from 0, in memory (no journal, no file)."""
        for t in range(self.n_ticks):
            yield self.step(t, capture=capture)

    # -- resume ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "spoke": np.nonzero(self.spoke)[0].tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.spoke = np.zeros(self.n, dtype=bool)
        self.spoke[np.asarray(state["spoke"], dtype=np.int64)] = True

    # -- a run to a file ------------------------------------------------------------------
    def run(self, out: str | Path, world_file: str | Path, scenario_yaml: str, seeds: dict[str, Any],
            inputs: Sequence[str | Path] = (), restart: bool = False, quiet: bool = False, desc: str = "",
            on_tick: Callable[[TickRecord], None] | None = None) -> dict[str, Any]:
        """Run every tick, journaled, and write `out` (resuming a journaled run of the same inputs).

        `inputs` are further files whose bytes the run depends on (a checkpoint); `on_tick` sees
        every tick computed by this process. Returns the policy's summary. Ctrl-C raises
        `Interrupted` saying how many ticks are kept and how to resume.
        """
        out = Path(out)
        with open_h5(world_file) as wf:  # a trace also embeds its world, but a run is written from a world file
            kind = check_header(wf)
        if kind != "world":
            raise StoreError(f"{world_file}: is a '{kind}' file; --world needs a world file (from `lsm world`), "
                             "such as the one this run was made from")
        configs = self.policy.configs()
        texts = [scenario_yaml, repr(sorted(seeds.items())), repr(self.n_ticks), repr(self.rule)]
        texts += [f"{k}={v}" for k, v in sorted(configs.items())]
        fp = fingerprint([world_file, *inputs], texts)
        journal = self.journal(out, fp, {"world": str(world_file), "seeds": seeds, "kind": self.policy.kind}, restart)
        try:
            return self._run(out, journal, world_file, scenario_yaml, seeds, configs, quiet, desc, on_tick)
        except KeyboardInterrupt:  # Ctrl-C: every finished tick is journaled; `out` is not written
            done = journal.finished(self.n_ticks)
            raise Interrupted(f"{out} was not written: {done} of {self.n_ticks} ticks are journaled in {self.journal_place(journal)}. "
                              f"Run the same command again to resume from tick {done}, or add --restart true to start over.") from None
        finally:
            journal.release()

    def journal(self, out: Path, fp: str, meta: dict[str, Any], restart: bool) -> Journal:
        """Where this run journals its ticks: `<out>.journal` (a shard: its own, `ShardedLoop`)."""
        return Journal(out, fp, meta, restart)

    def journal_place(self, journal: Journal) -> Path:
        """The folder a user is told holds the run's journaled ticks."""
        return journal.dir

    def finished(self, journal: Journal) -> int:
        """How many ticks from 0 on this run can resume past (a shard: those every rank finished)."""
        return journal.finished(self.n_ticks)

    def _run(self, out: Path, journal: Journal, world_file: str | Path, scenario_yaml: str, seeds: dict[str, Any],
             configs: dict[str, Any], quiet: bool, desc: str, on_tick: Callable[[TickRecord], None] | None) -> dict[str, Any]:
        from tqdm import tqdm

        resumed = self.finished(journal)
        stats: list[dict[str, Any]] = []
        if resumed:
            stats = journal.state(resumed - 1)[0]["stats"]
            base = journal.newest_full(resumed)
            if base >= 0:
                state, arrays = journal.state(base)
                self.load_state_dict(state["loop"])
                self.policy.load_state_dict(state["policy"], arrays)
            for t in range(base + 1, resumed):  # the policy's state is journaled every `journal_every` ticks: replay the rest
                self.step(t)
        t_run = time.perf_counter()
        bar = tqdm(total=self.n_ticks * self.n, initial=resumed * self.n, unit="agent", disable=quiet, file=sys.stderr,
                   desc=desc, dynamic_ncols=True, unit_scale=True)
        for t in range(resumed, self.n_ticks):
            done = 0

            def progress(k: int, postfix: str, t=t) -> None:
                nonlocal done
                done += k
                bar.update(k)
                bar.set_postfix_str(f"tick {t + 1}/{self.n_ticks}, {postfix}")

            rec = self.step(t, progress)
            if done < self.n:
                bar.update(self.n - done)
            stats.append(rec.stats)
            every = max(1, getattr(self.policy, "journal_every", 1))
            full = every == 1 or ((t + 1) % every == 0 and t + 1 < self.n_ticks)  # a last tick's state is never resumed from
            pstate, parrays = self.policy.state_dict() if full else ({}, {})
            t0 = time.perf_counter()
            journal.save(t, rec.data, {"loop": self.state_dict(), "policy": pstate, "stats": stats, "full": full}, parrays)
            stats[-1]["journal_s"] = time.perf_counter() - t0  # (its journaled copy lacks it: written by this save)
            if on_tick is not None:
                on_tick(rec)
        bar.close()
        summary = self.policy.summary(stats, time.perf_counter() - t_run, resumed)
        t0 = time.perf_counter()
        self.finish(out, journal, world_file, scenario_yaml, seeds, configs, summary)
        summary["write_seconds"] = round(time.perf_counter() - t0, 2)
        return summary

    def finish(self, out: Path, journal: Journal, world_file, scenario_yaml: str, seeds: dict[str, Any],
               configs: dict[str, Any], summary: dict[str, Any]) -> None:
        """Every tick is journaled: write `out` from the journal and remove the journal."""
        self._assemble(out, [journal.dir], journal.data, world_file, scenario_yaml, seeds, configs, summary)
        journal.remove()

    def _assemble(self, out: Path, dirs: list[Path], data_of: Callable[[int], dict[str, np.ndarray]], world_file,
                  scenario_yaml: str, seeds: dict[str, Any], configs: dict[str, Any], summary: dict[str, Any]) -> None:
        """Write `out` (through `<out>.tmp`) with every tick's fields, `data_of(t)`, read from the
        journals in `dirs`."""
        tmp = out.with_name(out.name + ".tmp")
        need = sum(f.stat().st_size for d in dirs for f in d.glob("tick_*.npz")) + Path(world_file).stat().st_size + (1 << 20)
        check_room(tmp, need, f"the {self.n_ticks} ticks of {self.n:,} agents",
                   kept=f"every tick is kept in {', '.join(map(str, dirs))}, and the same command writes the file once there is room")
        writer = TraceWriter(tmp, self.policy.kind, world_file, scenario_yaml, self.dims(), self.fields(),
                             configs=configs, seeds=seeds, ticks_planned=self.n_ticks)
        try:
            writer.f.attrs["neighbor_rule"] = json.dumps(asdict(self.rule))  # who could hear whom
            writer.add_events(self.schedule.events)
            for t in range(self.n_ticks):
                writer.append_tick(data_of(t))
            self.policy.finalize(writer)
            writer.close(complete=True, summary=summary)
        except BaseException:
            writer.close(complete=False)
            raise
        os.replace(tmp, out)


def decision_shares(stats: list[dict[str, Any]], labels: list[str]) -> list[dict[str, float | None]]:
    """Per tick, {action: share of the valid agents} (None where no agent was valid)."""
    return [{a: (s["shares"][k] if s["shares"] is not None else None) for k, a in enumerate(labels)} for s in stats]
