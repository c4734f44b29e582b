"""First-person narratives and interview answers of simulated agents, phrased from their records.

The record is the agent's readout (`lsm.probes.readout`: a student rollout's replay, or a teacher
trace as written). A question is turned into a *scaffold* (`narrate.scaffold`): the facts of the
record that answer it, most relevant first. The LLM (any teacher backend; the embedded SmolLM2 by
default) phrases those facts in the first person; it does not choose them. The answer opens with
the lead fact's first words (`opening`: "In tick 2, I decided to wait") and the LLM goes on. It
is checked (`narrate.checks`: grounded, relevant, attributed, complete); `candidates` answers are
sampled at once, the first that passes is kept, and a round none passes is repeated with a new
seed, up to `attempts` rounds; an answer that still fails is replaced by the scaffold as plain
first-person text, flagged `fallback` (always true of the record, never empty). A narrative is
told tick by tick the same way: each tick's decision and first reason, phrased and checked on
its own, each falling back on its own.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from lsm.narrate.checks import Verdict, check
from lsm.narrate.scaffold import Scaffold, scaffold
from lsm.society import seeds

SYSTEM = ("You are {name}, a person in a social simulation. Answer as {name}, in the first person, in two or three "
          "short sentences. Use only the facts you are given, the first ones first, with their tick numbers and "
          "numbers. Do not add any other reason, person, event or number.")
STORY_PROMPT = "Tell in one or two sentences what you decided in tick {tick} and why."
CANDIDATES = 2
"""Answers sampled at once per round: on a CPU a batch of two costs far less than two calls, and
a small model's second sample often passes where its first did not."""
MAX_FACTS = 5
"""The scaffold's facts the LLM is given (the first; the rest are seldom used and cost time)."""
LABEL_RX = re.compile(r"^\s*(?:answer|response|[A-Z][a-z]+ [A-Z]\.)\s*:\s*", re.I)
CUT_RX = re.compile(r"^(.*[.!?][\"')\]]*)", re.S)


@dataclass
class Narration:
    agent: int
    name: str
    text: str
    checks: dict[str, bool]
    """grounded, relevant, attributed, complete (`narrate.checks.CHECKS`) of `text`."""
    fallback: bool
    """The LLM's answers failed every attempt (for a narrative: for some tick), so the scaffold
    was told as plain text in their place."""
    problems: list[str] = field(default_factory=list)
    """Why the LLM's last answer failed (empty when it passed)."""
    attempts: int = 1
    seconds: float = 0.0
    question: str | None = None
    kind: str = "story"
    """The question's kind (`scaffold.QUESTION_KINDS`), or story for a narrative."""
    llm_text: str = ""
    """The LLM's last answer where it was replaced (`fallback`)."""

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def markdown(self) -> str:
        head = f"### {self.name} (agent {self.agent})" + (f" — asked: *{self.question}*" if self.question else "")
        marks = ", ".join(f"{c} {'✓' if ok else '✗'}" for c, ok in self.checks.items())
        if self.fallback:
            status = (f"*Checks: {marks}. The LLM's answer failed after {self.attempts} attempts "
                      f"({'; '.join(self.problems[:3])}); the record's facts are given as plain text instead.*")
        else:
            status = f"*Checks: {marks} (attempt {self.attempts}).*"
        return f"{head}\n\n{self.text.strip()}\n\n{status}\n"


def opening(sc: Scaffold) -> str:
    """The words the answer starts with: the lead fact up to its first figure, bracket or colon
    after the tick ("In tick 2, I decided to wait", "In tick 2, my perceived risk was", "My record
    does not say"), else the whole fact, so that the answer opens on what was asked and the LLM
    goes on from there."""
    if not sc.facts:
        return ""
    text = sc.facts[0].text
    after_tick = re.match(r"In tick \d+, ", text)
    m = re.compile(r"\s*(?:[(:\"]|\d)").search(text, after_tick.end() if after_tick else 0)
    return (text[: m.start()] if m else text).rstrip(",. ")


