"""The society transformer on a tiny hand-made world: shapes, determinism, equivariance, gradients."""
from __future__ import annotations

import torch
from torch.testing import assert_close

from lsm.model.society import SocietyModel, StudentConfig, TickInputs, with_drawn
from lsm.society.scenario import EVENT_FEATURES

N = 5


def _inputs(perm=None):
    g = torch.Generator().manual_seed(0)
    cat = torch.randint(0, 3, (N, 2), generator=g)
    num = torch.rand(N, 2, generator=g)
    persona = torch.randn(N, 384, generator=g)
    ei = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 0, 1, 2, 3, 4]])
    et = torch.tensor([0, 1, 2, 3, 4, 1])
    exposure = torch.tensor([[0, 2, 3, 3], [0, 0, 1, 0]])  # agent 3 sees both events
    inp = dict(identity_cat=cat, identity_num=num, persona_emb=persona, edge_index=ei, edge_type=et,
               event_cat=torch.tensor([[1, 2, 3], [0, 1, 2]]), event_num=torch.tensor([[0.5, 0.9], [-0.8, 0.3]]).repeat(1, len(EVENT_FEATURES))[:, :len(EVENT_FEATURES)],
               event_emb=torch.randn(2, 384, generator=g), exposure=exposure,
               action_emb=torch.randn(3, 384, generator=g))
    if perm is not None:
        inv = torch.argsort(perm)
        for k in ("identity_cat", "identity_num", "persona_emb"):
            inp[k] = inp[k][perm]
        inp["edge_index"] = inv[ei]
        inp["exposure"] = torch.stack([inv[exposure[0]], exposure[1]])
    return TickInputs(**inp)


def _model():
    torch.manual_seed(0)
    return SocietyModel(StudentConfig(dim=16, heads=2, layers=2, categorical_sizes=[3, 3], numeric_dim=2, channels=8))


def test_one_tick_shapes_and_determinism():
    m = _model().eval()
    s0 = m.initial_state(N, 3)
    s1, out = m(_inputs(), s0, return_attention=True)
    assert out.decision_logits.shape == (N, 3) and out.channels.shape == (N, 8) and out.expression_text.shape == (N, 384)
    assert ((out.channels > 0) & (out.channels < 1)).all() and len(out.attention) == 2
    assert out.attention[0].shape == (6 + N, 2)
    s1b, out_b = m(_inputs(), s0)
    assert torch.equal(out.decision_logits, out_b.decision_logits)
    s2, _ = m(_inputs(), s1)  # a second tick from the model's own state
    assert not torch.allclose(s2.memory, s1.memory)


def test_permutation_equivariance():
    m = _model().eval()
    perm = torch.tensor([3, 0, 4, 1, 2])
    _, out = m(_inputs(), m.initial_state(N, 3))
    _, out_p = m(_inputs(perm), m.initial_state(N, 3))
    assert_close(out_p.decision_logits, out.decision_logits[perm])


def test_gradients_reach_every_parameter_over_two_ticks():
    m = _model().train()
    inp = _inputs()
    inp.context_emb, inp.tick_noise = torch.randn(384), torch.randn(N, m.cfg.tick_noise)
    state = m.initial_state(N, 3)
    state.agent_noise = torch.randn(N, m.cfg.agent_noise)
    s, _ = m(inp, state)
    # teacher forcing: half the agents broadcast the teacher's message (the encoder's only use)
    s.expression = torch.cat([m.encode_expression(torch.randn(N // 2, 384)), s.expression[N // 2:]])
    s = with_drawn(s, torch.tensor([0, 2, -1, 1, 1]), 3)  # the drawn decisions are fed back
    s, out = m(inp, s)  # messages of tick 2 come from tick 1's expressions
    loss = out.decision_logits.pow(2).sum() + out.channels.sum() + out.expression_text.pow(2).sum() \
        + out.reasoning_text.sum() + out.salience.sum() + out.stance.sum() + out.stance_sd.sum() + s.latent.sum() + s.memory.sum()
    loss.backward()
    # the posterior of the stochastic latents is trained through the distillation loss (test_train)
    missing = [k for k, p in m.named_parameters() if (p.grad is None or p.grad.abs().sum() == 0) and not k.startswith("posterior.")]
    assert not missing, missing


def test_padded_neighbour_table_gives_the_same_tick_as_the_edge_list():
    from dataclasses import replace

    from lsm.infer.bench import synthetic_inputs

    m = _model().eval()
    inp = synthetic_inputs(m.cfg, 30, neighbors=4, padded_table=True)
    as_list = replace(inp, neighbors=None, neighbor_type=None)
    state = m.initial_state(30, 3)
    state.expression = torch.randn(state.expression.shape)
    with torch.no_grad():
        _, a = m(inp, state)
        _, b = m(as_list, state)
        m.agent_chunk = 7
        _, c = m(inp, state)
    torch.testing.assert_close(a.decision_logits, b.decision_logits)
    torch.testing.assert_close(c.channels, b.channels)
