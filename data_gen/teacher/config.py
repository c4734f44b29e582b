"""Typed teacher configuration (`configs/teacher/*.yaml`) and the backend factory."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from lsm.config import Checked
from lsm.data_gen.teacher.backends.base import LLMBackend
from lsm.data_gen.teacher.backends.embedded import EmbeddedBackend, EmbeddedConfig
from lsm.data_gen.teacher.backends.openai_http import OpenAIBackend
from lsm.data_gen.teacher.backends.vllm_engine import VLLMBackend
from lsm.data_gen.teacher.prompts import TextLimits
from lsm.limits import MAX_COUNT
from lsm.society.loop.neighbors import NeighborRule


@dataclass
class OpenAIConfig(Checked):
    """Any OpenAI-compatible server (`vllm serve`, llama.cpp server, `lsm serve`, a hosted API)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    base_urls: list[str] = field(default_factory=list)
    """Several replicas of one server (`vllm serve` or `lsm serve` on several machines or
    ports), instead of `base_url`: requests are spread over them, `concurrency` in flight on each,
    and a request a server fails (down, 429, 5xx) is sent to another at once."""
    model: str = ""
    """Model name as the server knows it (GET /v1/models lists them)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (unset: no key is sent)."""
    concurrency: int = 8
    """Requests in flight at once, on each server."""
    timeout_s: float = 120.0
    max_retries: int = 4
    """Retries on connection errors, 429 and 5xx, with exponential backoff."""
    backoff_s: float = 0.5
    top_logprobs: int = 20
    """Alternatives per position read when scoring options (servers cap this, often at 20)."""
    json_schema: bool = True
    """Send `response_format: json_schema` (turn off for servers without structured outputs)."""
    continue_final_message: bool = True
    """Where token-id prompts are unavailable, a final assistant message (an answer prefix) is
    sent to be continued (`continue_final_message`, a vLLM / lsm-serve extension)."""
    scoring: Literal["auto", "exact", "walk"] = "auto"
    """Option scoring. `exact`: the server renders and tokenises (`/tokenize`) and returns prompt
    log-probabilities over token ids (`/v1/completions` with `prompt_logprobs`: vLLM, `lsm
    serve`), summed as the embedded backend sums them; refused at start-up if the server cannot.
    `walk`: read the top `top_logprobs` next tokens after the prefix and walk each option's text
    (approximate; every score counted in the run summary). `auto`: exact where the server can."""

    def servers(self) -> list[str]:
        """The base URLs requests go to: `base_urls`, else `base_url`."""
        return list(self.base_urls) or [self.base_url]

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not self.model:
            yield "model", self.model, "the model name the server serves"
        for k, url in enumerate(self.base_urls):
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                yield f"base_urls[{k}]", url, "an http:// or https:// URL such as http://10.0.0.2:8000/v1"
        if len(set(self.base_urls)) < len(self.base_urls):
            yield "base_urls", self.base_urls, "distinct URLs (each server once)"
        if self.base_urls and self.base_url != OpenAIConfig.base_url:
            yield "base_url", self.base_url, "left out when base_urls lists the servers"
        if not 1 <= self.concurrency <= 1024:
            yield "concurrency", self.concurrency, "1 to 1,024 requests in flight"
        if not 0 < self.timeout_s <= 3600:
            yield "timeout_s", self.timeout_s, "a timeout in seconds in (0, 3600]"
        if not 0 <= self.max_retries <= 20:
            yield "max_retries", self.max_retries, "0 to 20 retries"
        if not 0 <= self.backoff_s <= 60:
            yield "backoff_s", self.backoff_s, "a first backoff from 0 to 60 s"
        if not 1 <= self.top_logprobs <= 100:
            yield "top_logprobs", self.top_logprobs, "1 to 100 alternatives"


@dataclass
class VLLMConfig(Checked):
    """vLLM's offline engine on local GPUs (`pip install 'lsm[vllm]'`)."""

    model: str = ""
    """Hugging Face id or local path, e.g. Qwen/Qwen2.5-7B-Instruct."""
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    """Must be 1: vLLM's offline engine cannot run data parallel in one process (see `check`)."""
    max_num_seqs: int = 256
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    """The system prompt is shared by every agent of a tick."""

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not self.model:
            yield "model", self.model, "a model id or path"
        if not 0 < self.gpu_memory_utilization <= 1:
            yield "gpu_memory_utilization", self.gpu_memory_utilization, "a fraction in (0, 1]"
        if self.tensor_parallel_size < 1:
            yield "tensor_parallel_size", self.tensor_parallel_size, "at least 1 GPU"
        if self.data_parallel_size != 1:
            yield ("data_parallel_size", self.data_parallel_size,
                   "1: vLLM's offline engine cannot run data parallel in one process (vLLM 0.32 and later raise, 0.11 "
                   "builds a group in one process that waits for ranks that never join). For N replicas run `vllm serve MODEL --data-parallel-size N` and "
                   "use backend openai with concurrency (configs/teacher/vllm_serve_dp.yaml); within one replica "
                   "use tensor_parallel_size")


