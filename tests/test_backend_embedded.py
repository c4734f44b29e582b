"""The embedded SmolLM2 backend, for real (no mock): loads from the PyPI-shipped GGUF."""
from __future__ import annotations

import numpy as np
import pytest

from lsm.data_gen.teacher.backends.embedded import EmbeddedBackend, EmbeddedConfig


@pytest.fixture(scope="module")
def backend():
    return EmbeddedBackend(EmbeddedConfig(batch_size=4))


def test_score_options_reads_real_logprobs(backend):
    conv = [{"role": "user", "content": "What is the capital of France? Answer with one word."},
            {"role": "assistant", "content": "The capital of France is"}]
    p = backend.score_options([conv, conv], [[" Paris", " banana"], [" banana", " Paris"]])
    assert p[0].shape == (2,) and abs(p[0].sum() - 1) < 1e-9
    assert p[0][0] > 0.9 and p[1][1] > 0.9
    np.testing.assert_allclose(p[0], p[1][::-1], atol=1e-6)  # order of options does not matter


def test_scores_are_batch_invariant(backend):
    conv = [{"role": "user", "content": "Maria is a nurse who trusts health agencies."},
            {"role": "assistant", "content": "This week Maria decided to"}]
    opts = [" get vaccinated", " wait and see", " refuse"]
    alone = backend.option_logprobs([conv], [opts])[0]
    other = [{"role": "user", "content": "A much longer, unrelated prompt about the weather in a small town by the sea."},
             {"role": "assistant", "content": "Tomorrow it will"}]
    batched = backend.option_logprobs([other, conv], [[" rain", " snow"], opts])[1]
    np.testing.assert_allclose(alone, batched, atol=1e-3)


def test_generate_is_seeded_and_accounts_tokens(backend):
    convs = [[{"role": "user", "content": "Say hello to your neighbour in one short sentence."}]] * 2
    a = backend.generate(convs, temperature=0.8, seed=3, max_tokens=12)
    b = backend.generate(convs, temperature=0.8, seed=3, max_tokens=12)
    assert [g.text for g in a] == [g.text for g in b]
    assert all(g.text.strip() for g in a)
    assert all(0 < g.completion_tokens <= 12 and g.prompt_tokens > 5 and g.latency_s > 0 for g in a)
