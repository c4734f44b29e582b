"""`lsm serve`: the embedded model behind an OpenAI-compatible HTTP API (loopback by default).

A real server (stdlib `ThreadingHTTPServer`) so that the `openai` backend can be exercised
end to end on any machine, and so that several processes can share one loaded model.
Implements the parts of the API the teacher uses:

- `GET /v1/models`
- `POST /v1/chat/completions`: `messages`, `model`, `temperature`, `max_tokens` /
  `max_completion_tokens`, `seed`, `response_format` (`json_schema` is enforced by the
  template decoder; `json_object` is accepted), `logprobs` + `top_logprobs` (log-probabilities
  of the first generated position), and vLLM's `continue_final_message` (a final assistant
  message is continued rather than answered).

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

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}", code="not_found")
            return
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except json.JSONDecodeError as err:
            self._error(400, f"request body is not JSON: {err}")
            return
        if req.get("model") != MODEL_ID:
            self._error(404, f"The model `{req.get('model')}` does not exist; this server serves `{MODEL_ID}`", code="model_not_found")
            return
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            self._error(400, "'messages' must be a non-empty list of {role, content}")
            return
        try:
            body = self.server.complete(req)
        except ValueError as err:
            self._error(400, str(err))
            return
        self._send(200, body)


class CompletionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backend, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False):
        super().__init__((host, port), _Handler)
        self.backend, self.verbose = backend, verbose
        self.lock = threading.Lock()

    def complete(self, req: dict[str, Any]) -> dict[str, Any]:
        import torch

        b = self.backend
        conv = [{"role": m["role"], "content": str(m["content"])} for m in req["messages"]]
        if conv[-1]["role"] == "assistant" and not req.get("continue_final_message", False):
            conv = conv + [{"role": "user", "content": ""}]
        schema = None
        rf = req.get("response_format") or {}
        if rf.get("type") == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise ValueError("response_format.json_schema.schema must be an object")
        max_tokens = int(req.get("max_completion_tokens") or req.get("max_tokens") or 256)
        temperature = float(req.get("temperature", 1.0))
        seed = int(req.get("seed", 0) or 0)
        want_lp = bool(req.get("logprobs", False))
        k = int(req.get("top_logprobs", 0) or 0)
        with self.lock:
            t0 = time.perf_counter()
            gen = b.generate([conv], schema=schema, temperature=temperature, seed=seed, max_tokens=max_tokens)[0]
            content: dict[str, Any] | None = None
            if want_lp:
                ids = b._ids(b.render(conv))
                with torch.inference_mode():
                    logits = b.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                top = torch.topk(logp, max(k, 1))
                first = b._ids(gen.text)[:1]
                tok_id = first[0] if first else int(top.indices[0])
                entry = lambda i: {"token": b.tokenizer.decode([i]), "logprob": float(logp[i]),  # noqa: E731
                                   "bytes": list(b.tokenizer.decode([i]).encode())}
                content = [{**entry(tok_id), "top_logprobs": [entry(int(i)) for i in top.indices[:k]]}]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "finish_reason": gen.finish_reason, "logprobs": {"content": content} if want_lp else None}],
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                      "total_tokens": gen.prompt_tokens + gen.completion_tokens},
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
