"""The `openai` backend against a real OpenAI-compatible server process on loopback
(`lsm serve`: the embedded SmolLM2 behind /v1/chat/completions), and the vLLM backend's skip."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import yaml

from lsm.config import shipped
from lsm.data_gen.teacher.backends.openai_http import BackendError, OpenAIBackend
from lsm.data_gen.store import TraceFile
from lsm.data_gen.gen import generate
from lsm.data_gen.teacher.config import OpenAIConfig
from lsm.data_gen.world import build_world, save_world


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen([sys.executable, "-m", "lsm", "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "serving <model> on http://127.0.0.1:PORT/v1" once the model is loaded
    if "serving" not in line:
        proc.kill()
        pytest.fail(f"lsm serve did not start: {line!r}")
    yield line.split(" on ")[1].strip()
    proc.terminate()
    proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_down_server_is_a_clear_error():
    cfg = OpenAIConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m", max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match="cannot reach the server.*after 2 tries"):
        OpenAIBackend(cfg)


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


def test_gen_through_the_server(server, tmp_path):
    """`lsm gen` with the openai backend (answers fully generated under the JSON schema)."""
    save_world(build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=3, seed=5), tmp_path / "w.h5")
    sc = yaml.safe_load(shipped("scenarios", "vaccine_campaign.yaml").read_text())
    sc["ticks"], sc["events"] = 2, [e for e in sc["events"] if e["tick"] < 2]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sc))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "backend": "openai", "answer": "full", "max_tokens": 300, "chunk": 3,
        "openai": {"base_url": server, "model": "smollm2-135m-instruct", "concurrency": 2},
        "limits": {"reasoning": 80, "message": 60, "memory": 40}}))
    s = generate(tmp_path / "w.h5", tmp_path / "s.yaml", tmp_path / "t.yaml", seed=0, out=tmp_path / "o.h5", quiet=True)
    assert s["agent_ticks"] == 6
    with TraceFile(tmp_path / "o.h5") as tf:
        v = tf.array("valid")
        assert v.any() and "channel_dist" not in tf.fields
        d = tf.array("decision_dist")[v]
        assert ((d == 0) | (d == 1)).all() and (d.sum(-1) == 1).all()  # one sample per agent-tick


def test_vllm_backend_needs_a_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU; none on this machine")
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'lsm[vllm]')")
    from lsm.data_gen.teacher.backends.vllm_engine import VLLMBackend
    from lsm.data_gen.teacher.config import VLLMConfig

    b = VLLMBackend(VLLMConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct", max_model_len=2048, gpu_memory_utilization=0.3))
    g = b.generate([[{"role": "user", "content": "Say hi in JSON."}]], schema={"type": "object", "properties": {"hi": {"type": "string"}}})
    assert "hi" in json.loads(g[0].text)
    p = b.score_options([[{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "It is"}]], [[" Paris", " Rome"]])
    assert p[0][0] > 0.5
