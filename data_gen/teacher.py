"""`lsm gen`: LLM agents play a scenario on a world; every agent-tick goes into a trace file.

Per tick (DESIGN §4): events and exposure from the shared `EventSchedule`; one prompt per
agent; answers generated in batches of `chunk` agents, validated, repaired (re-ask with the
error, then an extraction call) and, after `max_attempts`, recorded invalid with the reason;
decision and channel distributions read by `score_options`; texts embedded; memories updated;
triggers evaluated on the teacher population's state.

Resume: each finished tick is written to `<out>.journal/tick_NNNN.npz` plus the run state
(`state_NNNN.json`: memories, last messages, injected events) with write-to-temp + fsync +
rename, so a run killed at any moment (kill -9) loses at most the tick in progress. The same
command continues from the journal; every random draw depends only on (seed, tick, chunk,
attempt), so the result equals an uninterrupted run. When all ticks are done the HDF5 file is
assembled into `<out>.tmp` and renamed over `<out>`; then the journal is removed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsm.config import load_config, to_yaml
from lsm.data_gen import agent as ag
from lsm.data_gen.backends.base import LLMBackend
from lsm.data_gen.dynamics import EventSchedule, PopulationState
from lsm.data_gen.graph import EDGE_TYPES
from lsm.data_gen.scenario import Scenario, check_against_world, load_scenario
from lsm.data_gen.store import StoreError, TraceWriter
from lsm.data_gen.teacher_config import TeacherConfig, make_backend

EMB_DIM = 384
MAX_EVENTS = 4


class JournalMismatch(StoreError):
    pass


# --------------------------------------------------------------------------- atomic files
def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _seed(*parts: int) -> int:
    """A 31-bit seed from integers (stable across processes)."""
    return int(np.random.default_rng([p & 0xFFFFFFFF for p in parts]).integers(0, 2**31 - 1))


# --------------------------------------------------------------------------- neighbours
@dataclass
class NeighborIndex:
    """In-edges of every agent, grouped by receiver (the graph is sorted by receiver)."""

    ptr: np.ndarray  # [N+1]
    sender: np.ndarray  # [E]
    etype: np.ndarray  # [E]
    log_w: np.ndarray  # [E] log of the per-type weight (-inf: never shown)

    @classmethod
    def of(cls, graph, weights: dict[str, float]) -> "NeighborIndex":
        recv = graph.edge_index[1]
        ptr = np.searchsorted(recv, np.arange(graph.n + 1)).astype(np.int64)
        w = np.array([weights.get(t, 0.0) for t in EDGE_TYPES])
        with np.errstate(divide="ignore"):
            log_w = np.log(w)[graph.edge_type.astype(np.int64)]
        return cls(ptr, graph.edge_index[0].astype(np.int64), graph.edge_type.astype(np.int64), log_w)

    def sample(self, k: int, has_message: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[N, k] ids of shown neighbours (-1 padded): Gumbel top-k by type weight, among
        neighbours that broadcast a message last tick; no sender twice."""
        n = len(self.ptr) - 1
        out = np.full((n, k), -1, dtype=np.int32)
        if k == 0 or len(self.sender) == 0:
            return out
        keys = self.log_w + rng.gumbel(size=len(self.sender))  # (E,)
        keys[~has_message[self.sender]] = -np.inf
        return self.top_k(keys, k)

    def top_k(self, keys: np.ndarray, k: int) -> np.ndarray:
        """[N, k]: per receiver, the senders of its k largest finite keys, self excluded and each
        sender once (a repeated sender counts with its largest key); vectorised, O(E log E)."""
        n = len(self.ptr) - 1
        out = np.full((n, k), -1, dtype=np.int32)
        recv = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.ptr))  # (E,)
        ok = np.isfinite(keys) & (self.sender != recv)
        r, s, key = recv[ok], self.sender[ok], keys[ok]
        order = np.lexsort((-key, s, r))  # by receiver, sender, then key descending
        r, s, key = r[order], s[order], key[order]
        first = np.ones(len(r), dtype=bool)
        first[1:] = (r[1:] != r[:-1]) | (s[1:] != s[:-1])  # the best edge of each (receiver, sender)
        r, s, key = r[first], s[first], key[first]
        order = np.lexsort((-key, r))  # by receiver, key descending
        r, s = r[order], s[order]
        starts = np.searchsorted(r, np.arange(n))
        rank = np.arange(len(r)) - starts[r]  # position within the receiver's list
        keep = rank < k
        out[r[keep], rank[keep]] = s[keep]
        return out

    def relation(self, i: int, j: int) -> str:
        lo, hi = self.ptr[i], self.ptr[i + 1]
        types = self.etype[lo:hi][self.sender[lo:hi] == j]
        return ag.EDGE_WORDS[EDGE_TYPES[int(types.min())]] if len(types) else "someone"


