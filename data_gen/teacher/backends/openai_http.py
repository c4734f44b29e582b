"""The `openai` backend: any OpenAI-compatible chat-completions endpoint.

Works with `vllm serve`, llama.cpp's server, `lsm serve` and hosted APIs. Standard library
HTTP only (urllib); requests run `concurrency` at a time in threads; each has a timeout and is
retried on connection errors, 429 and 5xx with exponential backoff, waiting at least what a
`Retry-After` header asks (capped at `RETRY_AFTER_CAP_S`). At start-up `GET /models`
checks that the server is up and serves the configured model, so a wrong URL or model name is
one clear error instead of a thousand failed agent-ticks.

`generate` sends `response_format: {"type": "json_schema", ...}` (structured outputs) and the
seed. Where the server has vLLM's token API (`POST /tokenize`, and `prompt_logprobs` on
`/v1/completions`: vLLM, `lsm serve`), prompts are token ids built by the one rule of `scoring`
(the server's template renders the turns, an answer prefix's own tokens follow), so
`score_options` is exact (the summed log-probabilities the embedded backend computes) and an
answer prefix is continued whatever the template does to message content. Elsewhere
`score_options` reads `top_logprobs` of the next token after the prefix (`continue_final_message`)
and walks each option's text token by token (greedy longest match among the returned
alternatives; a piece outside them gets the smallest returned log-probability minus log 2):
every such score is counted (`approximate_scores`, `floor_hits`) and reported. Whether the
server's template trims an answer prefix is checked where `/tokenize` allows; the run summary
says what was found (`scoring_note`).
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from lsm.data_gen.teacher.backends.base import Conversation, Generation, LLMBackend
from lsm.data_gen.teacher.backends.scoring import (TRIM_PROBE, option_sequences, softmax_rows, split_prefix,
                                                    summed_option_logprob, template_trims)



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


class _Server:
    """One replica: its base URL, the requests in flight on it, and how many it answered."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.busy = 0
        self.taken = 0
        """Requests sent to it: among equally busy servers, the one sent fewest goes next."""
        self.failed_at = 0.0
        """When a request to it last failed (0: never): it is tried after the others for a while."""
        self.answered = 0

    @property
    def root(self) -> str:
        """The server's root URL (vLLM serves `/tokenize` beside `/v1`, not under it)."""
        return self.base[: -len("/v1")] if self.base.endswith("/v1") else self.base


FAILED_SERVER_S = 30.0
"""A server whose request failed is tried after the others for this long (then as any other)."""


