"""Graph-masked multi-head attention: agent i attends only to the senders j of its in-edges.

Notation (used in every shape comment): N agents | E edges (self loops included) | H heads |
D model width | Dh = D / H | T edge types | Di identity width.

The edge-list path normalises with PyG's sparse softmax (`torch_geometric.utils.softmax`) over the
in-edges of each receiver; the padded path (`forward_padded`) stays dense, and is tested equal.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.utils import softmax


class GraphAttention(nn.Module):
    r"""Multi-head attention of each agent over its graph neighbours, typed by edge.

    .. math::
        \tilde{x}_i = \gamma(u_i) \odot \mathrm{LN}(x_i) + \beta(u_i) \qquad \text{(FiLM by identity } u_i)

        q_i = W_Q \tilde{x}_i,\quad k_{j\to i} = W_K m_j + a^K_{\tau(j,i)},\quad
        v_{j\to i} = W_V m_j + a^V_{\tau(j,i)}

        \alpha_{j\to i}^{(h)} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
            \Big(\tfrac{\langle q_i^{(h)}, k_{j\to i}^{(h)}\rangle}{\sqrt{D_h}} + b_{\tau(j,i)}^{(h)}\Big)

        y_i = W_O \big\Vert_h \textstyle\sum_{j} \alpha_{j\to i}^{(h)} v_{j\to i}^{(h)}

    where m_j is sender j's last broadcast expression and τ(j, i) the edge type. The same
    message therefore affects observers with different identities differently (FiLM on the
    query), and a household tie can weigh more than a weak tie (per-type, per-head bias and
    key/value embeddings). Sparse over `edge_index`; `edge_chunk` bounds the memory of the
    value aggregation for very large graphs.

    Args:
        dim: model width D.
        heads: number of heads H (D % H == 0).
        identity_dim: width of the identity vector used for FiLM (0: no FiLM).
        num_edge_types: number of edge types T (self loops included as their own type).
        dropout: dropout on attention weights (training only).
        edge_chunk: aggregate values in chunks of this many edges (0: all at once).

    Shapes:
        x: (N, D) agent tokens (queries), messages: (N, D) last broadcast of every agent,
        identity: (N, Di), edge_index: (2, E) with row 0 = sender j, row 1 = receiver i,
        edge_type: (E,) → output (N, D); with `return_attention_weights`, also (E, H).
    """

    def __init__(self, dim: int, heads: int, identity_dim: int = 0, num_edge_types: int = 6,
                 dropout: float = 0.0, edge_chunk: int = 0):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} must be divisible by heads {heads}"
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.edge_chunk = edge_chunk
        self.norm = nn.LayerNorm(dim)
        self.film = nn.Linear(identity_dim, 2 * dim) if identity_dim else None
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim)
        self.type_key = nn.Embedding(num_edge_types, dim)
        self.type_value = nn.Embedding(num_edge_types, dim)
        self.type_bias = nn.Embedding(num_edge_types, heads)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.q, self.k, self.v, self.o):
            nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(self.o.bias)
        if self.film is not None:  # start as the identity transform: gamma = 1, beta = 0
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        nn.init.normal_(self.type_key.weight, std=0.02)
        nn.init.normal_(self.type_value.weight, std=0.02)
        nn.init.zeros_(self.type_bias.weight)
        self.norm.reset_parameters()

    def conditioned(self, x: Tensor, identity: Tensor | None) -> Tensor:
        """(N, D) normalised query tokens, FiLM-conditioned on identity: γ(u) ⊙ LN(x) + β(u)."""
        h = self.norm(x)
        if self.film is not None and identity is not None:
            gamma, beta = self.film(identity).chunk(2, dim=-1)  # (N, D) each
            h = (1 + gamma) * h + beta
        return h

    def forward(self, x: Tensor, messages: Tensor, edge_index: Tensor, edge_type: Tensor,
                identity: Tensor | None = None, return_attention_weights: bool = False):
        n = x.shape[0]
        H, Dh = self.heads, self.head_dim
        h = self.conditioned(x, identity)  # (N, D)
        j, i = edge_index[0].long(), edge_index[1].long()  # (E,), (E,)
        q_i = rearrange(self.q(h), "n (h d) -> n h d", h=H)[i]  # (E, H, Dh)
        k_j = rearrange(self.k(messages)[j] + self.type_key(edge_type), "e (h d) -> e h d", h=H)  # (E, H, Dh)
        scores = (q_i * k_j).sum(-1) / math.sqrt(Dh) + self.type_bias(edge_type)  # (E, H)
        alpha = softmax(scores, i, num_nodes=n)  # (E, H): over the in-edges of each receiver i
        a = self.dropout(alpha)
        v_all = self.v(messages)  # (N, D)
        out = torch.zeros((n, H, Dh), dtype=x.dtype, device=x.device)  # (N, H, Dh)
        step = self.edge_chunk or len(i) or 1
        for s in range(0, len(i), step):
            sl = slice(s, s + step)
            v_j = rearrange(v_all[j[sl]] + self.type_value(edge_type[sl]), "e (h d) -> e h d", h=H)  # (e, H, Dh)
            out.index_add_(0, i[sl], a[sl, :, None] * v_j)
        y = self.o(rearrange(out, "n h d -> n (h d)"))  # (N, D)
        return (y, alpha) if return_attention_weights else y

    def forward_padded(self, x: Tensor, messages: Tensor, neighbors: Tensor, neighbor_type: Tensor,
                       identity: Tensor | None = None, agent_chunk: int = 0,
                       return_attention_weights: bool = False, message_proj: nn.Linear | None = None):
        """The same attention over a padded neighbour table (the inference fast path).

        `neighbors` (N, K) holds the senders of each receiver's in-edges, -1 padded (a rollout's
        shown-neighbour table plus the self loop); `neighbor_type` (N, K) their edge types.
        With `message_proj` (the linear map from raw broadcasts to the width D), `messages` are
        the raw broadcasts (N, X) and the projections are folded into the query side:
        q·W_K(P m_j + p) = (Pᵀ W_Kᵀ q)·m_j + const (the constant cancels in the softmax) and
        Σ_j α_j W_V(P m_j + p) = W_V P (Σ_j α_j m_j) + W_V p Σ_j α_j, so the per-edge work is
        on X-wide raw messages instead of 2·D-wide keys and values. The per-type terms are
        applied per receiver (q·a^K as an (N, H, T) table, Σα a^V by type). `agent_chunk` bounds
        memory (receivers per chunk). Equal to `forward` on the same edges (tested); the
        attention comes back as (N, K, H). No dropout: inference only.
        """
        n, K = neighbors.shape
        H, Dh = self.heads, self.head_dim
        T = self.type_key.num_embeddings
        h = self.conditioned(x, identity)  # (N, D)
        q = rearrange(self.q(h), "n (h d) -> n h d", h=H) / math.sqrt(Dh)  # (N, H, Dh), pre-scaled
        wk, wv = self.k.weight, self.v.weight  # (D, D_in)
        v_bias = None
        if message_proj is not None:
            wide = F.pad(message_proj.weight, (0, messages.shape[1] - message_proj.weight.shape[1]))  # zero columns for widened broadcasts
            wk, wv = wk @ wide, wv @ wide  # (D, X)
            v_bias = rearrange(self.v.weight @ message_proj.bias, "(h d) -> h d", h=H) if message_proj.bias is not None else None
        X = wk.shape[1]
        q_raw = torch.einsum("nhd,hdx->nhx", q, wk.view(H, Dh, X))  # (N, H, X): queries in message space
        w_out = wv.view(H, Dh, X)
        type_k = rearrange(self.type_key.weight, "t (h d) -> t h d", h=H)  # (T, H, Dh)
        type_v = rearrange(self.type_value.weight, "t (h d) -> t h d", h=H)  # (T, H, Dh)
        out = torch.empty((n, H, Dh), dtype=x.dtype, device=x.device)
        weights = torch.empty((n, K, H), dtype=x.dtype, device=x.device) if return_attention_weights else None
        step = agent_chunk or n or 1
        for s in range(0, n, step):
            sl = slice(s, min(s + step, n))
            nb, ty = neighbors[sl], neighbor_type[sl].long()  # (c, K)
            g = messages.index_select(0, nb.clamp_min(0).reshape(-1)).view(nb.shape[0], K, -1)  # (c, K, X) senders' messages
            scores = torch.bmm(g, q_raw[sl].transpose(1, 2))  # (c, K, H)
            scores = scores + torch.gather(torch.einsum("chd,thd->cht", q[sl], type_k), 2,
                                           ty[:, None, :].expand(-1, H, -1)).transpose(1, 2)  # + q·a^K_τ
            scores = (scores + self.type_bias(ty)).masked_fill((nb < 0)[..., None], float("-inf"))  # (c, K, H)
            alpha = torch.softmax(scores, dim=1).nan_to_num(0.0)  # (c, K, H); a row with no edge -> 0
            agg = torch.bmm(alpha.transpose(1, 2), g)  # (c, H, X): Σ_j α_j m_j
            per_type = torch.zeros((alpha.shape[0], T, H), dtype=x.dtype, device=x.device)
            per_type.scatter_add_(1, ty[..., None].expand(-1, -1, H), alpha)  # (c, T, H): Σα by type
            o = torch.einsum("chx,hdx->chd", agg, w_out) + torch.einsum("cth,thd->chd", per_type, type_v)
            if v_bias is not None:
                o = o + alpha.sum(1)[..., None] * v_bias  # Σα (1, or 0 for a row with no edge) × W_V p
            out[sl] = o
            if weights is not None:
                weights[sl] = alpha
        y = self.o(rearrange(out, "n h d -> n (h d)"))  # (N, D)
        return (y, weights) if return_attention_weights else y


def dense_reference(layer: GraphAttention, x: Tensor, messages: Tensor, edge_index: Tensor, edge_type: Tensor,
                    identity: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The same attention with a dense N×N mask (tests only): (output (N, D), weights (N, N, H))."""
    n, H, Dh = x.shape[0], layer.heads, layer.head_dim
    h = layer.conditioned(x, identity)
    q = rearrange(layer.q(h), "n (h d) -> n h d", h=H)  # (N, H, Dh)
    j, i = edge_index[0].long(), edge_index[1].long()
    key = torch.zeros((n, n, H, Dh))  # [receiver, sender]
    val = torch.zeros((n, n, H, Dh))
    bias = torch.full((n, n, H), float("-inf"))
    key[i, j] = rearrange(layer.k(messages)[j] + layer.type_key(edge_type), "e (h d) -> e h d", h=H)
    val[i, j] = rearrange(layer.v(messages)[j] + layer.type_value(edge_type), "e (h d) -> e h d", h=H)
    bias[i, j] = layer.type_bias(edge_type)
    scores = torch.einsum("ihd,ijhd->ijh", q, key) / math.sqrt(Dh) + bias  # (N, N, H)
    w = torch.softmax(scores, dim=1).nan_to_num(0.0)  # rows with no neighbour -> 0
    out = torch.einsum("ijh,ijhd->ihd", w, val)
    return layer.o(rearrange(out, "n h d -> n (h d)")), w
