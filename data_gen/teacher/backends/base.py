"""The backend interface every teacher / narrator LLM implements.

A conversation is a list of chat messages `{"role": "system"|"user"|"assistant", "content": str}`.
When the last message is from the assistant, its content is a *prefix* the model continues
(e.g. "..., so this week I decided to"); `score_options` scores option texts as continuations of
it, which is far more informative for small models than letter choices
(docs/results.md#what-the-embedded-teacher-can-and-cannot-do).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

Message = dict[str, str]
Conversation = list[Message]


@dataclass
class Generation:
    """One sampled answer and its accounting."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    """Wall time of the batch call divided by the batch size."""
    finish_reason: str = "stop"
    server: str = ""
    """The server that answered (the `openai` backend's base URL; empty for in-process backends)."""


class LLMBackend(ABC):
    """Batched text generation and option scoring.

    Implementations: `embedded` (SmolLM2 on CPU, the default), `openai` (any OpenAI-compatible
    server) and `vllm` (offline engine on GPUs); the exact scoring rule they share is `scoring`.
    """

    name: str = "backend"
    supports_logprobs: bool = False
    """`score_options` reads real token log-probabilities."""
    supports_schema: bool = False
    """`generate` can constrain the output to a JSON schema."""
    approximate_scores: int = 0
    """Option scores so far that are not the exact summed token log-probability of `scoring`
    (the `openai` backend's top-logprob walk on a server without prompt log-probabilities);
    the teacher reports them per tick, on its progress bar and in the run summary."""
    scoring_note: str = "exact"
    """How `score_options` scores, in words, for the run summary."""

    def add_time(self, phase: str, seconds: float) -> None:
        """Accumulate `seconds` of work inside the backend under `phase` (`lsm gen --profile`)."""
        timings = self.__dict__.setdefault("_timings", {})
        timings[phase] = timings.get(phase, 0.0) + seconds

    def timings(self) -> dict[str, float]:
        """Seconds spent so far in the backend's own phases (e.g. prefill, constrained decoding);
        backends that cannot see inside their calls report none."""
        return dict(self.__dict__.get("_timings", {}))

    @abstractmethod
    def generate(self, conversations: Sequence[Conversation], schema: dict[str, Any] | None = None,
                 temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        """One answer per conversation (constrained to `schema` where supported)."""

    @abstractmethod
    def score_options(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """For each conversation, a probability distribution over its option texts, read from the
        summed token log-probabilities of each option as a continuation (softmax over options)."""
