"""The `openai` backend: any OpenAI-compatible chat-completions endpoint.

Works with `vllm serve`, llama.cpp's server, `lsm serve` and hosted APIs. Standard library
HTTP only (urllib); requests run `concurrency` at a time in threads; each has a timeout and is
retried on connection errors, 429 and 5xx with exponential backoff, waiting at least what a
`Retry-After` header asks (capped at `RETRY_AFTER_CAP_S`). At start-up `GET /models`
checks that the server is up and serves the configured model, so a wrong URL or model name is
one clear error instead of a thousand failed agent-ticks.

`generate` sends `response_format: {"type": "json_schema", ...}` (structured outputs) and the
seed. `score_options` reads `top_logprobs` of the next token after an assistant prefix
(`continue_final_message`, a vLLM extension that `lsm serve` also implements) and walks each
option's text token by token (greedy longest match among the returned alternatives); an option
whose next piece is not among the top alternatives gets the smallest returned log-probability
minus log 2 (a bound, recorded in `self.floor_hits`).
"""
from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from lsm.data_gen.teacher.backends.base import Conversation, Generation, LLMBackend



RETRY_AFTER_CAP_S = 60.0
"""The longest wait a server's `Retry-After` header can impose on one retry."""


def retry_after_s(value: str | None) -> float:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date; 0 if absent or
    unreadable), capped at `RETRY_AFTER_CAP_S`."""
    if not value:
        return 0.0
    try:
        wait = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        wait = when.timestamp() - time.time()
    return min(max(wait, 0.0), RETRY_AFTER_CAP_S)

class BackendError(RuntimeError):
    """The server cannot be used: down, wrong model, or it refused a request."""


class OpenAIBackend(LLMBackend):
    name = "openai"
    supports_logprobs = True
    supports_schema = True

    def __init__(self, config):
        self.config = config
        self.base = config.base_url.rstrip("/")
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.floor_hits = 0
        models = self._request("GET", "/models")
        ids = [m.get("id") for m in models.get("data", [])]
        if config.model not in ids:
            raise BackendError(f"{self.base}: the server does not serve model {config.model!r}; it serves {ids}. "
                               "Set openai.model in the teacher config to one of them")
        self.model_name = f"{config.model} via {self.base}"

    # -- HTTP -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg = self.config
        data = json.dumps(body).encode() if body is not None else None
        last, asked = "", 0.0
        for attempt in range(cfg.max_retries + 1):
            req = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
            try:
                with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")
                try:
                    detail = json.loads(detail)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    pass
                if err.code == 429 or err.code >= 500:
                    last, asked = f"HTTP {err.code}: {detail}", retry_after_s(err.headers.get("Retry-After"))
                else:
                    raise BackendError(f"{method} {self.base}{path}: HTTP {err.code}: {detail}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
                reason = getattr(err, "reason", err)
                last = f"cannot reach the server ({reason})"
            if attempt < cfg.max_retries:
                time.sleep(max(cfg.backoff_s * 2**attempt, asked))
                asked = 0.0
        raise BackendError(f"{method} {self.base}{path}: {last} after {cfg.max_retries + 1} tries; "
                           "is the server running (e.g. `lsm serve` or `vllm serve`) and is openai.base_url right?")

    def _map(self, fn, items: Sequence[Any]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(fn, items))

    def _chat(self, conv: Conversation, **extra: Any) -> dict[str, Any]:
        body = {"model": self.config.model, "messages": conv, **extra}
        return self._request("POST", "/chat/completions", body)

    # -- generation -----------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], schema: dict[str, Any] | None = None,
                 temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        def one(item: tuple[int, Conversation]) -> Generation:
            i, conv = item
            extra: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed + i}
            if schema is not None and self.config.json_schema:
                extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
            t0 = time.perf_counter()
            r = self._chat(conv, **extra)
            ch = r["choices"][0]
            usage = r.get("usage") or {}
            return Generation(text=ch["message"].get("content") or "", prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)),
                              latency_s=time.perf_counter() - t0, finish_reason=ch.get("finish_reason") or "stop")

        return self._map(one, list(enumerate(conversations)))  # latency_s: each request's own wall time

    # -- scoring --------------------------------------------------------------------------
    def _next_token_logprobs(self, conv: Conversation) -> dict[str, float]:
        cfg = self.config
        extra: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": cfg.top_logprobs}
        if cfg.continue_final_message and conv and conv[-1]["role"] == "assistant":
            extra.update(continue_final_message=True, add_generation_prompt=False)
        r = self._chat(conv, **extra)
        content = ((r["choices"][0].get("logprobs") or {}).get("content")) or []
        if not content:
            raise BackendError(f"{self.base}: the server returned no logprobs; it cannot score options (use answer: full)")
        return {t["token"]: float(t["logprob"]) for t in content[0].get("top_logprobs", [])}

    def score_options(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        out = []
        for conv, options in zip(conversations, option_labels):
            head, prefix = (conv[:-1], conv[-1]["content"]) if conv and conv[-1]["role"] == "assistant" else (conv, "")
            logp = np.zeros(len(options))
            frontier = {"": list(range(len(options)))}  # consumed text -> options still being walked
            while frontier:
                keys = list(frontier)
                tops = self._map(lambda k: self._next_token_logprobs(head + [{"role": "assistant", "content": prefix + k}]), keys)
                nxt: dict[str, list[int]] = {}
                for k, top in zip(keys, tops):
                    floor = (min(top.values()) if top else -30.0) - math.log(2)
                    for o in frontier[k]:
                        rest = options[o][len(k):]
                        match = max((t for t in top if t and rest.startswith(t)), key=len, default=None)
                        if match is None:
                            logp[o] += floor
                            self.floor_hits += 1
                            continue
                        logp[o] += top[match]
                        if len(rest) > len(match):
                            nxt.setdefault(k + match, []).append(o)
                frontier = nxt
            e = np.exp(logp - logp.max())
            out.append(e / e.sum())
        return out