def _messages(record, sc: Scaffold, prompt: str) -> list[dict[str, str]]:
    bullets = "\n".join(f"- {f.text}" for f in sc.facts[:MAX_FACTS])
    conv = [{"role": "system", "content": SYSTEM.format(name=record.name)},
            {"role": "user", "content": f"Facts from your record:\n{bullets}\n\n{prompt}"}]
    head = opening(sc)
    return conv + [{"role": "assistant", "content": head}] if head else conv


def tidy(text: str) -> str:
    """An LLM answer as shown: one paragraph, without a leading label ("Answer:") or surrounding
    quotes, cut after its last ended sentence (a sentence the token limit cut off is dropped)."""
    text = LABEL_RX.sub("", re.sub(r"\s+", " ", text).strip()).strip().strip('"').strip()
    m = CUT_RX.match(text)
    return m.group(1).strip() if m else text


def _phrase(record, parts: list[tuple[Scaffold, str]], backend, attempts: int, candidates: int, seed: int,
            temperature: float, max_tokens: int, stream: seeds.Stream) -> list["_Told"]:
    """Each (scaffold, prompt) phrased in batched calls of `candidates` answers per part (the first
    that passes is kept), rounds repeated for the parts none passed, up to `attempts`; then told plain."""
    done: list[_Told | None] = [None] * len(parts)
    last: list[tuple[str, Verdict]] = [("", Verdict(False, False, False, False))] * len(parts)
    for attempt in range(1, attempts + 1):
        todo = [k for k, d in enumerate(done) if d is None]
        if not todo:
            break
        convs = [_messages(record, parts[k][0], parts[k][1]) for k in todo for _ in range(candidates)]
        gens = backend.generate(convs, temperature=temperature, seed=seeds.int_seed(seed, stream, attempt, bits=31),
                                max_tokens=max_tokens)
        for j, (conv, g) in enumerate(zip(convs, gens)):
            k = todo[j // candidates]
            if done[k] is not None:
                continue  # an earlier candidate of this round passed
            head = conv[-1]["content"] if conv[-1]["role"] == "assistant" else ""
            rest = g.text.lstrip()
            text = tidy(head + ("" if rest[:1] in tuple(",.;:!?)") else " ") + rest if head else rest)
            verdict = check(text, record, parts[k][0])
            last[k] = (text, verdict)
            if verdict.passed:
                done[k] = _Told(text, False, attempt)
    return [d if d is not None else _Told(parts[k][0].plain(), True, attempts, *last[k]) for k, d in enumerate(done)]


@dataclass
class _Told:
    text: str
    fallback: bool
    attempts: int
    llm_text: str = ""
    """The LLM's last answer, where it was replaced."""
    llm_verdict: Verdict | None = None


def narrate(record, backend, question: str | None = None, attempts: int = 3, seed: int = 0,
            temperature: float = 0.5, max_tokens: int = 48, candidates: int = CANDIDATES) -> Narration:
    """A checked first-person narrative (or, with `question`, an interview answer) of `record`:
    up to `attempts` rounds of `candidates` answers sampled at once."""
    t0 = time.perf_counter()
    sc = scaffold(record, question)
    if question is not None:
        parts = [(sc, f"Question: {question}")]
        stream = seeds.Stream.INTERVIEW
    else:  # one part per tick: its decision and first reason
        by_tick: dict[int | None, list] = {}
        for f in sc.facts:
            by_tick.setdefault(f.tick, []).append(f)
        parts = [(Scaffold(None, sc.kind, t, fs, lead=len(fs), terms=sc.terms), STORY_PROMPT.format(tick=t))
                 for t, fs in by_tick.items()]
        stream = seeds.Stream.NARRATION
    told = _phrase(record, parts, backend, attempts, candidates, seed, temperature, max_tokens, stream)
    text = " ".join(t.text for t in told)
    verdict = check(text, record, sc)
    replaced = [t for t in told if t.fallback]
    problems = [p for t in replaced if t.llm_verdict for p in t.llm_verdict.problems] + verdict.problems
    return Narration(record.agent, record.name, text, verdict.as_dict(), bool(replaced), problems,
                     max(t.attempts for t in told), time.perf_counter() - t0, question, sc.kind,
                     " ".join(t.llm_text for t in replaced))
