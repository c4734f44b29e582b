"""First-person narratives and interviews of simulated agents, grounded in their records.

The record is the agent's readout (`lsm.probes.readout`): identity, per tick the decision and
its probability, channels, the events it saw, the neighbours it attended to most and what they
had decided, and its memory writes. The LLM (any teacher backend; the embedded SmolLM2 by
default) gets the record as text and writes in the first person, citing ticks. The text is
then checked (`grounding.check_grounding`); a text that fails is regenerated with the
problems listed, up to `attempts` times; what still fails is returned flagged, never silently.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from lsm.narrate.grounding import GroundingIssue, check_grounding
from lsm.society import seeds

SYSTEM = ("You are {name}, a person in a social simulation. Speak in the first person as {name}. Use only the facts "
          "in your record below: do not invent events, people or numbers. When you say what you did or saw, name the "
          "tick, as in 'In tick 2, I decided to ...'.")


def record_text(record) -> str:
    """The record as the prompt gives it (channels on a 0-10 scale, probabilities in %)."""
    ident = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.identity.items() if k != "name")
    lines = [f"Who you are: {ident}.", f"Possible decisions: {', '.join(record.actions)}."]
    for t in record.ticks:
        feel = ", ".join(f"{c.replace('_', ' ')} {round(v * 10)}/10" for c, v in t.channels.items())
        lines.append(f"Tick {t.tick}: {_decided(t.decision).replace('I ', 'you ', 1)} ({round(t.decision_probs[t.decision] * 100)}% likely). "
                     f"Your ratings: {feel}.")
        if t.events:
            lines.append(f"  In tick {t.tick} you saw: " + " | ".join(f'"{e}"' for e in t.events))
        heard = [a for a in t.attention if a["tie"] != "self"][:2]
        if heard:
            lines.append(f"  In tick {t.tick} you listened most to: " + "; ".join(
                f"{a['name']} ({a['tie'].replace('_', ' ')}), who had decided to {a['their_decision']}" if a["their_decision"]
                else f"{a['name']} ({a['tie'].replace('_', ' ')})" for a in heard))
    return "\n".join(lines)


@dataclass
class Narration:
    agent: int
    name: str
    text: str
    grounded: bool
    issues: list[GroundingIssue] = field(default_factory=list)
    attempts: int = 1
    seconds: float = 0.0
    question: str | None = None

    def markdown(self) -> str:
        head = f"### {self.name} (agent {self.agent})" + (f" — asked: *{self.question}*" if self.question else "")
        status = (f"*Grounding: passed (attempt {self.attempts}).*" if self.grounded else
                  f"*Grounding: FAILED after {self.attempts} attempts — flagged:* " +
                  "; ".join(f"{i.kind}: {i.detail}" for i in self.issues))
        return f"{head}\n\n{self.text.strip()}\n\n{status}\n"


def _decided(decision: str) -> str:
    """'I decided to wait', or for a numeric bin such as '20-30': 'I picked a number between 20 and 30'."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)", decision)
    return f"I picked a number between {m.group(1)} and {m.group(2)}" if m else f"I decided to {decision}"


def _first_sentence(text: str) -> str:
    m = re.search(r"[.!?\n]", text)
    return (text[: m.start()] if m else text).strip().rstrip(",;:")


def narrate(record, backend, question: str | None = None, attempts: int = 3, seed: int = 0,
            temperature: float = 0.7, max_tokens: int = 40) -> Narration:
    """A grounded first-person narrative (or, with `question`, an interview answer).

    Narratives are *scaffolded*: for each tick the facts are written from the record ("In
    tick 2, I decided to wait") and the LLM continues with the reason ("because ..."), one
    sentence per tick, all ticks in one batched call. A small model cannot keep free-form
    prose faithful (SmolLM2-135M; docs/results.md#narration), but it can explain a given fact; and the
    reasons are checked like everything else: a sentence that names another tick, decision or
    an unknown number is regenerated (new seed), up to `attempts`, then flagged.
    Interview answers are free text (`max_tokens` × 2), checked and regenerated the same way.
    """
    t0 = time.perf_counter()
    base = [{"role": "system", "content": SYSTEM.format(name=record.name)},
            {"role": "user", "content": f"Your record:\n{record_text(record)}\n\n" + (
                f"Answer this question as yourself, in 2-3 sentences, citing ticks: {question}" if question else
                "Tell what happened to you over these ticks and why you decided as you did, citing ticks.")}]
    if question:
        text, issues = "", []
        conv = base
        for attempt in range(1, attempts + 1):
            call_seed = seeds.int_seed(seed, seeds.Stream.INTERVIEW, attempt, bits=31)
            text = backend.generate([conv], temperature=temperature, seed=call_seed, max_tokens=2 * max_tokens)[0].text.strip()
            issues = check_grounding(text, record)
            if not issues:
                return Narration(record.agent, record.name, text, True, [], attempt, time.perf_counter() - t0, question)
            conv = base + [{"role": "assistant", "content": text},
                           {"role": "user", "content": "That does not match your record: " + "; ".join(i.detail for i in issues)
                            + ". Answer again using only your record."}]
        return Narration(record.agent, record.name, text, False, issues, attempts, time.perf_counter() - t0, question)

    prefixes = [f"In tick {t.tick}, {_decided(t.decision)} because" for t in record.ticks]
    sentences: list[str | None] = [None] * len(prefixes)
    used = 0
    for attempt in range(1, attempts + 1):
        todo = [k for k, s in enumerate(sentences) if s is None]
        if not todo:
            break
        used = attempt
        gens = backend.generate([base + [{"role": "assistant", "content": prefixes[k]}] for k in todo], temperature=temperature,
                                seed=seeds.int_seed(seed, seeds.Stream.NARRATION, attempt, bits=31), max_tokens=max_tokens)
        for k, g in zip(todo, gens):
            reason = _first_sentence(g.text)
            candidate = f"{prefixes[k]} {reason}." if reason else f"{prefixes[k].rsplit(' because', 1)[0]}."
            problems = check_grounding(candidate, record)
            if problems and attempt < attempts:
                continue  # regenerate this tick's reason
            sentences[k] = candidate
    text = " ".join(s for s in sentences if s)
    issues = check_grounding(text, record)
    return Narration(record.agent, record.name, text, not issues, issues, max(used, 1), time.perf_counter() - t0, None)
