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


def test_grouped_decode_attention_equals_sdpa():
    """`embedded.attention: gqa` gives SDPA's output for decode-sized queries, with boolean and
    additive masks and several query heads per key/value head."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from lsm.data_gen.teacher.backends.attention import MAX_QUERIES, gqa_attention

    class Attn(torch.nn.Module):
        num_key_value_groups, is_causal = 3, True

    g = torch.Generator().manual_seed(0)
    B, H, Hkv, L, d = 4, 9, 3, 37, 16
    for q in (MAX_QUERIES, 2):  # 2: handed to SDPA
        query = torch.randn(B, H, q, d, generator=g)
        key, value = torch.randn(B, Hkv, L, d, generator=g), torch.randn(B, Hkv, L, d, generator=g)
        allowed = torch.rand(B, 1, q, L, generator=g) > 0.3
        allowed[..., -1] = True
        for mask in (allowed, torch.zeros(B, 1, q, L).masked_fill(~allowed, torch.finfo(torch.float32).min), None):
            ours, _ = gqa_attention(Attn(), query, key, value, mask, scaling=d ** -0.5)
            ref, _ = sdpa_attention_forward(Attn(), query, key, value, mask, scaling=d ** -0.5)
            assert ours.shape == (B, q, H, d)
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
