"""`lsm serve`: the embedded model behind an OpenAI-compatible HTTP API (loopback by default).

A real server (stdlib `ThreadingHTTPServer`) so that the `openai` backend can be exercised
end to end on any machine, and so that several processes can share one loaded model.
Implements the parts of the API the teacher uses, as vLLM's server implements them:

- `GET /v1/models`
- `POST /v1/chat/completions`: `messages`, `model`, `temperature`, `max_tokens` /
  `max_completion_tokens`, `seed`, `response_format` (`json_schema` is enforced by the
  template decoder; `json_object` is accepted), `logprobs` + `top_logprobs` (log-probabilities
  of the first generated position), and vLLM's `continue_final_message` /
  `add_generation_prompt`. The conversation is rendered by the chat template, as a server does
  (so a trimming template, `chat_template=`, behaves here as it would on vLLM).
- `POST /v1/completions`: `prompt` (text or token ids), `max_tokens`, `temperature`, `seed`,
  `response_format`, and vLLM's `prompt_logprobs` (per prompt token, the log-probability of
  that token given the ones before it, plus the top N; the first is null).
- `POST /tokenize` (vLLM's): `prompt` (+ `add_special_tokens`) or `messages` (+
  `add_generation_prompt`, `continue_final_message`) -> `{"tokens", "count", "max_model_len"}`.

Errors use the OpenAI shape `{"error": {"message", "type", "code"}}`; an unknown model is a 404.
Requests are served one at a time (one model, one lock).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lsm.data_gen.teacher.backends.base import Generation

MODEL_ID = "smollm2-135m-instruct"


class _Handler(BaseHTTPRequestHandler):
    server: "CompletionServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": code}})

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "lsm"}]})
        elif self.path.rstrip("/") in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no route {self.path}", code="not_found")

    ROUTES = {"/v1/chat/completions": "chat", "/chat/completions": "chat", "/v1/completions": "completions",
              "/completions": "completions", "/tokenize": "tokenize", "/v1/tokenize": "tokenize"}

    def do_POST(self) -> None:  # noqa: N802
        route = self.ROUTES.get(self.path.rstrip("/"))
        if route is None or (route == "tokenize" and not self.server.token_api):
            self._error(404, f"no route {self.path}", code="not_found")
            return
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except json.JSONDecodeError as err:
            self._error(400, f"request body is not JSON: {err}")
            return
        if not isinstance(req, dict):
            self._error(400, "the request body must be a JSON object")
            return
        if req.get("model", MODEL_ID if route == "tokenize" else None) != MODEL_ID:
            self._error(404, f"The model `{req.get('model')}` does not exist; this server serves `{MODEL_ID}`", code="model_not_found")
            return
        try:
            if route == "chat":
                body = self.server.chat(req)
            elif route == "completions":
                body = self.server.completion(req)
            else:
                body = self.server.tokenize(req)
        except (ValueError, TypeError) as err:
            self._error(400, str(err))
            return
        self._send(200, body)


def _messages(req: dict[str, Any]) -> list[dict[str, str]]:
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise ValueError("'messages' must be a non-empty list of {role, content}")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def _schema(req: dict[str, Any]) -> dict[str, Any] | None:
    rf = req.get("response_format") or {}
    if rf.get("type") != "json_schema":
        return None
    schema = (rf.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise ValueError("response_format.json_schema.schema must be an object")
    return schema


class CompletionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backend, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False,
                 chat_template: str | None = None, token_api: bool = True):
        """`chat_template` replaces the model's own for chat rendering (a test of how clients
        cope with templates that trim); `token_api=False` serves neither `/tokenize` nor
        `prompt_logprobs`, like servers that lack them (llama.cpp's, hosted APIs)."""
        super().__init__((host, port), _Handler)
        self.backend, self.verbose = backend, verbose
        self.chat_template, self.token_api = chat_template, token_api
        self.lock = threading.Lock()

    # -- rendering ----------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
               continue_final_message: bool = False) -> list[int]:
        """Token ids of a conversation rendered by the chat template, as vLLM renders it."""
        tok = self.backend.tokenizer
        if continue_final_message and messages[-1]["role"] != "assistant":
            raise ValueError("continue_final_message needs a final assistant message")
        text = tok.apply_chat_template(messages, tokenize=False, chat_template=self.chat_template,
                                       add_generation_prompt=add_generation_prompt and not continue_final_message,
                                       continue_final_message=continue_final_message)
        return self.backend._ids(text)

    def tokenize(self, req: dict[str, Any]) -> dict[str, Any]:
        if "messages" in req:
            ids = self.render(_messages(req), bool(req.get("add_generation_prompt", True)),
                              bool(req.get("continue_final_message", False)))
        elif isinstance(req.get("prompt"), str):
            tok = self.backend.tokenizer
            ids = list(tok(req["prompt"], add_special_tokens=bool(req.get("add_special_tokens", True)))["input_ids"])
        else:
            raise ValueError("/tokenize needs 'prompt' (a string) or 'messages'")
        return {"tokens": ids, "count": len(ids), "max_model_len": int(self.backend.model.config.max_position_embeddings)}

    # -- log-probabilities --------------------------------------------------------------
    def _entry(self, i: int, logp, rank: int | None = None) -> dict[str, Any]:
        text = self.backend.tokenizer.decode([i])
        out = {"token": text, "logprob": float(logp[i]), "bytes": list(text.encode())}
        if rank is not None:
            out["rank"] = rank
        return out

    def _logp(self, ids: list[int]):
        """(L, V) log-probabilities of the next token at every position of `ids`."""
        import torch

        with torch.inference_mode():
            return torch.log_softmax(self.backend.scorer(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)

    def _prompt_logprobs(self, ids: list[int], logp, top: int) -> list[dict[str, dict[str, Any]] | None]:
        """vLLM's `prompt_logprobs` from `logp = _logp(ids)`: for token j >= 1, {token id:
        {logprob, rank, decoded_token}} of the token itself and the `top` most likely tokens at
        its position; None for token 0."""
        import torch

        tok = self.backend.tokenizer
        out: list[dict[str, dict[str, Any]] | None] = [None]
        for j in range(1, len(ids)):
            row, t = logp[j - 1], ids[j]
            pick = {t: int((row > row[t]).sum()) + 1}
            if top:
                best = torch.topk(row, top)
                pick.update({int(i): r + 1 for r, i in enumerate(best.indices.tolist()) if int(i) not in pick})
            out.append({str(i): {"logprob": float(row[i]), "rank": r, "decoded_token": tok.decode([i])} for i, r in pick.items()})
        return out

    def _one_token(self, logp, temperature: float, seed: int):
        """A one-token answer from the last position of `logp` (what `generate_ids` would give
        for max_tokens=1 at temperature 0; sampled with `seed` otherwise), without a second pass."""
        import torch


        row = logp[-1]
        if temperature <= 0:
            t = int(row.argmax())
        else:
            g = torch.Generator().manual_seed(seed)
            t = int(torch.multinomial(torch.softmax(row / temperature, -1), 1, generator=g))
        tok = self.backend.tokenizer
        eos = t == tok.eos_token_id
        return Generation(text=tok.decode([t], skip_special_tokens=True), prompt_tokens=len(logp), completion_tokens=1,
                          latency_s=0.0, finish_reason="stop" if eos else "length")

    # -- endpoints ----------------------------------------------------------------------
    def _sampling(self, req: dict[str, Any], default_max: int) -> tuple[int, float, int]:
        max_tokens = int(req.get("max_completion_tokens") or req.get("max_tokens") or default_max)
        if not 1 <= max_tokens <= 4096:
            raise ValueError(f"max_tokens {max_tokens}: expected 1 to 4,096")
        return max_tokens, float(req.get("temperature", 1.0)), int(req.get("seed", 0) or 0)

    def chat(self, req: dict[str, Any]) -> dict[str, Any]:
        import torch

        b = self.backend
        messages = _messages(req)
        cont = bool(req.get("continue_final_message", False))
        if cont and messages[-1]["role"] != "assistant":
            raise ValueError("continue_final_message needs a final assistant message")
        schema = _schema(req)
        max_tokens, temperature, seed = self._sampling(req, 256)
        want_lp = bool(req.get("logprobs", False))
        k = int(req.get("top_logprobs", 0) or 0)
        with self.lock:
            t0 = time.perf_counter()
            ids = self.render(messages, bool(req.get("add_generation_prompt", True)), cont)
            gen = b.generate_ids([ids], schema=schema, temperature=temperature, seed=seed, max_tokens=max_tokens)[0]
            content: list[dict[str, Any]] | None = None
            if want_lp:
                with torch.inference_mode():
                    logits = b.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                top = torch.topk(logp, max(k, 1))
                first = b._ids(gen.text)[:1]
                tok_id = first[0] if first else int(top.indices[0])
                content = [{**self._entry(tok_id, logp), "top_logprobs": [self._entry(int(i), logp) for i in top.indices[:k]]}]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "finish_reason": gen.finish_reason, "logprobs": {"content": content} if want_lp else None}],
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                      "total_tokens": gen.prompt_tokens + gen.completion_tokens},
            "lsm_latency_s": time.perf_counter() - t0,
        }

    def completion(self, req: dict[str, Any]) -> dict[str, Any]:
        b = self.backend
        prompt = req.get("prompt")
        if isinstance(prompt, str):
            ids = b._ids(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            vocab = len(b.tokenizer)
            if not all(0 <= t < vocab for t in prompt):
                raise ValueError(f"prompt token ids must be in 0..{vocab - 1}")
            ids = list(prompt)
        else:
            raise ValueError("'prompt' must be a string or a non-empty list of token ids (one prompt per request)")
        if req.get("echo"):
            raise ValueError("echo is not supported; ask for prompt_logprobs")
        plp = req.get("prompt_logprobs")
        if plp is not None and (not self.token_api or not isinstance(plp, int) or not 0 <= plp <= 20):
            raise ValueError("prompt_logprobs is not supported by this server" if not self.token_api
                             else f"prompt_logprobs {plp!r}: expected 0 to 20")
        schema = _schema(req)
        max_tokens, temperature, seed = self._sampling(req, 16)
        with self.lock:
            t0 = time.perf_counter()
            prompt_lp = None
            if plp is not None:  # one pass gives every prompt position (and a one-token answer)
                logp = self._logp(ids)
                prompt_lp = self._prompt_logprobs(ids, logp, plp)
            if plp is not None and max_tokens == 1 and schema is None:
                gen = self._one_token(logp, temperature, seed)
            else:
                gen = b.generate_ids([ids], schema=schema, temperature=temperature, seed=seed, max_tokens=max_tokens)[0]
        choice: dict[str, Any] = {"index": 0, "text": gen.text, "finish_reason": gen.finish_reason, "logprobs": None}
        if prompt_lp is not None:
            choice["prompt_logprobs"] = prompt_lp
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion", "created": int(time.time()), "model": MODEL_ID,
            "choices": [choice],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": gen.completion_tokens,
                      "total_tokens": len(ids) + gen.completion_tokens},
            "lsm_latency_s": time.perf_counter() - t0,
        }


def serve(backend, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False) -> None:
    srv = CompletionServer(backend, host, port, verbose)
    print(f"serving {MODEL_ID} on http://{host}:{srv.server_address[1]}/v1", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
