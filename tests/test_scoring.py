"""The one exact scoring rule (`backends.scoring`) on the CPU: the embedded backend against
per-option forward passes, boundary merges, assistant-prefix continuation, trimming templates;
`lsm serve`'s token API (`/tokenize`, `prompt_logprobs`) giving the `openai` backend the
embedded backend's scores; a server without it scored approximately, counted and reported."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lsm.data_gen.teacher.backends.embedded import EmbeddedBackend, EmbeddedConfig
from lsm.data_gen.teacher.backends.openai_http import BackendError, OpenAIBackend
from lsm.data_gen.teacher.backends.scoring import local_template_trims, prompt_ids, softmax_rows, text_ids
from lsm.data_gen.teacher.backends.server import MODEL_ID, CompletionServer
from lsm.data_gen.teacher.config import OpenAIConfig

TRIMMING = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
"""SmolLM2's ChatML with Llama-3's habit of trimming message content."""

PREFIXED = [{"role": "user", "content": "Maria is a nurse who trusts health agencies. What did she do this week?"},
            {"role": "assistant", "content": "This week Maria decided to "}]
OPTIONS = ["get vaccinated", "wait and see", "refuse"]


@pytest.fixture(scope="module")
def backend():
    return EmbeddedBackend(EmbeddedConfig(batch_size=4))


def _forward_score(backend, ids: list[int], k: int) -> float:
    with torch.inference_mode():
        lp = torch.log_softmax(backend.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return sum(float(lp[j - 1, ids[j]]) for j in range(len(ids) - k, len(ids)))


def test_scores_are_summed_logprobs_of_joined_ids_even_where_the_tokenizer_would_merge(backend):
    """Rule 2: an option's ids are joined to the prompt's. After a prefix ending in a space the
    tokenizer would merge " get" if the two were tokenised together; the score is the summed
    log-probability of exactly the joined sequence, as a forward pass per option computes it."""
    tok = backend.tokenizer
    prompt = backend.prompt_ids(PREFIXED)
    merged = 0
    want = []
    for o in OPTIONS:
        joined = prompt + text_ids(tok, o)
        natural = text_ids(tok, tok.decode(prompt) + o)
        merged += natural != joined
        want.append(_forward_score(backend, joined, len(joined) - len(prompt)))
    assert merged >= 1  # the case exists: the trailing space and the word merge when tokenised together
    got = backend.option_logprobs([PREFIXED], [OPTIONS])[0]
    np.testing.assert_allclose(got, want, atol=2e-3)
    np.testing.assert_allclose(backend.score_options([PREFIXED], [OPTIONS])[0], softmax_rows([np.array(want)])[0], atol=1e-3)


def test_an_assistant_prefix_is_continued_not_answered(backend):
    """Rule 1: the turns before the prefix end with the assistant header, the prefix's own ids
    follow, nothing closes the turn; generation continues the sentence."""
    tok = backend.tokenizer
    conv = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "The capital of France is"}]
    ids = backend.prompt_ids(conv)
    head = tok.apply_chat_template(conv[:1], tokenize=False, add_generation_prompt=True)
    assert ids == text_ids(tok, head) + text_ids(tok, "The capital of France is")
    assert tok.decode(ids).endswith("<|im_start|>assistant\nThe capital of France is")
    text = backend.generate([conv], temperature=0.0, max_tokens=6)[0].text
    assert "Paris" in text and not text.lstrip().startswith("The capital"), text


def test_a_trimming_template_is_detected_and_cannot_trim_a_prefix(backend):
    tok = backend.tokenizer
    assert not local_template_trims(tok)  # SmolLM2's ChatML keeps content as it is
    assert local_template_trims(tok, TRIMMING)
    ids = prompt_ids(tok, PREFIXED, chat_template=TRIMMING)  # the prefix never goes through the template
    assert ids[-len(text_ids(tok, PREFIXED[1]["content"])):] == text_ids(tok, PREFIXED[1]["content"])
    assert tok.decode(ids).endswith("decided to ")


@pytest.fixture(scope="module")
def serve(backend):
    """`lsm serve`'s server on loopback, in this process (the backend's weights shared):
    `serve(**kwargs)` starts one and returns its URL."""
    servers = []

    def start(**kwargs) -> str:
        srv = CompletionServer(backend, port=0, **kwargs)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _client(url: str, **kw) -> OpenAIBackend:
    return OpenAIBackend(OpenAIConfig(base_url=url, model=MODEL_ID, concurrency=2, max_retries=0, **kw))


def test_lsm_serve_gives_the_openai_backend_the_embedded_scores(backend, serve):
    """Through `/tokenize` and `prompt_logprobs` the openai backend builds the same token ids and
    sums the same log-probabilities as the embedded backend (no approximate score); a prefix is
    continued through token ids and equals the embedded continuation for the same seed."""
    client = _client(serve())
    convs = [PREFIXED, [{"role": "system", "content": "Rate from 0 to 10."},
                        {"role": "user", "content": "How much do you trust the health agency?"},
                        {"role": "assistant", "content": '{"ratings": {"trust": '}]]
    opts = [OPTIONS, ["0,", "5,", "10,"]]
    assert client.prompt_ids(convs[1]) == backend.prompt_ids(convs[1])
    got = client.option_logprobs(convs, opts)
    want = backend.option_logprobs(convs, opts)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-3)
    assert client.token_api() and client.approximate_scores == 0 and client.scoring_note.startswith("exact")
    assert client.template_trims is False
    a = client.generate([PREFIXED], temperature=0.7, seed=9, max_tokens=8)[0]
    b = backend.generate([PREFIXED], temperature=0.7, seed=9, max_tokens=8)[0]
    assert a.text == b.text and a.prompt_tokens == b.prompt_tokens


def test_a_server_whose_template_trims_is_detected_and_worked_around(backend, serve):
    client = _client(serve(chat_template=TRIMMING))
    assert client.token_api() and client.template_trims is True
    assert "trims answer prefixes, so prefixes are sent as token ids" in client.scoring_note
    conv = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "It is "}]
    ids = client.prompt_ids(conv)
    assert ids[-len(text_ids(backend.tokenizer, "It is ")):] == text_ids(backend.tokenizer, "It is ")  # the space survives


def test_a_server_without_the_token_api_is_approximate_counted_and_never_silent(serve, capsys):
    """No /tokenize, no prompt_logprobs: `exact` is refused with advice; `auto` walks the top
    next tokens and counts every score. With a template that trims the prefix's trailing space,
    no option matches: a warning says so instead of a silent uniform distribution."""
    url = serve(token_api=False)
    with pytest.raises(BackendError, match=r"scoring is exact but .*/tokenize.*set openai.scoring: walk"):
        _client(url, scoring="exact").score_options([PREFIXED], [OPTIONS])
    client = _client(url)
    plain = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "The capital of France is"}]
    cities = [" Paris", " Rome", " Berlin"]
    p = client.score_options([plain, plain], [cities, cities[:2]])
    assert not client.token_api() and client.approximate_scores == 5 and client.scoring_note.startswith("approximate")
    assert all(abs(q.sum() - 1) < 1e-9 for q in p) and p[0].max() > 0.5
    assert "warning" not in capsys.readouterr().err
    trimmed = _client(serve(token_api=False, chat_template=TRIMMING))
    q = trimmed.score_options([PREFIXED], [OPTIONS])[0]  # "decided to " arrives as "decided to": " visit", " work", ...
    assert trimmed.approximate_scores == 3 and trimmed.floor_hits == 3 and np.allclose(q, 1 / 3)
    err = capsys.readouterr().err
    assert "no option of ['get vaccinated', 'wait and see', 'refuse'] is among the server's top 20" in err and "trim" in err


def test_the_teacher_reports_how_it_scored(tmp_path, serve):
    """`lsm gen` through `lsm serve`: the run summary names the scoring and counts approximate
    scores (zero here), and the distributions equal the embedded teacher's for the same seeds."""
    import json

    import yaml

    from lsm.cli import main
    from lsm.config import shipped
    from lsm.society.store import TraceFile
    from lsm.society.world import build_world, save_world

    save_world(build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=1, seed=5), tmp_path / "w.h5")
    sc = yaml.safe_load(shipped("scenarios", "vaccine_campaign.yaml").read_text())
    sc["ticks"], sc["events"] = 1, [e for e in sc["events"] if e["tick"] < 1]
    sc["channels"] = [{"name": "trust_official", "description": "trust in the official health agency"}]  # 3 + 11 + 3 scores
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sc))
    common = {"answer": "texts", "max_tokens": 200, "chunk": 1, "limits": {"reasoning": 80, "message": 60, "memory": 40}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump({"backend": "openai", **common, "openai": {
        "base_url": serve(), "model": MODEL_ID, "concurrency": 2, "max_retries": 0}}))
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({"backend": "embedded", **common}))
    for name in ("o", "e"):
        assert main(["gen", "--world", str(tmp_path / "w.h5"), "--scenario", str(tmp_path / "s.yaml"), "--teacher",
                     str(tmp_path / f"{name}.yaml"), "--quiet", "true", "--out", str(tmp_path / f"{name}.h5")]) == 0
    with TraceFile(tmp_path / "o.h5") as o, TraceFile(tmp_path / "e.h5") as e:
        summary = json.loads(o.f.attrs["summary"])
        assert summary["scoring"].startswith("exact") and summary["approximate_scores"] == 0
        assert o.array("reasoning").tolist() == e.array("reasoning").tolist() and o.array("valid").all()
        np.testing.assert_allclose(o.array("decision_dist"), e.array("decision_dist"), atol=0.02)
        np.testing.assert_allclose(o.array("channel_dist").astype(np.float32), e.array("channel_dist").astype(np.float32), atol=0.02)


