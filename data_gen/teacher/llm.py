"""The LLM teacher as a policy of the society loop: LLM agents answer for the population.

Per tick (docs/design.md §4), from the loop's `Perception`: one prompt per agent (persona, memory, the
events it sees, the messages of the neighbours it is shown); answers generated in batches of
`chunk` agents, validated, repaired (re-ask with the error, then an extraction call) and, after
`max_attempts`, recorded invalid with the reason; decision and channel distributions read by
`score_options`; texts embedded; memories updated. Every random draw depends only on (seed,
tick, chunk, attempt), so a resumed run equals an uninterrupted one. The loop
(`lsm.society.loop.runner`) owns exposure, shown neighbours, triggers, the journal and the file.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsm.config import UsageError, to_yaml
from lsm.data_gen.teacher import prompts as ag
from lsm.data_gen.teacher.backends.base import LLMBackend
from lsm.data_gen.teacher.config import TeacherConfig
from lsm.society import seeds
from lsm.society.contrasts import CONTRASTS, keeps_events, kept_messages
from lsm.society.embed import TEXT_DIM, write_event_embeddings
from lsm.society.loop.neighbors import EdgeTyper
from lsm.society.loop.runner import Perception, Progress, TickOutput, decision_shares
from lsm.society.scenario import Scenario
from lsm.society.store import TraceWriter


# --------------------------------------------------------------------------- run state
@dataclass
class RunState:
    """What the LLM agents carry from tick to tick: memories and the message each broadcast."""

    memories: list[ag.Memory]
    last_message: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"memories": [m.to_json() for m in self.memories], "last_message": self.last_message}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunState":
        return cls([ag.Memory.from_json(m) for m in d["memories"]], list(d["last_message"]))


PROFILE_PHASES = ("prompts", "generation", "repair attempts", "option scoring", "content-free calibration",
                  "paired contrasts", "sentence embedding", "memory and messages")
"""The teacher's phases as `lsm gen --profile` lists them (the loop adds "journal")."""


@dataclass
class TickStats:
    agents: int = 0
    invalid: int = 0
    repaired: int = 0
    tokens: int = 0
    llm_s: float = 0.0
    approximate_scores: int = 0
    """Option scores of this tick the backend could only approximate (`LLMBackend.approximate_scores`)."""
    servers: dict[str, int] = field(default_factory=dict)
    """Requests of this tick each server answered (the `openai` backend over several servers)."""
    phase_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROFILE_PHASES, 0.0))
    """Seconds of this tick per phase (every one of `PROFILE_PHASES`, 0 where it did not run, then
    the backend's own, prefixed "llm ")."""

    def add(self, phase: str, seconds: float) -> None:
        self.phase_s[phase] = self.phase_s.get(phase, 0.0) + seconds


@dataclass
class AgentTickPrompt:
    """What one agent's prompt at a tick is made of besides its persona and memory."""

    tick: int
    agent: int
    events: list[str]
    """The event lines it sees."""
    messages: list[tuple[str, str, str]]
    """(neighbour name, relation words, message) of its shown neighbours, in the shown order."""
    ties: np.ndarray
    """(k,) the tie-type code of each shown neighbour (`EdgeTyper`: no tie counts as a weak tie)."""


