"""Small, exact tests of the graph-masked attention layer on a hand-made 4-agent graph."""
from __future__ import annotations

import torch
from torch.testing import assert_close

from lsm.model.graph_attention import GraphAttention, dense_reference

# 4 agents; edges sender -> receiver, with self loops (type 5): 0->1 friend, 2->1 household,
# 1->0 weak tie, 3->2 professional, 0->3 media, plus i->i.
EDGES = torch.tensor([[0, 2, 1, 3, 0, 0, 1, 2, 3], [1, 1, 0, 2, 3, 0, 1, 2, 3]])
TYPES = torch.tensor([1, 0, 3, 2, 4, 5, 5, 5, 5])


def _setup(seed=0):
    torch.manual_seed(seed)
    layer = GraphAttention(dim=8, heads=2, identity_dim=3, num_edge_types=6)
    with torch.no_grad():  # non-trivial FiLM and type parameters
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, m, u = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3)
    return layer, x, m, u


def test_attention_is_zero_outside_the_graph_and_rows_sum_to_one():
    layer, x, m, u = _setup()
    y, alpha = layer(x, m, EDGES, TYPES, u, return_attention_weights=True)
    assert y.shape == (4, 8) and alpha.shape == (9, 2)
    sums = torch.zeros(4, 2).index_add_(0, EDGES[1], alpha)
    assert_close(sums, torch.ones(4, 2))
    _, dense = dense_reference(layer, x, m, EDGES, TYPES, u)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[EDGES[1], EDGES[0]] = True
    assert (dense[~mask] == 0).all()


def _by_hand(layer, x, m, u, edges, types):
    """The update rule of the class docstring from the layer's raw parameters, one receiver at a
    time, with plain tensor ops (shares no code with the layer): (output (N, D), weights (E, H))."""
    H, Dh, D = layer.heads, layer.head_dim, layer.dim
    P = dict(layer.named_parameters())
    ln = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)  # LayerNorm, eps 1e-5
    ln = ln * P["norm.weight"] + P["norm.bias"]
    film = u @ P["film.weight"].T + P["film.bias"]  # (N, 2D): [γ - 1 | β]
    h = (1 + film[:, :D]) * ln + film[:, D:]
    q = h @ P["q.weight"].T
    out = torch.zeros(len(x), D)
    alpha = torch.zeros(edges.shape[1], H)
    for i in range(len(x)):
        into = [e for e in range(edges.shape[1]) if edges[1, e] == i]  # in-edges j -> i
        for hd in range(H):
            cols = slice(hd * Dh, (hd + 1) * Dh)
            keys = [m[edges[0, e]] @ P["k.weight"][cols].T + P["type_key.weight"][types[e], cols] for e in into]
            vals = [m[edges[0, e]] @ P["v.weight"][cols].T + P["type_value.weight"][types[e], cols] for e in into]
            s = torch.stack([q[i, cols] @ k / Dh ** 0.5 + P["type_bias.weight"][types[e], hd] for e, k in zip(into, keys)])
            w = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
            alpha[into, hd] = w
            out[i, cols] = sum(wi * v for wi, v in zip(w, vals))
    return out @ P["o.weight"].T + P["o.bias"], alpha


def test_matches_the_update_rule_computed_by_hand():
    """Norm, FiLM, typed keys/values/biases, softmax over in-edges and output projection, each
    checked against the formula rather than against the layer's own modules."""
    layer, x, m, u = _setup(6)
    y, alpha = layer(x, m, EDGES, TYPES, u, return_attention_weights=True)
    ref, ref_alpha = _by_hand(layer, x, m, u, EDGES, TYPES)
    assert_close(alpha, ref_alpha)
    assert_close(y, ref)
    assert_close(dense_reference(layer, x, m, EDGES, TYPES, u)[0], ref)


def test_agrees_with_dense_reference():
    layer, x, m, u = _setup(1)
    y, alpha = layer(x, m, EDGES, TYPES, u, return_attention_weights=True)
    ref, dense = dense_reference(layer, x, m, EDGES, TYPES, u)
    assert_close(y, ref)
    assert_close(alpha, dense[EDGES[1], EDGES[0]])


def test_edge_chunking_changes_nothing():
    layer, x, m, u = _setup(2)
    y = layer(x, m, EDGES, TYPES, u)
    layer.edge_chunk = 2
    assert_close(layer(x, m, EDGES, TYPES, u), y)


def test_permutation_equivariance():
    layer, x, m, u = _setup(3)
    perm = torch.tensor([2, 0, 3, 1])
    inv = torch.argsort(perm)  # new index of old agent a is inv[a]
    y = layer(x, m, EDGES, TYPES, u)
    yp = layer(x[perm], m[perm], inv[EDGES], TYPES, u[perm])
    assert_close(yp, y[perm])


def test_edge_types_and_identity_change_the_output():
    layer, x, m, u = _setup(4)
    y = layer(x, m, EDGES, TYPES, u)
    other = TYPES.clone()
    other[1] = 3  # the household tie 2->1 becomes a weak tie
    y2 = layer(x, m, EDGES, other, u)
    assert not torch.allclose(y2[1], y[1]) and torch.allclose(y2[[0, 2, 3]], y[[0, 2, 3]])
    assert not torch.allclose(layer(x, m, EDGES, TYPES, u + 1), y)


def test_deterministic_and_gradients_reach_every_parameter():
    layer, x, m, u = _setup(5)
    assert torch.equal(layer(x, m, EDGES, TYPES, u), layer(x, m, EDGES, TYPES, u))
    layer(x, m, EDGES, TYPES, u).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_padded_fast_path_equals_the_edge_list_path():
    torch.manual_seed(0)
    n, k, d = 40, 5, 16
    layer = GraphAttention(d, 4, identity_dim=8, num_edge_types=6).eval()
    with torch.no_grad():  # non-trivial FiLM, type embeddings and biases
        for p in (layer.film.weight, layer.type_bias.weight):
            p.normal_(0, 0.3)
    x, m, u = torch.randn(n, d), torch.randn(n, d), torch.randn(n, 8)
    nb = torch.randint(0, n, (n, k))
    nb[torch.rand(n, k) < 0.3] = -1  # padding
    nb[3] = -1  # a receiver with no neighbour at all
    ty = torch.randint(0, 6, (n, k))
    recv = torch.arange(n)[:, None].expand(n, k)
    keep = nb >= 0
    y_list, w_list = layer(x, m, torch.stack([nb[keep], recv[keep]]), ty[keep], identity=u, return_attention_weights=True)
    for chunk in (0, 7):
        y_pad, w_pad = layer.forward_padded(x, m, nb, ty, identity=u, agent_chunk=chunk, return_attention_weights=True)
        torch.testing.assert_close(y_pad, y_list)
        torch.testing.assert_close(w_pad[keep], w_list)
        assert (w_pad[~keep] == 0).all()
    # raw X-wide broadcasts with the projection folded into the queries
    proj = torch.nn.Linear(6, d)
    raw = torch.randn(n, 6)
    y_ref = layer(x, proj(raw), torch.stack([nb[keep], recv[keep]]), ty[keep], identity=u)
    torch.testing.assert_close(layer.forward_padded(x, raw, nb, ty, identity=u, message_proj=proj), y_ref, atol=1e-5, rtol=1e-4)
