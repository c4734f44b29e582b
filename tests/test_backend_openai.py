"""The `openai` backend against a real OpenAI-compatible server process on loopback
(`lsm serve`: the embedded SmolLM2 behind /v1/chat/completions), its retries against a
deliberately failing loopback server (the vLLM path: tests/test_gpu_smoke.py)."""
from __future__ import annotations

import itertools
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import yaml

from lsm.config import shipped
from lsm.data_gen.teacher.backends.openai_http import BackendError, OpenAIBackend
from lsm.society.store import TraceFile
from lsm.data_gen.teacher.config import OpenAIConfig
from lsm.society.world import build_world, save_world
from tests.conftest import start_until_journaled


SERVE_TIMEOUT_S = 300


def _start_server(cmd: list[str], timeout: float) -> tuple[subprocess.Popen, str]:
    """Start `cmd` and wait up to `timeout` s for its "serving ... on URL" line; return (process,
    URL). A server that exits or stays silent fails the test with everything it printed. A thread
    keeps draining its output afterwards, so a chatty server never blocks on a full pipe."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF: the server exited

    threading.Thread(target=drain, daemon=True).start()
    seen: list[str] = []
    line: str | None = ""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith("serving") and " on " in line:
            return proc, line.split(" on ")[1].strip()
    proc.kill()
    proc.wait(timeout=30)
    why = f"exited with code {proc.returncode}" if line is None else f"did not start within {timeout:g} s"
    pytest.fail(f"{' '.join(cmd)} {why}; its output:\n{''.join(seen)}")


@pytest.fixture(scope="module")
def server():
    proc, url = _start_server([sys.executable, "-m", "lsm", "serve", "--port", "0"], SERVE_TIMEOUT_S)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_a_hung_or_dead_server_fails_the_fixture_with_its_output():
    """The fixture's start-up wait has a deadline: a server that never says "serving" fails
    (with what it printed) instead of stalling the suite; one that exits fails at once."""
    hung = [sys.executable, "-c", "print('loading weights', flush=True); import time; time.sleep(120)"]
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"(?s)did not start within 1 s.*loading weights"):
        _start_server(hung, timeout=1)
    assert time.monotonic() - t0 < 30
    with pytest.raises(pytest.fail.Exception, match=r"(?s)exited with code 3.*boom"):
        _start_server([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], timeout=60)
    ok = [sys.executable, "-c",
          "print('warming up'); print('serving m on http://127.0.0.1:9/v1', flush=True); import time; time.sleep(120)"]
    proc, url = _start_server(ok, timeout=60)
    proc.kill()
    proc.wait()
    assert url == "http://127.0.0.1:9/v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_down_server_is_a_clear_error():
    cfg = OpenAIConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m", max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match="cannot reach the server.*after 2 tries"):
        OpenAIBackend(cfg)


class _Flaky:
    """A loopback OpenAI-compatible server that answers the first requests to each path with the
    HTTP errors listed in `fail[path]` (OpenAI-shaped error bodies), then correctly. `hits`
    records (path, monotonic time) of every request."""

    CHAT = "/v1/chat/completions"
    MODELS = "/v1/models"

    def __init__(self):
        self.fail: dict[str, list[int]] = {}
        self.retry_after: str | None = None  # a Retry-After header sent with every deliberate error
        self.hits: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status != 200 and flaky.retry_after is not None:
                    self.send_header("Retry-After", flaky.retry_after)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, ok_body):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with flaky.lock:
                    flaky.hits.append((self.path, time.monotonic()))
                    todo = flaky.fail.get(self.path, [])
                    code = todo.pop(0) if todo else None
                if code is None:
                    self._send(200, ok_body)
                else:
                    self._send(code, {"error": {"message": f"deliberate {code}", "type": "server_error"}})

            def do_GET(self):
                self._answer({"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self):
                self._answer({"choices": [{"message": {"role": "assistant", "content": '{"ok": 1}'}, "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def times(self, path: str) -> list[float]:
        return [t for p, t in self.hits if p == path]


@pytest.fixture
def flaky():
    srv = _Flaky()
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(timeout=10)


HELLO = [[{"role": "user", "content": "hello"}]]


@pytest.mark.parametrize("codes", [[429], [503], [500, 502, 503, 429]], ids=["429", "503", "500-502-503-429"])
def test_429_and_5xx_are_retried_with_exponential_backoff(flaky, codes):
    """Each 429/5xx costs one more attempt; attempt k+1 waits at least backoff_s * 2**k."""
    flaky.fail[flaky.CHAT] = list(codes)
    cfg = OpenAIConfig(base_url=flaky.url, model="m", max_retries=4, backoff_s=0.02)
    g = OpenAIBackend(cfg).generate(HELLO)[0]
    assert (g.text, g.prompt_tokens, g.completion_tokens) == ('{"ok": 1}', 3, 2)
    t = flaky.times(flaky.CHAT)
    assert len(t) == len(codes) + 1
    gaps = [b - a for a, b in itertools.pairwise(t)]
    assert all(gap >= cfg.backoff_s * 2**k for k, gap in enumerate(gaps)), gaps


def test_retry_after_is_honoured_and_capped(flaky):
    """A 429 that asks for 1 s is retried after at least 1 s, however short the backoff; the
    header's forms (seconds, HTTP date, junk) are read and capped."""
    from email.utils import formatdate

    from lsm.data_gen.teacher.backends.openai_http import RETRY_AFTER_CAP_S, retry_after_s

    flaky.fail[flaky.CHAT], flaky.retry_after = [429], "1"
    OpenAIBackend(OpenAIConfig(base_url=flaky.url, model="m", max_retries=2, backoff_s=0.01)).generate(HELLO)
    t = flaky.times(flaky.CHAT)
    assert len(t) == 2 and t[1] - t[0] >= 1.0
    assert retry_after_s(None) == retry_after_s("soon") == retry_after_s("-3") == 0.0
    assert retry_after_s("2.5") == 2.5 and retry_after_s("86400") == RETRY_AFTER_CAP_S
    assert 8 <= retry_after_s(formatdate(time.time() + 10, usegmt=True)) <= 10


