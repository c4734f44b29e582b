"""The student's pathways for the planted mechanisms, on hand-computed cases: the social sum
(tie-type gains on what a sender says, a receiver gain, a sum that is not renormalised), the
event sum (valence × credibility, events add up), the stance drawn given the decision, and the
channels' per-agent tilt and per-tick noise."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lsm.model.society import Draws, SocietyModel, StudentConfig, TickInputs
from lsm.society.scenario import EVENT_FEATURES
from lsm.society.world.graph import EDGE_TYPES

N, A, X = 4, 3, 8
HOUSEHOLD, WEAK = EDGE_TYPES.index("household"), EDGE_TYPES.index("weak_tie")


def _model(**kw) -> SocietyModel:
    torch.manual_seed(0)
    cfg = StudentConfig(dim=16, heads=2, layers=1, latent_dim=4, memory_dim=8, slots=2, slot_dim=8, expression_dim=X,
                        categorical_sizes=[3], numeric_dim=0, channels=2, **kw)
    return SocietyModel(cfg).eval()


def _inputs(neighbors, types, events=None, exposure=None) -> TickInputs:
    g = torch.Generator().manual_seed(1)
    F = len(EVENT_FEATURES)
    ev_num = torch.zeros(0, F) if events is None else events
    return TickInputs(identity_cat=torch.tensor([[0], [1], [2], [0]]), identity_num=torch.zeros(N, 0),
                      persona_emb=torch.zeros(N, 384), edge_index=torch.zeros(2, 0, dtype=torch.long),
                      edge_type=torch.zeros(0, dtype=torch.long), event_cat=torch.zeros(len(ev_num), 3, dtype=torch.long),
                      event_num=ev_num, event_emb=torch.zeros(len(ev_num), 384),
                      exposure=torch.zeros(2, 0, dtype=torch.long) if exposure is None else exposure,
                      action_emb=torch.randn(A, 384, generator=g), neighbors=torch.tensor(neighbors),
                      neighbor_type=torch.tensor(types))


def _silence_attention(m: SocietyModel) -> None:
    """Zero the graph attention's and the token's share of what is heard: only the social sum's
    direct routes (logits, stance, channels) remain."""
    with torch.no_grad():
        for block in m.blocks:
            block.graph.o.weight.zero_()
            block.graph.o.bias.zero_()
        m.direct_in.weight.zero_()


def test_the_social_sum_gives_the_logit_shift_the_formula_predicts():
    m = _model(event_sum=False)
    _silence_attention(m)
    ss = m.social_sum
    with torch.no_grad():  # z_0 = (1 + 0.5) · Σ_j β_type · s_j: component 0 reads the sender's stance
        ss.message.weight.zero_()
        ss.message.weight[0, X] = 1.0
        ss.type_gain.weight.zero_()
        ss.type_gain.weight[HOUSEHOLD, 0], ss.type_gain.weight[WEAK, 0] = 1.6, 0.3
        ss.receiver.weight.zero_()
        ss.receiver.bias.fill_(0.5)
    state = m.initial_state(N, A)
    state.stance = torch.tensor([0.0, 0.8, -0.5, 0.3])
    state.expression = torch.randn(N, X)  # what else senders say: the sum reads only their stance here
    heard = _inputs([[1, 2], [-1, -1], [-1, -1], [1, -1]], [[HOUSEHOLD, WEAK], [0, 0], [0, 0], [WEAK, 0]])
    alone = _inputs([[-1, -1]] * N, [[0, 0]] * N)
    _, out = m(heard, state)
    _, base = m(alone, state)
    want = torch.tensor([1.5 * (1.6 * 0.8 + 0.3 * -0.5), 0.0, 0.0, 1.5 * 0.3 * 0.8])
    assert_close(out.direct[:, 0], want)
    assert_close(out.direct[:, 1:], torch.zeros(N, m.cfg.direct_dim - 1))
    lean = m.direct_lean(m.action_keys(heard.action_emb))  # (A, P): each action's lean on z
    assert_close(out.decision_logits - base.decision_logits, want[:, None] * lean[:, 0][None, :], atol=1e-5, rtol=1e-5)
    # not renormalised: a second household sender of the same stance doubles the push (attention would not)
    two = _inputs([[1, 1], [-1, -1], [-1, -1], [-1, -1]], [[HOUSEHOLD, HOUSEHOLD], [0, 0], [0, 0], [0, 0]])
    one = _inputs([[1, -1], [-1, -1], [-1, -1], [-1, -1]], [[HOUSEHOLD, 0], [0, 0], [0, 0], [0, 0]])
    assert_close(m(two, state)[1].direct[0, 0], 2 * m(one, state)[1].direct[0, 0])
    # the receiver's gain reads its identity: a per-category scale (conformity)
    with torch.no_grad():
        ss.receiver.weight.normal_()
    z = m(heard, state)[1].direct[:, 0]
    assert not torch.allclose(z / want.clamp(min=1e-9), torch.full((N,), 1.5))


def test_the_social_sum_is_the_same_on_the_edge_list_and_the_padded_table():
    m = _model()
    ss = m.social_sum
    g = torch.Generator().manual_seed(3)
    messages, u = torch.randn(N, X + 1, generator=g), torch.randn(N, 16, generator=g)
    with torch.no_grad():
        ss.receiver.weight.normal_(generator=g)
        ss.type_gain.weight.normal_(generator=g)
    nb = torch.tensor([[1, 2, -1], [0, -1, -1], [-1, -1, -1], [0, 1, 2]])
    ty = torch.tensor([[0, 3, 0], [1, 0, 0], [0, 0, 0], [4, 2, 1]])
    i, k = torch.nonzero(nb >= 0, as_tuple=True)
    edges = torch.stack([nb[i, k], i])
    assert_close(ss(messages, nb, ty, u), ss.forward_edges(messages, edges, ty[i, k], u))


def test_the_event_sum_forms_valence_times_credibility_and_events_add_up():
    m = _model(social_sum=False)
    es = m.event_sum
    v, c = EVENT_FEATURES.index("valence"), EVENT_FEATURES.index("credibility")
    with torch.no_grad():  # push_0 = valence · credibility: the product's column of φ(f)
        es.features.weight.zero_()
        es.features.bias.zero_()
        es.text.weight.zero_()
        col = len(EVENT_FEATURES) + [(int(a), int(b)) for a, b in es.pairs.T].index((min(v, c), max(v, c)))
        es.features.weight[0, col] = 1.0
        for emb in es.cat:
            emb.weight.zero_()
    F = len(EVENT_FEATURES)
    events = torch.zeros(2, F)
    events[0, v], events[0, c] = 1.0, 0.8
    events[1, v], events[1, c] = -0.5, 0.4
    exposure = torch.tensor([[0, 0, 1], [0, 1, 0]])  # agent 0 sees both, agent 1 the first, the others none
    inp = _inputs([[-1]] * N, [[0]] * N, events, exposure)
    _, out = m(inp, m.initial_state(N, A))
    assert_close(out.direct[:, 0], torch.tensor([0.8 - 0.2, 0.8, 0.0, 0.0]))
    # the sign of the valence flips the push; halving the credibility halves it
    flipped = events.clone()
    flipped[0, v] = -1.0
    flipped[0, c] = 0.4
    _, out2 = m(_inputs([[-1]] * N, [[0]] * N, flipped, exposure), m.initial_state(N, A))
    assert_close(out2.direct[1, 0], torch.tensor(-0.4))


def test_the_stance_is_drawn_given_the_decision_and_recorded_for_the_neighbours():
    m = _model()
    inp = _inputs([[-1]] * N, [[0]] * N)
    state = m.initial_state(N, A)
    _, first = m(TickInputs(**{**inp.__dict__, "draws": Draws(decision=torch.zeros(N, dtype=torch.long))}), state)
    _, last = m(TickInputs(**{**inp.__dict__, "draws": Draws(decision=torch.full((N,), A - 1))}), state)
    assert not torch.allclose(first.stance_mean, last.stance_mean)  # conditioned on the drawn decision
    eps = torch.tensor([2.0, -1.0, 0.0, 0.5])
    new, out = m(TickInputs(**{**inp.__dict__, "draws": Draws(uniform=torch.full((N,), 0.5), stance_eps=eps)}), state)
    want = (out.stance_mean + out.stance_sd * eps).clamp(-1, 1)
    assert_close(out.stance, want) and assert_close(new.stance, want)  # what neighbours hear next tick
    assert bool((out.stance_sd > 0).all()) and not torch.allclose(out.stance, out.stance_mean)
    # the decision drawn by the inverse CDF at the given uniform, recorded one-hot
    cdf = torch.softmax(out.decision_logits, -1).cumsum(-1)
    assert torch.equal(out.drawn, (cdf < 0.5).sum(-1)) and torch.equal(new.drawn.argmax(1), out.drawn)
    # a trace's agents: the given decision and stance are recorded (-1: unknown, the mean is used)
    given = Draws(decision=torch.tensor([2, -1, 0, 1]), stance=torch.tensor([0.9, 0.1, -0.3, 0.0]), expression=torch.zeros(N, X))
    rec, _ = m(TickInputs(**{**inp.__dict__, "draws": given}), state)
    assert rec.stance[0] == 0.9 and rec.drawn[1].sum() == 0 and rec.drawn[0, 2] == 1


def test_channels_take_a_per_agent_tilt_and_rollouts_report_per_tick_noise():
    m = _model(agent_noise=4)
    inp = _inputs([[-1]] * N, [[0]] * N)
    state = m.initial_state(N, A)
    with torch.no_grad():
        m.noise_proj.weight.zero_()  # the latent's only route is now the channel head
        m.noise_proj.bias.zero_()
    _, base = m(inp, state)
    state.agent_noise = torch.randn(N, 4, generator=torch.Generator().manual_seed(0))
    new, tilted = m(inp, state)
    assert not torch.allclose(tilted.channels, base.channels)
    assert_close(tilted.decision_logits, base.decision_logits)  # routed to the channels only
    m.fit_channel_noise(torch.tensor([0.1, 0.0]))
    eps = torch.ones(N, 2)
    noisy_state, noisy = m(TickInputs(**{**inp.__dict__, "draws": Draws(channel_eps=eps)}), state)
    assert_close(noisy.channels[:, 0], (tilted.channels[:, 0] + 0.1).clamp(0, 1))
    assert_close(noisy.channels[:, 1], tilted.channels[:, 1])
    assert_close(noisy_state.channels, new.channels)  # reported only: the state keeps the expected channels


@pytest.mark.parametrize("switch", ["social_sum", "event_sum", "stance_noise", "channel_effects"])
def test_every_pathway_switches_off(switch):
    m = _model(**{switch: False})
    names = {"social_sum": "social_sum.", "event_sum": "event_sum.", "stance_noise": "head_stance_sd.",
             "channel_effects": "agent_channels."}
    assert not any(k.startswith(names[switch]) for k in m.state_dict())
    _, out = m(_inputs([[1, -1], [0, -1], [-1, -1], [-1, -1]], [[0, 0]] * N), m.initial_state(N, A))
    assert torch.isfinite(out.decision_logits).all() and math.isfinite(float(out.channels.sum()))
