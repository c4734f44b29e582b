"""`make gpu-smoke`: the vLLM teacher path against the embedded backend, on a GPU.

Skipped (with the reason) where there is no CUDA GPU or no vLLM: everywhere this project has
been developed so far, so the vLLM path is unexecuted until someone runs this where both exist
(`pip install 'lsm[vllm]'`, then `make gpu-smoke`). vLLM loads the embedded model's own
dequantised weights from the local cache (`embedded.local_model_dir`: no model hub), so both
backends score with the same weights and the same chat template. Checked:

- JSON generation under the teacher's answer schema parses and validates;
- an assistant prefix is continued (the prompt's ids end with the prefix's own ids);
- the same seed gives the same answers;
- `score_options` on the teacher's real prefixes (categorical decision, numeric decision,
  channel rating) agrees with the embedded backend within 0.05 nats per option, and no score is
  approximate.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

NATS = 0.05
"""Largest difference allowed between vLLM's and the embedded backend's option log-probabilities
(log-softmax over options; float32 on both sides, different kernels)."""


@pytest.fixture(scope="module")
def engines():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine: the vLLM smoke test needs one")
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'lsm[vllm]')")
    from lsm.data_gen.teacher.backends.embedded import EmbeddedBackend, local_model_dir
    from lsm.data_gen.teacher.backends.vllm_engine import VLLMBackend
    from lsm.data_gen.teacher.config import VLLMConfig

    model = str(local_model_dir())
    # no prefix caching: a cached prefill is another computation, and the seeded-repeat check compares two runs
    vllm = VLLMBackend(VLLMConfig(model=model, dtype="float32", max_model_len=2048, gpu_memory_utilization=0.3, max_num_seqs=64,
                                  enable_prefix_caching=False))
    return vllm, EmbeddedBackend()


def _teacher_prompts(name: str):
    from lsm.config import shipped
    from lsm.society.scenario import load_scenario
    from lsm.data_gen.teacher import prompts as ag

    sc = load_scenario(shipped("scenarios", f"{name}.yaml"))
    user = ag.user_prompt(sc, 1, "Maria G.", "Maria G., aged 34, a nurse in a small town.", ag.Memory(), 3,
                          [ag.event_line("health agency", "The new vaccine is available at every pharmacy.")],
                          [("Tom", "your friend", "I got mine yesterday, no problem at all.")])
    return sc, ag.conversation(ag.system_prompt(sc, "texts"), user), ag


def test_json_generation_continuation_and_seeds(engines):
    from lsm.data_gen.teacher.backends.scoring import text_ids

    vllm, _ = engines
    sc, conv, ag = _teacher_prompts("vaccine_campaign")
    schema = ag.answer_schema(sc, "texts", ag.TextLimits())
    gens = vllm.generate([conv] * 4, schema=schema, temperature=0.7, seed=5, max_tokens=200)
    for g in gens:
        ag.validate(ag.extract_json(g.text), sc, "texts")  # raises if it does not parse and validate
    again = vllm.generate([conv] * 4, schema=schema, temperature=0.7, seed=5, max_tokens=200)
    assert [g.text for g in gens] == [g.text for g in again]
    prefixed = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "The capital of France is"}]
    ids = vllm.prompt_ids(prefixed)
    assert ids[-len(text_ids(vllm.tokenizer, "The capital of France is")):] == text_ids(vllm.tokenizer, "The capital of France is")
    out = vllm.generate([prefixed], temperature=0.0, max_tokens=8)[0].text
    assert "Paris" in out and not out.lstrip().startswith("The capital"), out


@pytest.mark.parametrize("name", ["vaccine_campaign", "guessing_game"])
def test_scores_agree_with_the_embedded_backend(engines, name):
    vllm, embedded = engines
    sc, conv, ag = _teacher_prompts(name)
    reasoning = "My friend got it without trouble and the agency is usually right, so I lean towards it."
    numeric = sc.actions.type == "numeric"
    convs = [conv + [{"role": "assistant", "content": (ag.numeric_decision_prefix if numeric else ag.decision_prefix)(reasoning)}]]
    opts = [ag.decision_options(sc)]
    for c in sc.channel_names:
        convs.append(conv + [{"role": "assistant", "content": ag.rating_prefix(reasoning, c)}])
        opts.append(ag.RATING_OPTIONS)
    t0 = time.perf_counter()
    a = vllm.option_logprobs(convs, opts)
    t_vllm = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = embedded.option_logprobs(convs, opts)
    t_emb = time.perf_counter() - t0
    worst = 0.0
    for x, y in zip(a, b):
        lx, ly = x - np.logaddexp.reduce(x), y - np.logaddexp.reduce(y)  # log-softmax over the options
        worst = max(worst, float(np.abs(lx - ly).max()))
    print(json.dumps({"scenario": name, "sequences": sum(map(len, opts)), "worst_nats": round(worst, 4),
                      "vllm_s": round(t_vllm, 3), "embedded_s": round(t_emb, 3)}))
    assert worst <= NATS
    assert vllm.approximate_scores == 0