def test_start_up_check_is_retried_too(flaky):
    """GET /models (the start-up check) goes through the same retries."""
    flaky.fail[flaky.MODELS] = [503, 429]
    OpenAIBackend(OpenAIConfig(base_url=flaky.url, model="m", max_retries=2, backoff_s=0.01))
    assert len(flaky.times(flaky.MODELS)) == 3


def test_more_failures_than_the_retry_limit_is_a_clear_error(flaky):
    """max_retries=2 means 3 attempts, then an error naming the request, the last HTTP status,
    the server's message and the number of tries."""
    b = OpenAIBackend(OpenAIConfig(base_url=flaky.url, model="m", max_retries=2, backoff_s=0.01))
    flaky.fail[flaky.CHAT] = [503, 429, 503, 500]
    with pytest.raises(BackendError, match=rf"^POST {flaky.url}/chat/completions: HTTP 503: deliberate 503 after 3 tries; "):
        b.generate(HELLO)
    assert len(flaky.times(flaky.CHAT)) == 3


def test_4xx_is_not_retried(flaky):
    """A client error (here 400) is final: one attempt, and the server's message in the error."""
    b = OpenAIBackend(OpenAIConfig(base_url=flaky.url, model="m", max_retries=4, backoff_s=0.01))
    flaky.fail[flaky.CHAT] = [400]
    with pytest.raises(BackendError, match=rf"^POST {flaky.url}/chat/completions: HTTP 400: deliberate 400$"):
        b.generate(HELLO)
    assert len(flaky.times(flaky.CHAT)) == 1


def test_wrong_model_name_is_a_clear_error(server):
    with pytest.raises(BackendError, match="does not serve model 'gpt-17'.*smollm2-135m-instruct"):
        OpenAIBackend(OpenAIConfig(base_url=server, model="gpt-17"))


def test_generate_with_json_schema_and_score_options(server):
    b = OpenAIBackend(OpenAIConfig(base_url=server, model="smollm2-135m-instruct", concurrency=2))
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                               "rating": {"type": "integer", "minimum": 0, "maximum": 10}}}
    gens = b.generate([[{"role": "user", "content": "Name a city and rate it."}]] * 2, schema=schema, seed=3, max_tokens=40)
    for g in gens:
        obj = json.loads(g.text)
        assert set(obj) == {"city", "rating"} and 0 <= obj["rating"] <= 10
        assert g.prompt_tokens > 0 and g.completion_tokens > 0
    conv = [{"role": "user", "content": "What is the capital of France? Answer with one word."},
            {"role": "assistant", "content": "The capital of France is"}]
    p = b.score_options([conv], [[" Paris", " banana split"]])[0]
    assert abs(p.sum() - 1) < 1e-9 and p[0] > 0.9


