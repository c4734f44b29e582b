"""LLM-written backstories from a population's attributes (docs/design.md §3, as large LLM simulators do).

Each agent's one-line persona (built from its attributes) is expanded by the LLM into a short
first-person backstory. Diversity comes from three sources, all seeded: one of several
meta-prompts per agent, a per-agent sampling temperature drawn from `temperatures`, and the
sampling seed. The backstory is appended to the persona, which is what the teacher's prompts
show; a backstory that comes back empty or without words is retried once, then left out
(the persona alone remains, and the agent is listed in `failed`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from lsm.society import seeds

META_PROMPTS = (
    "Write two sentences, in the first person, about the life of this person: {persona} Mention their work and family.",
    "In the first person and in at most two sentences, tell what a typical week looks like for this person: {persona}",
    "Write a short first-person backstory (two sentences) for this person, including one thing they worry about: {persona}",
    "In two first-person sentences, describe what this person values most and why: {persona}",
)


@dataclass
class Backstories:
    texts: list[str]
    prompt_index: np.ndarray  # [N] which meta-prompt
    temperature: np.ndarray  # [N]
    failed: list[int]


def _clean(text: str) -> str:
    text = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(sentences[:3]).strip()


def write_backstories(personas: list[str], backend, seed: int = 0, temperatures: tuple[float, float] = (0.6, 1.0),
                      levels: int = 4, max_tokens: int = 80, desc: str | None = None) -> Backstories:
    """One backstory per persona (module docstring); with `desc`, a progress bar (agents/s) on stderr."""
    import sys

    from tqdm import tqdm

    rng = seeds.rng(seed, seeds.Stream.BACKSTORY)
    n = len(personas)
    prompt_index = rng.integers(0, len(META_PROMPTS), n)
    grid = np.linspace(temperatures[0], temperatures[1], levels)
    temperature = grid[rng.integers(0, levels, n)]  # a few levels so each level is one batched call
    texts = [""] * n
    bar = tqdm(total=n, desc=desc, unit="agent", disable=desc is None, file=sys.stderr, dynamic_ncols=True)
    for attempt in range(2):
        todo = [i for i in range(n) if not re.search(r"[A-Za-z]{3,}", texts[i])]
        for level, temp in enumerate(grid):
            idx = [i for i in todo if temperature[i] == temp]
            if not idx:
                continue
            convs = [[{"role": "user", "content": META_PROMPTS[prompt_index[i]].format(persona=personas[i])}] for i in idx]
            call_seed = seeds.int_seed(seed, seeds.Stream.BACKSTORY_LLM, level, attempt, bits=31)
            gens = backend.generate(convs, schema=None, temperature=float(temp), seed=call_seed,
                                    max_tokens=max_tokens)
            for i, g in zip(idx, gens):
                texts[i] = _clean(g.text)
            bar.update(len(idx) if attempt == 0 else 0)
            bar.set_postfix_str(f"temperature {temp:.2f}" + (", retrying empty ones" if attempt else ""))
    bar.close()
    failed = [i for i in range(n) if not re.search(r"[A-Za-z]{3,}", texts[i])]
    for i in failed:
        texts[i] = ""
    return Backstories(texts, prompt_index, temperature, failed)