# --------------------------------------------------------------------------- run state
@dataclass
class RunState:
    memories: list[ag.Memory]
    last_message: list[str]
    schedule: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"memories": [m.to_json() for m in self.memories], "last_message": self.last_message, "schedule": self.schedule}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunState":
        return cls([ag.Memory.from_json(m) for m in d["memories"]], list(d["last_message"]), d["schedule"])


@dataclass
class TickStats:
    agents: int = 0
    invalid: int = 0
    repaired: int = 0
    tokens: int = 0
    llm_s: float = 0.0


# --------------------------------------------------------------------------- the teacher
class Teacher:
    """Plays `scenario` on a world with `backend`, one tick at a time."""

    def __init__(self, cfg: TeacherConfig, backend: LLMBackend, scenario: Scenario, pop, graph, seed: int, encoder=None,
                 llm_seed: int | None = None):
        self.cfg, self.backend, self.sc, self.pop, self.graph, self.seed = cfg, backend, scenario, pop, graph, seed
        self.llm_seed = seed if llm_seed is None else llm_seed
        """`seed` drives the scenario's randomness (exposure, which neighbours are shown);
        `llm_seed` the LLM's sampling and the decision drawn from its distribution."""
        mode = cfg.answer
        if mode == "auto":
            mode = "texts" if backend.supports_logprobs else "full"
        if mode == "texts" and not backend.supports_logprobs:
            raise ValueError(f"answer: texts needs a backend with log-probabilities; {backend.name} has none (use answer: full)")
        self.mode = mode
        self.schema = ag.answer_schema(scenario, mode, cfg.limits)
        self.system = ag.system_prompt(scenario, mode)
        self.neighbors = NeighborIndex.of(graph, cfg.neighbor_weights)
        self.schedule = EventSchedule(scenario, pop, graph, seed)
        self.encoder = encoder
        self.numeric = scenario.actions.type == "numeric"
        self._cf_cache: dict[str, np.ndarray] = {}

    def dims(self) -> dict[str, int]:
        return {"N": self.pop.n, "C": len(self.sc.channel_names), "A": self.sc.actions.n, "D": EMB_DIM,
                "K": max(1, self.cfg.neighbors), "E": MAX_EVENTS}

    def fields(self) -> list[str]:
        f = ["channels", "decision", "decision_dist", "stance", "expression_emb", "reasoning_emb", "salience",
             "shown_neighbors", "exposed_events", "valid", "error", "reasoning", "expression", "salient_memory",
             "attempts", "tokens_prompt", "tokens_completion", "latency_s"]
        if self.mode == "texts":
            f.append("channel_dist")
        if self.numeric:
            f.append("decision_value")
        return f

    def initial_state(self) -> RunState:
        return RunState([ag.Memory() for _ in range(self.pop.n)], [""] * self.pop.n)

    # -- prompts --------------------------------------------------------------------------
    def prompts(self, tick: int, state: RunState) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(user prompts [N], shown neighbours [N,K], exposed event uids [N,E])."""
        events = self.schedule.events_at(tick)
        exposed = self.schedule.exposure(tick)  # (N, n_events) bool
        has_msg = np.array([bool(m) for m in state.last_message])
        shown = self.neighbors.sample(self.cfg.neighbors, has_msg, np.random.default_rng([self.seed, tick, 17]))
        ev_ids = np.full((self.pop.n, MAX_EVENTS), -1, dtype=np.int32)
        users = []
        for i in range(self.pop.n):
            seen = [e for e, x in zip(events, exposed[i]) if x][:MAX_EVENTS]
            ev_ids[i, : len(seen)] = [e.uid for e in seen]
            texts = [f"{e.event.source + ': ' if e.event.source else ''}{e.text}" for e in seen]
            msgs = [(self.pop.names[j], self.neighbors.relation(i, j), state.last_message[j]) for j in shown[i] if j >= 0]
            users.append(ag.user_prompt(self.sc, tick, self.pop.names[i], self.pop.persona[i], state.memories[i],
                                        self.cfg.memories, texts, msgs))
        if self.cfg.neighbors == 0:
            shown = np.full((self.pop.n, 1), -1, dtype=np.int32)
        return users, shown, ev_ids

    # -- answers --------------------------------------------------------------------------
    def answer(self, tick: int, chunk_id: int, users: list[str]) -> tuple[list[ag.Answer | None], dict[str, np.ndarray]]:
        """Generate, validate and repair the answers of one chunk of agents."""
        n = len(users)
        convs = [ag.conversation(self.system, u) for u in users]
        answers: list[ag.Answer | None] = [None] * n
        errors = [""] * n
        last_text = [""] * n
        acc = {"attempts": np.zeros(n, np.int8), "tokens_prompt": np.zeros(n, np.int32),
               "tokens_completion": np.zeros(n, np.int32), "latency_s": np.zeros(n, np.float32)}
        todo = list(range(n))
        for attempt in range(self.cfg.max_attempts):
            if not todo:
                break
            if attempt == 0:
                batch = [convs[i] for i in todo]
            elif attempt == 1 or attempt < self.cfg.max_attempts - 1:  # re-ask with the error
                batch = [convs[i] + [{"role": "assistant", "content": last_text[i]},
                                     {"role": "user", "content": ag.repair_prompt(errors[i])}] for i in todo]
            else:  # last try: an extraction call on the last answer
                batch = [ag.extraction_conversation(last_text[i], self.schema) for i in todo]
            gens = self.backend.generate(batch, schema=self.schema, temperature=self.cfg.temperature,
                                         seed=_seed(self.llm_seed, tick, chunk_id, attempt), max_tokens=self.cfg.max_tokens)
            still = []
            for i, g in zip(todo, gens):
                acc["attempts"][i] += 1
                acc["tokens_prompt"][i] += g.prompt_tokens
                acc["tokens_completion"][i] += g.completion_tokens
                acc["latency_s"][i] += g.latency_s
                last_text[i] = g.text
                try:
                    answers[i] = ag.validate(ag.extract_json(g.text), self.sc, self.mode)
                    errors[i] = ""
                except ag.InvalidAnswer as err:
                    errors[i] = str(err) + (" (answer cut off at max_tokens)" if g.finish_reason == "length" else "")
                    still.append(i)
            todo = still
        acc["error"] = np.array([f"after {self.cfg.max_attempts} attempts: {e}" if e else "" for e in errors], dtype=object)
        return answers, acc

    def _content_free(self, prefix_fn, options: list[str], key: str) -> np.ndarray:
        if key not in self._cf_cache:
            user = ag.user_prompt(self.sc, 0, "N/A", "N/A", ag.Memory(), 0, [], [])
            conv = ag.conversation(self.system, user) + [{"role": "assistant", "content": prefix_fn("N/A")}]
            self._cf_cache[key] = self.backend.score_options([conv], [options])[0]
        return self._cf_cache[key]

    def distributions(self, users: list[str], answers: list[ag.Answer | None]) -> tuple[np.ndarray, np.ndarray, float]:
        """(decision probs [n, n_options], rating probs [n, C, 11], seconds) for valid answers
        (rows of invalid agents are zero). One score_options call: the decision and every channel
        continue the agent's own reasoning, so a prefix-sharing backend encodes it once."""
        sc = self.sc
        dec_opts = ag.decision_options(sc)
        dec_prefix = ag.numeric_decision_prefix if self.numeric else ag.decision_prefix
        convs, opts, rows = [], [], []
        for i, a in enumerate(answers):
            if a is None:
                continue
            base = ag.conversation(self.system, users[i])
            convs.append(base + [{"role": "assistant", "content": dec_prefix(a.reasoning)}])
            opts.append(dec_opts)
            for c in sc.channel_names:
                convs.append(base + [{"role": "assistant", "content": ag.rating_prefix(a.reasoning, c)}])
                opts.append(ag.RATING_OPTIONS)
            rows.append(i)
        C = len(sc.channel_names)
        dec = np.zeros((len(answers), len(dec_opts)))
        rat = np.zeros((len(answers), C, ag.RATING_MAX + 1))
        t0 = time.perf_counter()
        if convs:
            probs = self.backend.score_options(convs, opts)
            for r, i in enumerate(rows):
                dec[i] = probs[r * (C + 1)]
                rat[i] = np.stack(probs[r * (C + 1) + 1 : (r + 1) * (C + 1)])
            if self.cfg.calibrate_decision:
                cf = self._content_free(dec_prefix, dec_opts, "decision")
                cal = dec[rows] / np.maximum(cf, 1e-12)
                dec[rows] = cal / cal.sum(axis=1, keepdims=True)
        return dec, rat, time.perf_counter() - t0

    # -- one tick -------------------------------------------------------------------------
    def run_tick(self, tick: int, state: RunState, progress=None) -> tuple[dict[str, np.ndarray], TickStats]:
        n, C = self.pop.n, len(self.sc.channel_names)
        users, shown, ev_ids = self.prompts(tick, state)
        A = self.sc.actions.n
        out: dict[str, Any] = {
            "channels": np.full((n, C), np.nan, np.float32), "channel_dist": np.zeros((n, C, ag.RATING_MAX + 1), np.float16),
            "decision": np.full(n, -1, np.int16), "decision_value": np.full(n, np.nan, np.float32),
            "decision_dist": np.zeros((n, A), np.float32), "stance": np.full(n, np.nan, np.float32),
            "salience": np.full(n, np.nan, np.float32), "valid": np.zeros(n, bool),
            "reasoning": np.array([""] * n, dtype=object), "expression": np.array([""] * n, dtype=object),
            "salient_memory": np.array([""] * n, dtype=object), "error": np.array([""] * n, dtype=object),
            "attempts": np.zeros(n, np.int8), "tokens_prompt": np.zeros(n, np.int32),
            "tokens_completion": np.zeros(n, np.int32), "latency_s": np.zeros(n, np.float32),
            "shown_neighbors": shown, "exposed_events": ev_ids,
        }
        stats = TickStats()
        size = self.cfg.chunk
        if self.numeric:  # bin of every number the decision can take (the scored options min..max)
            number_bins = self.sc.actions.bin_of(np.arange(int(self.sc.actions.min), int(self.sc.actions.max) + 1))
        for ci, lo in enumerate(range(0, n, size)):
            idx = np.arange(lo, min(n, lo + size))
            answers, acc = self.answer(tick, ci, [users[i] for i in idx])
            for k in ("attempts", "tokens_prompt", "tokens_completion", "latency_s", "error"):
                out[k][idx] = acc[k]
            if self.mode == "texts":
                dec, rat, dt = self.distributions([users[i] for i in idx], answers)
                out["latency_s"][idx] += dt / len(idx)
            rng = np.random.default_rng([self.llm_seed, tick, ci, 99])
            for r, (i, a) in enumerate(zip(idx, answers)):
                if a is None:
                    continue
                out["valid"][i] = True
                out["reasoning"][i], out["expression"][i], out["salient_memory"][i] = a.reasoning, a.message, a.memory
                out["stance"][i], out["salience"][i] = a.stance, a.salience
                if self.mode == "full":
                    out["channels"][i] = a.ratings
                    out["decision"][i] = a.decision
                    out["decision_dist"][i, a.decision] = 1.0  # one sample: the empirical distribution
                    if self.numeric:
                        out["decision_value"][i] = a.decision_value
                    continue
                p = rat[r]  # (C, 11)
                out["channel_dist"][i] = p
                out["channels"][i] = (p * np.arange(ag.RATING_MAX + 1)).sum(axis=1) / ag.RATING_MAX
                q = dec[r]
                pick = int(rng.choice(len(q), p=q)) if self.cfg.decision == "sample" else int(np.argmax(q))
                if self.numeric:
                    value = float(self.sc.actions.min) + pick  # options are the integers min..max
                    out["decision_dist"][i] = np.bincount(number_bins, weights=q, minlength=A)
                    out["decision_value"][i] = value
                    out["decision"][i] = int(self.sc.actions.bin_of(np.array([value]))[0])
                else:
                    out["decision_dist"][i] = q
                    out["decision"][i] = pick
            stats.agents += len(idx)
            stats.invalid += int((~out["valid"][idx]).sum())
            stats.repaired += int(((out["attempts"][idx] > 1) & out["valid"][idx]).sum())
            stats.tokens += int(out["tokens_prompt"][idx].sum() + out["tokens_completion"][idx].sum())
            if progress is not None:
                progress(len(idx), stats)
        valid = out["valid"]
        for key, emb_key in (("reasoning", "reasoning_emb"), ("expression", "expression_emb")):
            emb = np.zeros((n, EMB_DIM), np.float16)
            if valid.any() and self.encoder is not None:
                emb[valid] = self.encoder.encode(list(out[key][valid]))
            out[emb_key] = emb
        # Memory and broadcast for the next tick.
        labels = self.sc.actions.labels
        for i in range(n):
            if not valid[i]:
                state.memories[i].record_tick(self.sc, tick, None)
                state.last_message[i] = ""
                continue
            d = f"{out['decision_value'][i]:g}" if self.numeric else labels[out["decision"][i]]
            state.memories[i].record_tick(self.sc, tick, d, float(out["stance"][i]), out["salient_memory"][i],
                                          float(out["salience"][i]), self.cfg.memory_capacity)
            state.last_message[i] = out["expression"][i]
        self.schedule.after_tick(tick, PopulationState(
            decision=out["decision"].astype(np.int64), decision_value=out["decision_value"] if self.numeric else None,
            channels=out["channels"], valid=valid))
        state.schedule = self.schedule.state_dict()
        return {k: v for k, v in out.items() if k in self.fields()}, stats