@pytest.fixture(scope="module")
def gen_inputs(tmp_path_factory):
    """A 2-agent world and a 2-tick vaccine campaign for `lsm gen` through servers."""
    d = tmp_path_factory.mktemp("gen")
    save_world(build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=2, seed=5), d / "w.h5")
    sc = yaml.safe_load(shipped("scenarios", "vaccine_campaign.yaml").read_text())
    sc["ticks"], sc["events"] = 2, [e for e in sc["events"] if e["tick"] < 2]
    (d / "s.yaml").write_text(yaml.safe_dump(sc))
    return d


def _gen_args(d, teacher: str) -> list[str]:
    return ["gen", "--world", str(d / "w.h5"), "--scenario", str(d / "s.yaml"), "--teacher", teacher, "--quiet", "true"]


def _openai_teacher(path, servers: list[str], max_retries: int = 1) -> str:
    """A teacher config answering in full through `servers` (one: `base_url`, several: `base_urls`)."""
    spec = {"model": "smollm2-135m-instruct", "concurrency": 1, "max_retries": max_retries, "backoff_s": 0.05,
            **({"base_url": servers[0]} if len(servers) == 1 else {"base_urls": servers})}
    path.write_text(yaml.safe_dump({"backend": "openai", "answer": "full", "max_tokens": 300, "chunk": 2, "openai": spec,
                                    "limits": {"reasoning": 80, "message": 60, "memory": 40}}))
    return str(path)


@pytest.fixture(scope="module")
def one_server_trace(server, gen_inputs):
    """`lsm gen` through the module's server, uninterrupted: the reference the interrupted runs must equal."""
    from lsm.cli import main

    out = gen_inputs / "one.h5"
    assert main([*_gen_args(gen_inputs, _openai_teacher(gen_inputs / "one.yaml", [server])), "--out", str(out)]) == 0
    return out


def _same_trace(a_path, b_path) -> None:
    with TraceFile(a_path) as a, TraceFile(b_path) as b:
        assert a.fields == b.fields
        for name in a.fields:
            if name == "latency_s":  # wall-clock timings differ run to run (so do the files' checksums)
                continue
            x, y = a.array(name), b.array(name)
            assert (x.tolist() == y.tolist()) if x.dtype == object else np.array_equal(x, y, equal_nan=True), name