@dataclass
class TeacherConfig(Checked):
    """How LLM agents play a scenario (docs/design.md §4)."""

    backend: Literal["embedded", "openai", "vllm"] = "embedded"
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    openai: OpenAIConfig | None = None
    vllm: VLLMConfig | None = None
    answer: Literal["auto", "full", "texts"] = "auto"
    """`texts`: generate texts, stance and salience, read decision and ratings as distributions
    from log-probabilities; `full`: generate everything; `auto`: `texts` when the backend
    exposes log-probabilities."""
    temperature: float = 0.7
    max_tokens: int = 200
    chunk: int = 64
    """Agents per generate/score call (also the progress-bar step)."""
    neighbors: NeighborRule = field(default_factory=NeighborRule)
    """Who hears whom: K messages from last tick at most per prompt, tie-type weights, varied
    counts (`society.loop.neighbors.NeighborRule`, the one definition)."""
    memories: int = 3
    """k: salient episodic memories shown in the prompt."""
    memory_capacity: int = 8
    """Episodes kept per agent (lowest salience forgotten first)."""
    max_attempts: int = 3
    """R: first answer, then a re-ask with the error, then an extraction call."""
    calibrate_decision: bool = True
    """Contextual calibration of the decision distribution (divide by the distribution under a
    content-free prompt, renormalise; docs/results.md#what-the-embedded-teacher-can-and-cannot-do)."""
    decision: Literal["sample", "argmax"] = "sample"
    """How the recorded decision is drawn from its distribution (texts mode)."""
    orders: int = 4
    """M (texts mode): the decision and the ratings are scored under up to M orders of an agent's
    shown messages (the shown one and M - 1 others, every order where there are fewer) and the
    stored distributions are their average, an order-free target; `decision_dist_order_sd` holds
    the spread across orders. The answer's texts are generated once, in the shown order. 1: the
    shown order only (docs/teacher.md#order-free-targets)."""
    contrast_fraction: float = 0.25
    """Fraction of valid agent-ticks (texts mode) whose decision is also scored under the paired
    contrasts of `lsm.society.contrasts` (messages removed, each tie type's removed, events
    removed), stored as `contrast_dist`; 0: none (docs/teacher.md#paired-contrasts)."""
    limits: TextLimits = field(default_factory=TextLimits)

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if self.backend == "openai" and self.openai is None:
            yield "openai", None, "an `openai:` section (base_url, model) for backend openai"
        if self.backend == "vllm" and self.vllm is None:
            yield "vllm", None, "a `vllm:` section (model, ...) for backend vllm"
        if self.max_attempts < 1:
            yield "max_attempts", self.max_attempts, "at least 1"
        if not 0 <= self.temperature <= 2:
            yield "temperature", self.temperature, "a number from 0 to 2"
        if self.memories < 0:
            yield "memories", self.memories, "a non-negative count"
        if self.chunk < 1:
            yield "chunk", self.chunk, "at least 1"
        if not 1 <= self.orders <= 24:
            yield "orders", self.orders, "1 to 24 orders of the shown messages"
        if not 0 <= self.contrast_fraction <= 1:
            yield "contrast_fraction", self.contrast_fraction, "a fraction from 0 to 1"
        for f in ("batch_size", "refill"):
            if not 1 <= getattr(self.embedded, f) <= MAX_COUNT:
                yield f"embedded.{f}", getattr(self.embedded, f), f"a whole number from 1 to {MAX_COUNT:,}"
        for f in ("max_tokens", "chunk", "memories", "memory_capacity", "max_attempts"):
            if getattr(self, f) > MAX_COUNT:
                yield f, getattr(self, f), f"at most {MAX_COUNT:,}"
        for f in ("reasoning", "message", "memory"):
            if not 1 <= getattr(self.limits, f) <= MAX_COUNT:
                yield f"limits.{f}", getattr(self.limits, f), f"a number of characters from 1 to {MAX_COUNT:,}"

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        return NeighborRule.upgrade_flat(data)  # teacher configs before 2026-12 spelled the rule flat


def make_backend(cfg: TeacherConfig) -> LLMBackend:
    if cfg.backend == "embedded":

        return EmbeddedBackend(cfg.embedded)
    if cfg.backend == "openai":

        return OpenAIBackend(cfg.openai)  # type: ignore[arg-type]

    return VLLMBackend(cfg.vllm)  # type: ignore[arg-type]