def test_vllm_data_parallel_in_one_process_is_refused_with_the_way_to_scale(tmp_path, capsys):
    """`data_parallel_size: 2` on the offline engine: one paragraph (exit 2) pointing at `vllm
    serve --data-parallel-size` and the shipped config, before any engine starts; that config loads."""
    import yaml

    from lsm.cli import main
    from lsm.config import CONFIG_ROOT, ConfigError, load_config, shipped
    from lsm.data_gen.teacher.config import TeacherConfig

    data = yaml.safe_load(shipped("teacher", "vllm.yaml").read_text())
    data["vllm"]["data_parallel_size"] = 2
    bad = tmp_path / "dp.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"data_parallel_size.*vllm serve MODEL --data-parallel-size N.*vllm_serve_dp.yaml"):
        load_config(TeacherConfig, bad, kind="teacher config")
    world = CONFIG_ROOT.parent / "data_gen/corpus/n20/world.h5"
    assert main(["gen", "--world", str(world), "--scenario", "vaccine_campaign", "--teacher", str(bad),
                 "--out", str(tmp_path / "t.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--data-parallel-size" in err and "Traceback" not in err
    cfg = load_config(TeacherConfig, shipped("teacher", "vllm_serve_dp.yaml"), kind="teacher config")
    assert cfg.backend == "openai" and cfg.openai is not None and cfg.openai.scoring == "exact"


def test_scoring_after_generation_reuses_the_prompt_cache_and_equals_a_fresh_pass(backend):
    """Generation keeps each prompt's keys and values; scoring an answer's options after that
    prompt then encodes only the answer prefix and the options (fewer scoring-forward tokens)
    and gives the log-probabilities a pass from scratch gives, for several agents, a prefix
    shared by two of an agent's questions, and a prompt of a different length in one batch."""
    users = ["Maria is a nurse who trusts health agencies. What did she do this week?",
             "Tom drives a night bus and distrusts every official campaign he has ever seen on TV. What did he do?",
             "Ana, 71, retired teacher."]
    base = [[{"role": "system", "content": "You are a person in a small town."}, {"role": "user", "content": u}] for u in users]
    backend._prompt_kv.clear()
    gens = backend.generate(base, temperature=0.7, seed=4, max_tokens=6)
    assert len(backend._prompt_kv) == 3 and all(tuple(backend.prompt_ids(c)) in backend._prompt_kv for c in base)
    convs, opts = [], []
    for c, g in zip(base, gens):
        convs.append(c + [{"role": "assistant", "content": '{"reasoning": ' + repr(g.text) + ', "decision": "'}])
        opts.append(['vaccinate"', 'wait"', 'refuse"'])
        convs.append(c + [{"role": "assistant", "content": '{"reasoning": ' + repr(g.text) + ', "ratings": {"trust": '}])
        opts.append(["0,", "5,", "10,"])
    n0 = backend.scoring_tokens
    warm = backend.option_logprobs(convs, opts)
    n1 = backend.scoring_tokens
    backend._prompt_kv.clear()
    cold = backend.option_logprobs(convs, opts)
    warm_tokens, cold_tokens = n1 - n0, backend.scoring_tokens - n1
    for w, c in zip(warm, cold):
        np.testing.assert_allclose(w, c, atol=2e-3)
    heads = [backend.prompt_ids(c) for c in base]
    head_nodes = len({tuple(h[:i]) for h in heads for i in range(1, len(h) + 1)})  # the prompts' trie (a shared system prompt once)
    assert warm_tokens == cold_tokens - head_nodes  # the prompts encoded by generation, not again


def test_generation_from_a_shared_prefix_equals_generation_without_it(backend):
    """The prompts' shared leading tokens (the system turn) encoded once and reused by every
    row: the same sampled texts for the same seed, prompt keys and values equal to a pass
    without it, and a kept prefix reused by the next batch."""
    system = ("You play one person in a simulated society. A new vaccine is offered in town; people talk "
              "about it at work and at home. Each week you answer as that person.")
    users = ["You are Maria, a nurse who trusts health agencies. What do you do?",
             "You are Tom, a night bus driver who distrusts every official campaign.",
             "You are Ana, 71, a retired teacher.", "You are Li, a student."]
    convs = [[{"role": "system", "content": system}, {"role": "user", "content": u}] for u in users]
    old = backend.config.shared_prefix
    try:
        backend._prefix_kv.clear()
        backend._prompt_kv.clear()
        backend.config.shared_prefix = 0
        plain = backend.generate(convs, temperature=0.8, seed=5, max_tokens=16)
        assert not backend._prefix_kv
        kv_plain = dict(backend._prompt_kv)
        backend._prompt_kv.clear()
        backend.config.shared_prefix = 32
        shared = backend.generate(convs, temperature=0.8, seed=5, max_tokens=16)
        assert len(backend._prefix_kv) == 1
        prefix = next(iter(backend._prefix_kv))
        assert len(prefix) >= 32 and all(tuple(backend.prompt_ids(c)[: len(prefix)]) == prefix for c in convs)
        assert [g.text for g in shared] == [g.text for g in plain]
        assert [g.prompt_tokens for g in shared] == [g.prompt_tokens for g in plain]
        assert set(backend._prompt_kv) == set(kv_plain)
        for key, layers in kv_plain.items():
            for (k0, v0), (k1, v1) in zip(layers, backend._prompt_kv[key]):
                assert k0.shape == k1.shape
                np.testing.assert_allclose(k1.numpy(), k0.numpy(), atol=2e-4)
                np.testing.assert_allclose(v1.numpy(), v0.numpy(), atol=2e-4)
        backend.generate(convs[::-1], temperature=0.8, seed=5, max_tokens=4)  # another batch: the kept prefix serves
        assert list(backend._prefix_kv) == [prefix]
    finally:
        backend.config.shared_prefix = old


def test_precision_is_a_choice_recorded_in_the_model_name(backend):
    """`embedded.dtype` / `scoring_dtype`: bfloat16 generation and scoring share one module, a
    float32 scorer beside bfloat16 generation is a second one, `auto` follows the CPU, and
    bfloat16 distributions stay near float32's (docs/results.md#precision measures how near on a teacher run)."""
    import torch

    from lsm.data_gen.teacher.backends.embedded import native_bf16, resolve_dtype

    assert resolve_dtype("auto") == ("bfloat16" if native_bf16() else "float32") and resolve_dtype("float32") == "float32"
    with pytest.raises(ValueError, match="embedded.dtype"):
        resolve_dtype("float16")
    bf = EmbeddedBackend(EmbeddedConfig(batch_size=4, dtype="bfloat16", scoring_dtype="bfloat16"))
    assert bf.scorer is bf.model and bf.model.dtype == torch.bfloat16 and bf.model_name.endswith(", bfloat16)")
    mixed = EmbeddedBackend(EmbeddedConfig(batch_size=4, dtype="bfloat16"))
    assert mixed.scorer is not mixed.model and mixed.scorer.dtype == torch.float32 and "scoring float32" in mixed.model_name
    assert backend.model_name.endswith(".gguf)")  # float32: unmarked, as corpora before the option
    conv = [{"role": "system", "content": "You are a person in a small town."},
            {"role": "user", "content": "A new vaccine is offered. What do you do?"},
            {"role": "assistant", "content": "I thought about it and decided to "}]
    opts = [["get vaccinated", "wait and see", "refuse"]]
    p32 = backend.score_options([conv], opts)[0]
    p16 = bf.score_options([conv], opts)[0]
    assert np.abs(p32 - p16).sum() < 0.15, (p32, p16)