def test_gen_through_the_server_and_a_server_that_dies_mid_run(one_server_trace, gen_inputs, tmp_path):
    """`lsm gen` with the openai backend (answers fully generated under the JSON schema). Then kill
    `lsm serve` while `lsm gen` runs through it: gen ends with one paragraph naming the URL (exit
    2), the journal keeps the finished tick, and after a restart the same command completes a file
    equal to the uninterrupted run's."""
    import os
    import signal

    from lsm.cli import main

    with TraceFile(one_server_trace) as tf:
        v = tf.array("valid")
        assert tf.n_ticks == 2 and v.all() and "channel_dist" not in tf.fields, tf.array("error")[~v]  # constrained: all parse
        d = tf.array("decision_dist")[v]
        assert ((d == 0) | (d == 1)).all() and (d.sum(-1) == 1).all()  # one sample per agent-tick
    port = _free_port()
    serve = [sys.executable, "-m", "lsm", "serve", "--port", str(port)]
    proc, url = _start_server(serve, SERVE_TIMEOUT_S)
    args = _gen_args(gen_inputs, _openai_teacher(tmp_path / "t.yaml", [url]))
    cut = tmp_path / "cut.h5"
    try:
        gen = start_until_journaled(args, cut, tick=0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _, err = gen.communicate(timeout=300)
        last = err.strip().splitlines()[-1]  # (before it: the sentence encoder's loading bar)
        assert gen.returncode == 2 and last.startswith("error: ") and url in last and "Traceback" not in err, err[-1500:]
        journal = tmp_path / "cut.h5.journal"
        assert (journal / "state_0000.json").exists() and not cut.exists()
        proc, url2 = _start_server(serve, SERVE_TIMEOUT_S)
        assert url2 == url
        assert main([*args, "--out", str(cut)]) == 0
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with TraceFile(cut) as b:
        assert json.loads(b.f.attrs["summary"])["resumed_from_tick"] == 1
    _same_trace(one_server_trace, cut)


# -- several servers ----------------------------------------------------------------------
@pytest.fixture
def flaky_pair():
    servers = [_Flaky(), _Flaky()]
    threads = [threading.Thread(target=s.httpd.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield servers
    for s, t in zip(servers, threads):
        s.httpd.shutdown()
        s.httpd.server_close()
        t.join(timeout=10)


def test_requests_spread_over_servers_and_a_failing_one_is_passed_over_at_once(flaky_pair):
    """Two replicas with one request in flight each: 8 requests are shared between them, each
    answer says which server gave it, and `answered()` counts them. A server answering 503 (or
    gone) has its request sent to the other at once, without the backoff wait."""
    a, b = flaky_pair
    cfg = OpenAIConfig(base_urls=[a.url, b.url], model="m", concurrency=1, max_retries=2, backoff_s=5.0)
    backend = OpenAIBackend(cfg)
    gens = backend.generate(HELLO * 8)
    assert {g.server for g in gens} == {a.url, b.url}
    assert backend.answered() == {a.url: len(a.hits), b.url: len(b.hits)}  # the start-up check and the 8 requests
    assert len(a.times(a.CHAT)) + len(b.times(b.CHAT)) == 8
    assert "via 2 servers" in backend.model_name
    b.fail[b.CHAT] = [503] * 100
    t0 = time.monotonic()
    gens = backend.generate(HELLO * 6)
    assert time.monotonic() - t0 < cfg.backoff_s  # no backoff: a failed request moved to the other server
    assert {g.server for g in gens} == {a.url} and all(g.text == '{"ok": 1}' for g in gens)
    b.httpd.shutdown()
    b.httpd.server_close()  # gone: connection refused
    gens = backend.generate(HELLO * 4)
    assert {g.server for g in gens} == {a.url}


def test_every_server_failing_is_one_error_after_the_retries(flaky_pair):
    a, b = flaky_pair
    backend = OpenAIBackend(OpenAIConfig(base_urls=[a.url, b.url], model="m", max_retries=1, backoff_s=0.01))
    a.fail[a.CHAT], b.fail[b.CHAT] = [503] * 10, [503] * 10
    with pytest.raises(BackendError, match=r"HTTP 503: deliberate 503 \(and on every one of the 2 servers\) after 2 tries"):
        backend.generate(HELLO)
    assert len(a.times(a.CHAT)) == len(b.times(b.CHAT)) == 2  # each tried once per round


@pytest.mark.parametrize("bad, field", [({"base_urls": ["ftp://x"]}, "base_urls[0]"),
                                         ({"base_urls": ["http://a/v1", "http://a/v1"]}, "base_urls"),
                                         ({"base_urls": ["http://a/v1"], "base_url": "http://b/v1"}, "base_url")])
def test_bad_server_lists_are_refused(bad, field):
    import re

    from lsm.config import ConfigError, from_dict
    from lsm.data_gen.teacher.config import TeacherConfig

    with pytest.raises(ConfigError, match=re.escape(f"openai.{field}")):
        from_dict(TeacherConfig, {"backend": "openai", "openai": {"model": "m", **bad}}, source="t.yaml", kind="teacher config")


def test_gen_over_two_servers_equals_one_and_survives_one_killed(server, one_server_trace, gen_inputs, tmp_path):
    """`lsm gen` over two `lsm serve` processes, one of them killed once tick 0 is journaled:
    both answered tick 0, the run completes on the other, and the trace is the one a single
    server writes (same seeds)."""
    import os
    import signal

    proc, url = _start_server([sys.executable, "-m", "lsm", "serve", "--port", "0"], SERVE_TIMEOUT_S)
    urls = [server, url]
    cut = tmp_path / "cut.h5"
    try:
        gen = start_until_journaled(_gen_args(gen_inputs, _openai_teacher(tmp_path / "two.yaml", urls, max_retries=2)), cut, tick=0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _, err = gen.communicate(timeout=600)
        assert gen.returncode == 0, err[-1500:]
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with TraceFile(cut) as tf:
        per_server = json.loads(tf.f.attrs["summary"])["requests_per_server"]
    assert set(per_server) == set(urls) and min(per_server.values()) > 0, per_server  # both answered (tick 0)
    _same_trace(one_server_trace, cut)