class OpenAIBackend(LLMBackend):
    name = "openai"
    supports_logprobs = True
    supports_schema = True

    def __init__(self, config):
        self.config = config
        self.servers = [_Server(u) for u in config.servers()]
        self.base = self.servers[0].base
        self._route = threading.Condition()
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.floor_hits = 0
        """Walked option pieces outside the returned top tokens (scored by a bound)."""
        self.approximate_scores = 0
        self._token_api: bool | None = None  # found on first use (`token_api`)
        self._probe_lock = threading.Lock()
        self._warned_uniform = False
        self._ids_cache: dict[str, list[int]] = {}
        self.template_trims: bool | None = None
        """The server's chat template trims an answer prefix it continues (None: not checkable)."""
        for server in self.servers:  # every replica is up and serves the model, or one clear error now
            models = self._request("GET", "/models", only=server)
            ids = [m.get("id") for m in models.get("data", [])]
            if config.model not in ids:
                raise BackendError(f"{server.base}: the server does not serve model {config.model!r}; it serves {ids}. "
                                   "Set openai.model in the teacher config to one of them")
        via = self.base if len(self.servers) == 1 else f"{len(self.servers)} servers ({', '.join(s.base for s in self.servers)})"
        self.model_name = f"{config.model} via {via}"

    # -- HTTP -----------------------------------------------------------------------------
    def answered(self) -> dict[str, int]:
        """Requests answered so far, per server base URL."""
        return {sv.base: sv.answered for sv in self.servers}

    def _take(self, tried: set[int], only: _Server | None) -> _Server | None:
        """A server for the next try of a request: `only`, or the least busy of those not yet
        tried this round (one that failed lately after the others), waiting while every candidate
        has `concurrency` requests in flight; None when every server has been tried this round."""
        with self._route:
            while True:
                now = time.monotonic()
                free = [k for k, sv in enumerate(self.servers) if k not in tried and (only is None or sv is only)]
                if not free:
                    return None
                k = min(free, key=lambda k: (now - self.servers[k].failed_at < FAILED_SERVER_S, self.servers[k].busy,
                                             self.servers[k].taken, k))
                sv = self.servers[k]
                if sv.busy < self.config.concurrency or only is not None:
                    sv.busy += 1
                    sv.taken += 1
                    tried.add(k)
                    return sv
                self._route.wait(0.5)

    def _give_back(self, sv: _Server, outcome: str) -> None:
        """`outcome`: "answered", "refused" (a 4xx: the server is fine) or "failed"."""
        with self._route:
            sv.busy -= 1
            if outcome == "answered":
                sv.answered += 1
            elif outcome == "failed":
                sv.failed_at = time.monotonic()
            self._route.notify_all()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, root: bool = False,
                 only: _Server | None = None) -> dict[str, Any]:
        """`method` on `path` under a server's base URL (`root`: under its root) with failover and
        retries; the JSON answer."""
        return self._call(method, path, body, root, only)[0]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, root: bool = False,
              only: _Server | None = None) -> tuple[dict[str, Any], _Server]:
        """(the JSON answer, the server that gave it). Each round tries every server once (or
        `only`), least busy first, moving on at once when one cannot be reached or answers 429 /
        5xx; between rounds, exponential backoff (at least what a `Retry-After` asked). A 4xx is
        final. After `max_retries` + 1 rounds, one error naming the last failure."""
        cfg = self.config
        data = json.dumps(body).encode() if body is not None else None
        last, asked, url = "", 0.0, ""
        for attempt in range(cfg.max_retries + 1):
            tried: set[int] = set()
            while (sv := self._take(tried, only)) is not None:
                url = (sv.root if root else sv.base) + path
                req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
                outcome = "failed"
                try:
                    with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                        answer = json.loads(resp.read())
                    outcome = "answered"
                    return answer, sv
                except urllib.error.HTTPError as err:
                    detail = err.read().decode(errors="replace")
                    try:
                        detail = json.loads(detail)["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        pass
                    if err.code == 429 or err.code >= 500:
                        last, asked = f"HTTP {err.code}: {detail}", max(asked, retry_after_s(err.headers.get("Retry-After")))
                    else:
                        outcome = "refused"
                        raise BackendError(f"{method} {url}: HTTP {err.code}: {detail}") from None
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
                    reason = getattr(err, "reason", err)
                    last = f"cannot reach the server ({reason})"
                finally:
                    self._give_back(sv, outcome)
            if attempt < cfg.max_retries:
                time.sleep(max(cfg.backoff_s * 2**attempt, asked))
                asked = 0.0
        where = "" if len(self.servers) == 1 or only is not None else f" (and on every one of the {len(self.servers)} servers)"
        raise BackendError(f"{method} {url}: {last}{where} after {cfg.max_retries + 1} tries; "
                           "is the server running (e.g. `lsm serve` or `vllm serve`) and is openai.base_url right?")

    @property
    def root(self) -> str:
        """The first server's root URL (vLLM serves `/tokenize` beside `/v1`, not under it)."""
        return self.servers[0].root

    def _tokenize(self, body: dict[str, Any]) -> list[int]:
        r = self._request("POST", "/tokenize", {"model": self.config.model, **body}, root=True)
        tokens = r.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise BackendError(f"{self.root}/tokenize answered without a token list")
        return tokens

    def text_ids(self, text: str) -> list[int]:
        """Token ids of `text` alone, by the server's tokenizer (cached: options repeat)."""
        if text not in self._ids_cache:
            self._ids_cache[text] = self._tokenize({"prompt": text, "add_special_tokens": False}) if text else []
        return self._ids_cache[text]

    def prompt_ids(self, conv: Conversation) -> list[int]:
        """`scoring.prompt_ids` through the server: its template renders the turns before the
        answer (with its assistant header), the prefix's own ids follow."""
        head, prefix = split_prefix(conv)
        key = json.dumps(head)
        if key not in self._ids_cache:
            self._ids_cache[key] = self._tokenize({"messages": head, "add_generation_prompt": True})
        return self._ids_cache[key] + self.text_ids(prefix)

    def token_api(self) -> bool:
        """Does the server tokenise (`/tokenize`) and give prompt log-probabilities over token ids?
        Probed once, on first use; `scoring: exact` refuses a server that cannot, `walk` never
        asks. Also checks whether its chat template trims an answer prefix."""
        with self._probe_lock:
            if self._token_api is None:
                self._token_api = self._probe()
        return self._token_api

    def _probe(self) -> bool:
        mode = self.config.scoring
        if mode == "walk":
            self.scoring_note = "approximate: top-logprob walk (scoring: walk)"
            return False
        why = ""
        try:
            ids = self.text_ids("Hello there")
            r = self._request("POST", "/completions", {"model": self.config.model, "prompt": ids, "max_tokens": 1,
                                                        "temperature": 0.0, "prompt_logprobs": 0})
            plp = r["choices"][0].get("prompt_logprobs")
            if not isinstance(plp, list) or len(plp) != len(ids):
                why = "its /v1/completions gives no prompt_logprobs"
        except (BackendError, KeyError, IndexError, TypeError) as err:
            why = f"it has no usable /tokenize or /v1/completions ({err})"
        if why:
            if mode == "exact":
                raise BackendError(f"{self.base}: openai.scoring is exact but {why}; use a server with vLLM's token API "
                                   "(vllm serve, lsm serve) or set openai.scoring: walk (approximate, counted)")
            self.scoring_note = (f"approximate: top-{self.config.top_logprobs} walk ({why}); the chat template's "
                                 "handling of an answer prefix is unchecked")
            return False
        try:
            self.template_trims = template_trims(lambda conv: self._tokenize(
                {"messages": conv, "add_generation_prompt": False, "continue_final_message": True}), self.text_ids(TRIM_PROBE))
        except BackendError:
            self.template_trims = None
        self.scoring_note = "exact: server token ids and prompt log-probabilities" + (
            "; the server's chat template trims answer prefixes, so prefixes are sent as token ids" if self.template_trims
            else "" if self.template_trims is False else "; whether the chat template trims answer prefixes is unchecked")
        return True

    def _map(self, fn, items: Sequence[Any]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=self.config.concurrency * len(self.servers)) as pool:
            return list(pool.map(fn, items))

    def _chat(self, conv: Conversation, **extra: Any) -> dict[str, Any]:
        body = {"model": self.config.model, "messages": conv, **extra}
        return self._request("POST", "/chat/completions", body)

    # -- generation -----------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], schema: dict[str, Any] | None = None,
                 temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        """One answer per conversation. A final assistant message is continued: as token ids on
        `/v1/completions` where the server has the token API (whatever its template does to
        message content), else through `continue_final_message`."""
        prefixed = any(c and c[-1]["role"] == "assistant" for c in conversations)
        by_ids = prefixed and self.token_api()

        def one(item: tuple[int, Conversation]) -> Generation:
            i, conv = item
            extra: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed + i}
            if schema is not None and self.config.json_schema:
                extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
            continued = bool(conv) and conv[-1]["role"] == "assistant"
            t0 = time.perf_counter()
            if continued and by_ids:
                r, sv = self._call("POST", "/completions", {"model": self.config.model, "prompt": self.prompt_ids(conv), **extra})
                ch = r["choices"][0]
                text = ch.get("text") or ""
            else:
                if continued and self.config.continue_final_message:
                    extra.update(continue_final_message=True, add_generation_prompt=False)
                r, sv = self._call("POST", "/chat/completions", {"model": self.config.model, "messages": conv, **extra})
                ch = r["choices"][0]
                text = ch["message"].get("content") or ""
            usage = r.get("usage") or {}
            return Generation(text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)),
                              latency_s=time.perf_counter() - t0, finish_reason=ch.get("finish_reason") or "stop",
                              server=sv.base)

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
        if self.token_api():
            return softmax_rows(self.option_logprobs(conversations, option_labels))
        return self._walk_scores(conversations, option_labels)

    def option_logprobs(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Exact summed log-probabilities (`scoring`, rules 1-3): one `/v1/completions` request per
        option over the token ids of prompt + option, with `prompt_logprobs`."""
        per_conv = option_sequences(self.prompt_ids, self.text_ids, conversations, option_labels)
        flat = [seq for seqs in per_conv for seq in seqs]

        def one(seq: tuple[list[int], int]) -> float:
            ids, k = seq
            r = self._request("POST", "/completions", {"model": self.config.model, "prompt": ids, "max_tokens": 1,
                                                        "temperature": 0.0, "prompt_logprobs": 0})
            plp = r["choices"][0].get("prompt_logprobs")
            if not isinstance(plp, list) or len(plp) != len(ids):
                raise BackendError(f"{self.base}/completions returned no prompt_logprobs for {len(ids)} prompt tokens")
            return summed_option_logprob([None if d is None else float(d[str(t)]["logprob"]) for t, d in zip(ids, plp)], k)

        scores = self._map(one, flat)
        out, i = [], 0
        for seqs in per_conv:
            out.append(np.array(scores[i : i + len(seqs)]))
            i += len(seqs)
        return out

    def _walk_scores(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """The approximate fallback: a walk over the top next tokens, every score counted."""
        out = []
        for conv, options in zip(conversations, option_labels):
            head, prefix = split_prefix(conv)
            logp = np.zeros(len(options))
            frontier = {"": list(range(len(options)))}  # consumed text -> options still being walked
            first = True
            while frontier:
                keys = list(frontier)
                tops = self._map(lambda k: self._next_token_logprobs(head + [{"role": "assistant", "content": prefix + k}]), keys)
                nxt: dict[str, list[int]] = {}
                for k, top in zip(keys, tops):
                    floor = (min(top.values()) if top else -30.0) - math.log(2)
                    missed = 0
                    for o in frontier[k]:
                        rest = options[o][len(k):]
                        match = max((t for t in top if t and rest.startswith(t)), key=len, default=None)
                        if match is None:
                            logp[o] += floor
                            self.floor_hits += 1
                            missed += 1
                            continue
                        logp[o] += top[match]
                        if len(rest) > len(match):
                            nxt.setdefault(k + match, []).append(o)
                    if first and missed == len(options) and not self._warned_uniform:
                        self._warned_uniform = True
                        print(f"warning: {self.base}: no option of {list(options)} is among the server's top "
                              f"{self.config.top_logprobs} next tokens after the answer prefix, so they all score the same; "
                              "the chat template may trim the prefix's trailing space. A server with /tokenize and "
                              "prompt_logprobs (vllm serve, lsm serve) scores exactly", file=sys.stderr, flush=True)
                first = False
                frontier = nxt
            self.approximate_scores += len(options)
            out.append(softmax_rows([logp])[0])
        return out
