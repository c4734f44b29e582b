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


SYSTEM = "You play one person in a small town where a new vaccine is offered. Answer briefly."
USERS = ["You are Maria, a nurse who trusts health agencies. What do you do this week?",
         "You are Tom.", "You are Ana, 71, a retired teacher who reads three newspapers every morning.",
         "You are Li, a student.", "You are Sam, who drives a night bus and distrusts every official campaign."]


def _configured(backend, **values):
    """Set backend.config fields; returns the old values (restore with `_configured(backend, **old)`)."""
    old = {k: getattr(backend.config, k) for k in values}
    for k, v in values.items():
        setattr(backend.config, k, v)
    return old


def test_decode_loop_greedy_equals_model_generate(backend):
    """The decode loop (left padded rows joining and leaving a running batch, a shared prefix,
    in-place cache) takes the tokens `model.generate` takes for each prompt alone."""
    import torch

    convs = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": u}] for u in USERS]
    old = _configured(backend, batch_size=3, continuous=True, refill=1)
    try:
        got = backend.generate_ids([backend.prompt_ids(c) for c in convs], temperature=0, max_tokens=14)
    finally:
        _configured(backend, **old)
    tok = backend.tokenizer
    for c, g in zip(convs, got):
        ids = torch.tensor([backend.prompt_ids(c)])
        with torch.inference_mode():
            want = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=14,
                                          do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        stop = tok.eos_token_id in want
        want = want[: want.index(tok.eos_token_id) + 1] if stop else want
        assert g.text == tok.decode(want, skip_special_tokens=True) and g.completion_tokens == len(want)
        assert g.finish_reason == ("stop" if stop else "length")


def test_answers_do_not_depend_on_batching(backend):
    """Each answer samples from its own generator (seed, index): batch size, static or
    continuous batches and `refill` leave the answers as they are (up to the float rounding of
    differently shaped matrix products, which may flip a rare token), and the seed moves them."""
    convs = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": u}] for u in USERS]
    runs = []
    for batching in ({"batch_size": 5, "continuous": False}, {"batch_size": 2, "continuous": True, "refill": 1},
                     {"batch_size": 3, "continuous": True, "refill": 2}):
        old = _configured(backend, **batching)
        try:
            runs.append([g.text for g in backend.generate(convs, temperature=0.9, seed=11, max_tokens=12)])
        finally:
            _configured(backend, **old)
    for other in runs[1:]:
        assert sum(a == b for a, b in zip(runs[0], other)) >= len(convs) - 1
    reseeded = [g.text for g in backend.generate(convs, temperature=0.9, seed=12, max_tokens=12)]
    assert sum(a != b for a, b in zip(runs[0], reseeded)) >= 3


def test_row_generators_depend_on_seed_and_index_only():
    import torch

    from lsm.data_gen.teacher.backends.decode_loop import row_generator

    draw = lambda s, i: torch.rand(4, generator=row_generator(s, i))  # noqa: E731
    assert torch.equal(draw(3, 7), draw(3, 7))
    assert not torch.equal(draw(3, 7), draw(3, 8)) and not torch.equal(draw(3, 7), draw(4, 7))
    assert not torch.equal(draw(-1, 0), draw(0, 0))


def test_patterned_texts_close_only_on_a_word(backend):
    """A schema `pattern` (the teacher's: a word of two letters somewhere): the text opens with
    a token holding a letter, may not close before it matches, and its last token matches on
    its own; generated answers then always pass the validator's text rule."""
    import json
    import re

    from lsm.data_gen.teacher import prompts as ag
    from lsm.data_gen.teacher.backends.constrained import FreeText, FreeVocab, TemplateWalker, compile_schema

    tok = backend.tokenizer
    schema = {"type": "object", "properties": {"memory": {"type": "string", "maxLength": 16, "pattern": ag.TEXT_PATTERN}}}
    template = compile_schema(schema, tok)
    text = next(s for s in template if isinstance(s, FreeText))
    assert text.pattern == ag.TEXT_PATTERN and text.max_tokens == 4
    vocab = FreeVocab.of(tok)
    walker = TemplateWalker(template, tok.eos_token_id, vocab)
    row = walker.start()
    while walker.allowed([row], len(tok))[0].sum() == 1 and not (row.seg < len(template) and template[row.seg] is text):
        walker.advance(row, int(walker.allowed([row], len(tok))[0].nonzero()[0]))  # the forced '{"memory": "'
    V = len(tok)
    opening = walker.allowed([row], V)[0]
    assert torch_equal(opening, vocab.letter) and not opening[vocab.quote]
    assert not opening[tok.convert_tokens_to_ids("1")] and opening[tok(" I", add_special_tokens=False)["input_ids"][0]]
    digits = tok("1, 2", add_special_tokens=False)["input_ids"]
    for t in digits[:2]:  # "1," ... does not match yet: no closing quote
        walker.advance(row, t)
        assert not walker.allowed([row], V)[0, vocab.quote]
    walker.advance(row, digits[2])  # the last free token: only tokens that match alone
    last = walker.allowed([row], V)[0]
    assert torch_equal(last, vocab.matching(ag.TEXT_PATTERN)) and not last[tok.convert_tokens_to_ids("1")]
    walker.advance(row, tok(" yes", add_special_tokens=False)["input_ids"][0])
    assert walker.allowed([row], V)[0].nonzero().flatten().tolist() == [vocab.quote]
    # generated: memory right after the stance number, where the small model used to write digits
    sc_schema = {"type": "object", "properties": {"stance": {"type": "integer", "minimum": -5, "maximum": 5},
                                                  "memory": {"type": "string", "maxLength": 40, "pattern": ag.TEXT_PATTERN}}}
    convs = [[{"role": "user", "content": f"Reply with JSON: a stance number, then a memory. Case {i}: 1, 2, 3, 4."}] for i in range(6)]
    for g in backend.generate(convs, schema=sc_schema, seed=2, max_tokens=40):
        assert re.search(ag.TEXT_PATTERN, json.loads(g.text)["memory"])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