# --------------------------------------------------------------------------- the teacher
class Teacher:
    """LLM agents playing `scenario` with `backend`: a policy of the society loop."""

    kind = "teacher_trace"

    def __init__(self, cfg: TeacherConfig, backend: LLMBackend, scenario: Scenario, pop, graph, seed: int, encoder=None,
                 llm_seed: int | None = None):
        if scenario.offsets:
            raise UsageError(f"scenario {scenario.name} has `offsets` (fitted leans of groups towards actions, from lsm "
                             "calibrate), which only the student and the planted society apply: an LLM teacher answers from "
                             "its prompt. Remove the offsets block to run the teacher on this scenario.")
        self.cfg, self.backend, self.sc, self.pop, self.graph, self.seed = cfg, backend, scenario, pop, graph, seed
        self.llm_seed = seed if llm_seed is None else llm_seed
        """`seed` drives the scenario's randomness (exposure, which neighbours are shown, in the
        loop); `llm_seed` the LLM's sampling and the decision drawn from its distribution."""
        mode = cfg.answer
        if mode == "auto":
            mode = "texts" if backend.supports_logprobs else "full"
        if mode == "texts" and not backend.supports_logprobs:
            raise ValueError(f"answer: texts needs a backend with log-probabilities; {backend.name} has none (use answer: full)")
        self.mode = mode
        self.schema = ag.answer_schema(scenario, mode, cfg.limits)
        self.system = ag.system_prompt(scenario, mode)
        self.ties = EdgeTyper(graph)  # names the tie to each shown neighbour
        self.encoder = encoder
        self.numeric = scenario.actions.type == "numeric"
        self._cf_cache: dict[str, np.ndarray] = {}
        self.state = RunState([ag.Memory() for _ in range(pop.n)], [""] * pop.n)
        self._seen: list[AgentTickPrompt] = []  # this tick's prompt parts, per agent (`prompts`)
        texts = self.mode == "texts"
        self.orders = cfg.orders if texts else 1
        self.contrast_fraction = cfg.contrast_fraction if texts else 0.0

    # -- the policy's contract ------------------------------------------------------------
    def dims(self) -> dict[str, int]:
        return {"X": len(CONTRASTS)} if self.contrast_fraction > 0 else {}

    def fields(self) -> list[str]:
        f = ["channels", "decision", "decision_dist", "stance", "expression_emb", "reasoning_emb", "salience",
             "valid", "error", "reasoning", "expression", "salient_memory",
             "attempts", "tokens_prompt", "tokens_completion", "latency_s"]
        if self.mode == "texts":
            f.append("channel_dist")
        if self.numeric:
            f.append("decision_value")
        if self.orders > 1:
            f.append("decision_dist_order_sd")
        if self.contrast_fraction > 0:
            f.append("contrast_dist")
        return f

    def configs(self) -> dict[str, Any]:
        return {"teacher": to_yaml(self.cfg)}

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.state.to_json(), {}

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.state = RunState.from_json(state)

    def finalize(self, writer: TraceWriter) -> None:
        """Backend and answer mode; the event texts embedded once."""
        writer.f.attrs["teacher_backend"] = getattr(self.backend, "model_name", self.backend.name)
        writer.f.attrs["answer_mode"] = self.mode
        if self.contrast_fraction > 0:
            writer.f.attrs["contrasts"] = json.dumps(list(CONTRASTS))
        write_event_embeddings(writer, self.encoder)

    # -- prompts --------------------------------------------------------------------------
    def prompts(self, p: Perception) -> list[str]:
        """The user prompt of every agent: persona, memory, the events it sees, the messages of
        the neighbours it is shown (their parts are kept for `order_prompts` and `contrast_prompts`)."""
        self._seen = []
        for i in range(self.pop.n):
            texts = [ag.event_line(e.event.source, e.text) for e in p.events_of(i)]
            js = np.array([j for j in p.shown[i] if j >= 0], dtype=np.int64)
            msgs = [(self.pop.names[j], ag.relation_words(self.ties.relation(i, int(j))), self.state.last_message[j]) for j in js]
            self._seen.append(AgentTickPrompt(p.tick, i, texts, msgs, self.ties(js, np.full(len(js), i))))
        return [self.user(s) for s in self._seen]

    def user(self, seen: "AgentTickPrompt", events: list[str] | None = None,
             messages: list[tuple[str, str, str]] | None = None) -> str:
        """Agent `seen.agent`'s user prompt, with other events or messages where given."""
        i = seen.agent
        return ag.user_prompt(self.sc, seen.tick, self.pop.names[i], self.pop.persona[i], self.state.memories[i],
                              self.cfg.memories, seen.events if events is None else events,
                              seen.messages if messages is None else messages)

    def order_prompts(self, i: int) -> list[str]:
        """Agent i's user prompt under the other orders of its shown messages (`message_orders`:
        up to `orders` - 1 of them, none with fewer than two messages)."""
        seen = self._seen[i]
        rng = seeds.rng(self.llm_seed, seeds.Stream.MESSAGE_ORDERS, seen.tick, i)
        orders = ag.message_orders(len(seen.messages), self.orders, rng)[1:]
        return [self.user(seen, messages=[seen.messages[k] for k in o]) for o in orders]

    def contrast_prompts(self, i: int) -> list[str | None]:
        """Agent i's user prompt under each of `CONTRASTS` (None where the contrast removes nothing
        the agent saw: its prompt is the shown one)."""
        seen = self._seen[i]
        out: list[str | None] = []
        for name in CONTRASTS:
            keep = kept_messages(name, seen.ties)
            events = seen.events if keeps_events(name) else []
            if name != "shown" and keep.all() and len(events) == len(seen.events):
                out.append(None)
                continue
            out.append(self.user(seen, events=events, messages=[m for m, k in zip(seen.messages, keep) if k]))
        return out

    # -- answers --------------------------------------------------------------------------
    def answer(self, tick: int, chunk_id: int, users: list[str],
               stats: TickStats | None = None) -> tuple[list[ag.Answer | None], dict[str, np.ndarray]]:
        """Generate, validate and repair the answers of one chunk of agents (timed into `stats`)."""
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
            t0 = time.perf_counter()
            gens = self.backend.generate(batch, schema=self.schema, temperature=self.cfg.temperature,
                                         seed=seeds.int_seed(self.llm_seed, seeds.Stream.LLM_CALL, tick, chunk_id, attempt),
                                         max_tokens=self.cfg.max_tokens)
            if stats is not None:
                stats.add("generation" if attempt == 0 else "repair attempts", time.perf_counter() - t0)
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

    def _calibrated(self, probs: np.ndarray, prefix_fn, options: list[str], key: str) -> np.ndarray:
        """Decision distributions (rows) divided by the content-free one under the same answer
        prefix and renormalised (`calibrate_decision`), else as they are."""
        if not self.cfg.calibrate_decision or not len(probs):
            return probs
        cal = probs / np.maximum(self._content_free(prefix_fn, options, key), 1e-12)
        return cal / cal.sum(axis=-1, keepdims=True)

    def distributions(self, idx: np.ndarray, users: list[str], answers: list[ag.Answer | None],
                      stats: TickStats | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(decision probs [n, n_options], rating probs [n, C, 11], decision spread across orders
        [n, A], seconds) for the valid answers of agents `idx` (rows of invalid agents are
        zero). Each is the average over the orders of the agent's shown messages (`order_prompts`;
        the spread is their standard deviation, 0 with one order), every order continuing the
        agent's own reasoning. One score_options call: the decision and every channel continue
        the same reasoning, so a prefix-sharing backend encodes each prompt once, and the shown
        order's prompt is the one generation has just encoded."""
        sc = self.sc
        dec_opts = ag.decision_options(sc)
        dec_prefix = ag.numeric_decision_prefix if self.numeric else ag.decision_prefix
        convs, opts, rows = [], [], []  # rows: (answer row, number of orders)
        for r, a in enumerate(answers):
            if a is None:
                continue
            variants = [users[r], *(self.order_prompts(int(idx[r])) if self.orders > 1 else [])]
            for u in variants:
                base = ag.conversation(self.system, u)
                convs.append(base + [{"role": "assistant", "content": dec_prefix(a.reasoning)}])
                opts.append(dec_opts)
                for c in sc.channel_names:
                    convs.append(base + [{"role": "assistant", "content": ag.rating_prefix(a.reasoning, c)}])
                    opts.append(ag.RATING_OPTIONS)
            rows.append((r, len(variants)))
        C = len(sc.channel_names)
        dec = np.zeros((len(answers), len(dec_opts)))
        spread = np.zeros((len(answers), self.sc.actions.n))
        rat = np.zeros((len(answers), C, ag.RATING_MAX + 1))
        t0 = time.perf_counter()
        if convs:
            probs = self.backend.score_options(convs, opts)
            t_cal = time.perf_counter()
            if stats is not None:
                stats.add("option scoring", t_cal - t0)
            at = 0
            for r, m in rows:
                block = probs[at : at + m * (C + 1)]  # per order: the decision, then each channel
                at += m * (C + 1)
                d = self._calibrated(np.stack(block[:: C + 1]), dec_prefix, dec_opts, "decision")  # (M, options)
                dec[r], spread[r] = d.mean(0), np.std([ag.options_to_actions(self.sc, x) for x in d], axis=0)
                rat[r] = np.mean([np.stack(block[o * (C + 1) + 1 : (o + 1) * (C + 1)]) for o in range(m)], axis=0)
            if stats is not None:
                stats.add("content-free calibration", time.perf_counter() - t_cal)
        return dec, rat, spread, time.perf_counter() - t0

    def contrasts(self, idx: np.ndarray, answers: list[ag.Answer | None], sampled: np.ndarray,
                  stats: TickStats | None = None) -> np.ndarray:
        """(n, X, A) the decision distribution of the sampled valid agents of `idx` under each of
        `CONTRASTS` (NaN elsewhere), scored without the agent's reasoning (which already reflects
        the shown prompt) and calibrated like the targets; a contrast that removes nothing the
        agent saw copies the `shown` row (the same prompt scores the same)."""
        A, X = self.sc.actions.n, len(CONTRASTS)
        out = np.full((len(idx), X, A), np.nan, np.float32)
        bare = ag.bare_decision_prefix(self.numeric)
        dec_opts = ag.decision_options(self.sc)
        convs, where = [], []  # where: (row, contrast index)
        for r, (i, a) in enumerate(zip(idx, answers)):
            if a is None or not sampled[i]:
                continue
            for x, u in enumerate(self.contrast_prompts(int(i))):
                if u is not None:
                    convs.append(ag.conversation(self.system, u) + [{"role": "assistant", "content": bare}])
                    where.append((r, x))
        if not convs:
            return out
        t0 = time.perf_counter()
        probs = self._calibrated(np.stack(self.backend.score_options(convs, [dec_opts] * len(convs))), lambda _: bare,
                                 dec_opts, "decision_bare")
        for (r, x), q in zip(where, probs):
            out[r, x] = ag.options_to_actions(self.sc, q)
        for r in {r for r, _ in where}:
            missing = np.isnan(out[r, :, 0])
            out[r, missing] = out[r, 0]
        if stats is not None:
            stats.add("paired contrasts", time.perf_counter() - t0)
        return out

    # -- one tick -------------------------------------------------------------------------
    def act(self, p: Perception, progress: Progress | None = None, capture: bool = False) -> TickOutput:
        n, C, tick, state = self.pop.n, len(self.sc.channel_names), p.tick, self.state
        stats = TickStats()
        llm0 = self.backend.timings()
        t0 = time.perf_counter()
        users = self.prompts(p)
        stats.add("prompts", time.perf_counter() - t0)
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
            "decision_dist_order_sd": np.zeros((n, A), np.float32),
            "contrast_dist": np.full((n, len(CONTRASTS), A), np.nan, np.float32),
        }
        sampled = seeds.rng(self.llm_seed, seeds.Stream.CONTRAST_SAMPLE, tick).random(n) < self.contrast_fraction  # (n,)
        t_tick = time.perf_counter()
        approx0 = self.backend.approximate_scores
        answered0 = answered(self.backend)
        size = self.cfg.chunk
        for ci, lo in enumerate(range(0, n, size)):
            idx = np.arange(lo, min(n, lo + size))
            answers, acc = self.answer(tick, ci, [users[i] for i in idx], stats)
            for k in ("attempts", "tokens_prompt", "tokens_completion", "latency_s", "error"):
                out[k][idx] = acc[k]
            if self.mode == "texts":
                dec, rat, spread, dt = self.distributions(idx, [users[i] for i in idx], answers, stats)
                out["decision_dist_order_sd"][idx] = spread
                t_c = time.perf_counter()
                if self.contrast_fraction > 0:
                    out["contrast_dist"][idx] = self.contrasts(idx, answers, sampled, stats)
                out["latency_s"][idx] += (dt + time.perf_counter() - t_c) / len(idx)
            rng = seeds.rng(self.llm_seed, seeds.Stream.TEACHER_DECISION, tick, ci)
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
                    out["decision_dist"][i] = ag.options_to_actions(self.sc, q)
                    out["decision_value"][i] = value
                    out["decision"][i] = int(self.sc.actions.bin_of(np.array([value]))[0])
                else:
                    out["decision_dist"][i] = q
                    out["decision"][i] = pick
            stats.agents += len(idx)
            stats.invalid += int((~out["valid"][idx]).sum())
            stats.repaired += int(((out["attempts"][idx] > 1) & out["valid"][idx]).sum())
            stats.tokens += int(out["tokens_prompt"][idx].sum() + out["tokens_completion"][idx].sum())
            stats.approximate_scores = self.backend.approximate_scores - approx0
            stats.servers = {k: v - answered0.get(k, 0) for k, v in answered(self.backend).items()}
            if progress is not None:
                el = max(time.perf_counter() - t_tick, 1e-9)
                progress(len(idx), f"{stats.agents / el:.2f} agents/s, {stats.tokens / el:.0f} tok/s, "
                                   f"invalid {stats.invalid}, repaired {stats.repaired}"
                                   + (f", approximate scores {stats.approximate_scores}" if stats.approximate_scores else ""))
        valid = out["valid"]
        t0 = time.perf_counter()
        for key, emb_key in (("reasoning", "reasoning_emb"), ("expression", "expression_emb")):
            emb = np.zeros((n, TEXT_DIM), np.float16)
            if valid.any() and self.encoder is not None:
                emb[valid] = self.encoder.encode(list(out[key][valid]))
            out[emb_key] = emb
        stats.add("sentence embedding", time.perf_counter() - t0)
        t0 = time.perf_counter()
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
        stats.add("memory and messages", time.perf_counter() - t0)
        for k, v in self.backend.timings().items():
            stats.add(f"llm {k}", v - llm0.get(k, 0.0))
        stats.llm_s = float(out["latency_s"].sum())
        spoke = np.array([bool(m) for m in state.last_message])
        return TickOutput({k: v for k, v in out.items() if k in self.fields()}, spoke, dict(vars(stats)))

    def summary(self, stats: list[dict[str, Any]], wall: float, resumed: int) -> dict[str, Any]:
        agents = sum(s["agents"] for s in stats)
        invalid = sum(s["invalid"] for s in stats)
        tokens = sum(s["tokens"] for s in stats)
        llm_s = sum(s["llm_s"] for s in stats)
        out = {
            "backend": getattr(self.backend, "model_name", self.backend.name), "ticks": len(stats), "agent_ticks": agents,
            "invalid": invalid, "invalid_rate": invalid / max(agents, 1), "repaired": sum(s["repaired"] for s in stats),
            "tokens": tokens, "llm_seconds": round(llm_s, 1), "wall_seconds_this_process": round(wall, 1),
            "agent_ticks_per_llm_second": round(agents / max(llm_s, 1e-9), 3),
            "tokens_per_llm_second": round(tokens / max(llm_s, 1e-9), 1),
            "resumed_from_tick": resumed, "decision_shares": decision_shares(stats, self.sc.actions.labels),
            "invalid_per_tick": [s["invalid"] for s in stats], "repaired_per_tick": [s["repaired"] for s in stats],
            "scoring": self.backend.scoring_note if self.mode == "texts" else "none (answer: full)",
            "approximate_scores": sum(s.get("approximate_scores", 0) for s in stats),
            "profile": profile(stats, agents),
        }
        servers: dict[str, int] = {}
        for s in stats:
            for k, v in (s.get("servers") or {}).items():
                servers[k] = servers.get(k, 0) + v
        if servers:
            out["requests_per_server"] = servers
        if self.numeric:
            out["mean_decision_value"] = [s["mean_value"] for s in stats]
        return out


def answered(backend) -> dict[str, int]:
    """Requests each server answered so far (`OpenAIBackend.answered`; none for in-process backends)."""
    return backend.answered() if hasattr(backend, "answered") else {}


def profile(stats: list[dict[str, Any]], agent_ticks: int) -> dict[str, dict[str, float]]:
    """Per phase: total seconds and seconds per agent-tick, over the ticks in `stats` (a resumed
    run's journaled ticks included). The loop's journal writes are "journal"; the backend's own
    phases ("llm prefill", "llm decode", ...) sit inside "generation" / "option scoring"."""
    total: dict[str, float] = {}
    for s in stats:
        for k, v in (s.get("phase_s") or {}).items():
            total[k] = total.get(k, 0.0) + v
        if "journal_s" in s:
            total["journal"] = total.get("journal", 0.0) + s["journal_s"]
    return {k: {"seconds": round(v, 3), "per_agent_tick": round(v / max(agent_ticks, 1), 4)} for k, v in total.items()}