# --------------------------------------------------------------------------- the command
def fingerprint(world_file: Path, scenario_yaml: str, teacher_yaml: str, seed: int | str) -> str:
    h = hashlib.sha256()
    with open(world_file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    for part in (scenario_yaml, teacher_yaml, str(seed)):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


def _save_tick(journal: Path, t: int, data: dict[str, np.ndarray], state: RunState, stats: TickStats) -> None:
    arrays = {k: (np.asarray(v, dtype=str) if v.dtype == object else v) for k, v in data.items()}
    _atomic_write(journal / f"tick_{t:04d}.npz", lambda fh: np.savez(fh, **arrays))
    blob = json.dumps({"state": state.to_json(), "stats": stats.__dict__}).encode()
    _atomic_write(journal / f"state_{t:04d}.json", lambda fh: fh.write(blob))


def _load_tick(journal: Path, t: int) -> tuple[dict[str, np.ndarray], RunState, TickStats] | None:
    npz, st = journal / f"tick_{t:04d}.npz", journal / f"state_{t:04d}.json"
    if not (npz.is_file() and st.is_file()):
        return None
    with np.load(npz) as z:
        data = {k: (z[k].astype(object) if z[k].dtype.kind == "U" else z[k]) for k in z.files}
    d = json.loads(st.read_text())
    return data, RunState.from_json(d["state"]), TickStats(**d["stats"])


def generate(world: str | Path, scenario: str | Path, teacher: str | Path, seed: int, out: str | Path,
             backend: LLMBackend | None = None, quiet: bool = False, restart: bool = False,
             llm_seed: int | None = None) -> dict[str, Any]:
    """Run the teacher and write `out`; resumes from `<out>.journal/` when present.

    `backend` overrides the one built from the teacher config (tests wrap a real backend).
    Returns the run summary.
    """
    from lsm.data_gen.embed import SentenceEncoder
    from lsm.data_gen.world import load_world

    world, out = Path(world), Path(out)
    cfg = load_config(TeacherConfig, teacher, kind="teacher config")
    sc = load_scenario(scenario)
    scenario_yaml = Path(scenario).read_text()
    w = load_world(world)
    check_against_world(sc, w.population, w.graph, source=scenario)
    teacher_yaml = to_yaml(cfg)
    journal = out.with_name(out.name + ".journal")
    llm_seed = seed if llm_seed is None else llm_seed
    fp = fingerprint(world, scenario_yaml, teacher_yaml, seed if llm_seed == seed else f"{seed}/{llm_seed}")
    if journal.exists():
        meta = journal / "run.json"
        prev = json.loads(meta.read_text()).get("fingerprint") if meta.is_file() else None
        if prev != fp and not restart:
            raise JournalMismatch(
                f"{journal} holds a run with different inputs (world, scenario, teacher config or seed); "
                "re-run with the original arguments to resume it, or pass --restart to discard it")
        if restart:
            shutil.rmtree(journal)
    journal.mkdir(parents=True, exist_ok=True)
    meta_blob = json.dumps({"fingerprint": fp, "world": str(world), "scenario": str(scenario), "seed": seed, "llm_seed": llm_seed}).encode()
    _atomic_write(journal / "run.json", lambda fh: fh.write(meta_blob))

    backend = backend or make_backend(cfg)
    encoder = SentenceEncoder()
    t_run = time.perf_counter()
    tch = Teacher(cfg, backend, sc, w.population, w.graph, seed, encoder, llm_seed=llm_seed)
    state = tch.initial_state()
    ticks: list[dict[str, np.ndarray]] = []
    stats: list[TickStats] = []
    for t in range(sc.ticks):  # resume: reload finished ticks
        loaded = _load_tick(journal, t)
        if loaded is None:
            break
        data, state, st = loaded
        ticks.append(data)
        stats.append(st)
    if ticks:
        tch.schedule.load_state_dict(state.schedule)
    resumed = len(ticks)

    from tqdm import tqdm

    bar = tqdm(total=sc.ticks * w.n, initial=resumed * w.n, unit="agent", disable=quiet, file=sys.stderr,
               desc=f"{sc.name} seed {seed}/{llm_seed}", dynamic_ncols=True)
    t_gen, done_agents, done_tokens, invalid_total = time.perf_counter(), 0, 0, sum(s.invalid for s in stats)

    def progress(k: int, st: TickStats) -> None:
        nonlocal done_agents, done_tokens
        done_agents += k
        el = max(time.perf_counter() - t_gen, 1e-9)
        bar.update(k)
        bar.set_postfix_str(f"tick {len(ticks) + 1}/{sc.ticks}, {done_agents / el:.2f} agents/s, "
                            f"{(done_tokens + st.tokens) / el:.0f} tok/s, invalid {invalid_total + st.invalid}, repaired {st.repaired}")

    for t in range(resumed, sc.ticks):
        data, st = tch.run_tick(t, state, progress)
        done_tokens += st.tokens
        invalid_total += st.invalid
        _save_tick(journal, t, data, state, st)
        ticks.append(data)
        stats.append(st)
    bar.close()
    wall = time.perf_counter() - t_run

    summary = _summary(sc, ticks, stats, wall, backend, resumed)
    _assemble(out, world, sc, scenario_yaml, cfg, tch, ticks, {"teacher": seed, "llm": llm_seed}, summary, encoder, backend)
    shutil.rmtree(journal, ignore_errors=True)
    return summary


def _summary(sc: Scenario, ticks, stats: list[TickStats], wall: float, backend: LLMBackend, resumed: int) -> dict[str, Any]:
    labels = sc.actions.labels
    shares = []
    for data in ticks:
        v = data["valid"]
        d = data["decision"][v]
        shares.append({labels[a]: round(float((d == a).mean()), 4) if len(d) else None for a in range(len(labels))})
    agents = sum(s.agents for s in stats)
    invalid = sum(s.invalid for s in stats)
    tokens = sum(s.tokens for s in stats)
    llm_s = float(sum(np.sum(t["latency_s"]) for t in ticks))
    out = {
        "backend": getattr(backend, "model_name", backend.name), "ticks": len(ticks), "agent_ticks": agents,
        "invalid": invalid, "invalid_rate": invalid / max(agents, 1), "repaired": sum(s.repaired for s in stats),
        "tokens": tokens, "llm_seconds": round(llm_s, 1), "wall_seconds_this_process": round(wall, 1),
        "agent_ticks_per_llm_second": round(agents / max(llm_s, 1e-9), 3), "tokens_per_llm_second": round(tokens / max(llm_s, 1e-9), 1),
        "resumed_from_tick": resumed, "decision_shares": shares,
        "invalid_per_tick": [int((~t["valid"]).sum()) for t in ticks],
        "repaired_per_tick": [int(((t["attempts"] > 1) & t["valid"]).sum()) for t in ticks],
    }
    if sc.actions.type == "numeric":
        out["mean_decision_value"] = [round(float(np.nanmean(t["decision_value"][t["valid"]])), 2) if t["valid"].any() else None for t in ticks]
    return out


def _assemble(out: Path, world: Path, sc: Scenario, scenario_yaml: str, cfg: TeacherConfig, tch: Teacher,
              ticks, seeds: dict[str, int], summary: dict[str, Any], encoder, backend) -> None:
    tmp = out.with_name(out.name + ".tmp")
    writer = TraceWriter(tmp, "teacher_trace", world, scenario_yaml, tch.dims(), tch.fields(),
                         configs={"teacher": to_yaml(cfg)}, seeds=seeds, ticks_planned=sc.ticks)
    try:
        writer.f.attrs["teacher_backend"] = getattr(backend, "model_name", backend.name)
        writer.f.attrs["answer_mode"] = tch.mode
        writer.add_events(tch.schedule.events)
        for data in ticks:
            writer.append_tick(data)
        # Static texts embedded once: personas and event texts.
        writer.f["population"].create_dataset("persona_emb", data=encoder.encode(tch.pop.persona), compression="gzip")
        texts = [e.event.text for e in sorted(tch.schedule.events, key=lambda e: e.uid)]
        writer.f["events"].create_dataset("text_emb", data=encoder.encode(texts) if texts else np.zeros((0, EMB_DIM), np.float16))
        writer.close(complete=True, summary=summary)
    except BaseException:
        writer.close(complete=False)
        raise
    os.replace(tmp, out)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"backend: {summary['backend']}",
             f"agent-ticks: {summary['agent_ticks']:,}  invalid: {summary['invalid']} ({summary['invalid_rate']:.1%})  "
             f"repaired: {summary['repaired']}",
             f"tokens: {summary['tokens']:,}  LLM time: {summary['llm_seconds']} s  "
             f"({summary['agent_ticks_per_llm_second']} agent-ticks/s, {summary['tokens_per_llm_second']} tokens/s)  "
             f"wall (this process): {summary['wall_seconds_this_process']} s"
             + (f"  resumed at tick {summary['resumed_from_tick']}" if summary["resumed_from_tick"] else ""),
             "decision shares per tick:"]
    for t, s in enumerate(summary["decision_shares"]):
        extra = f"  mean {summary['mean_decision_value'][t]}" if "mean_decision_value" in summary else ""
        lines.append(f"  tick {t}: " + "  ".join(f"{k} {v:.2f}" for k, v in s.items() if v is not None) + extra)
    return "\n".join(lines)
