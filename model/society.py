"""The society transformer: every agent is one token, the social graph is the attention mask.

One forward pass advances every agent of one or more worlds by one tick (docs/design.md §6).

Notation: N agents | E edges (self loops included) | V exposures (agent, event pairs) |
Ev events this tick | D width | C channels | Z latent | H memory | S slots | M slot width |
X expression width | A actions | T text-embedding width (`TEXT_DIM`) | L rating levels (11) |
Ra agent noise | Rt tick noise | F numeric event features (`EVENT_FEATURES`) | K shown senders |
P width of the additive pathways (`direct_dim`) | N_all the population the senders belong to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.utils import add_self_loops, softmax

from lsm.config import from_dict, read_yaml, resolve_config
from lsm.model.graph_attention import GraphAttention
from lsm.model.state import AgentState
from lsm.society.embed import TEXT_DIM
from lsm.society.scenario import EVENT_FEATURES, EVENT_VOCABS, RATING_LEVELS
from lsm.society.world.graph import EDGE_TYPES

SELF_LOOP_TYPE = len(EDGE_TYPES)
"""Edge type of the self loops the model adds (after the social edge types, codes 0..4)."""


@dataclass
class StudentConfig:
    """The student network's size and switches (`model.student` in a training preset)."""

    dim: int = 64
    """Width of the agent tokens (divisible by `heads`)."""
    heads: int = 4
    """Attention heads."""
    layers: int = 2
    """Blocks per tick (graph attention, event attention, MLP)."""
    latent_dim: int = 16
    """Z: width of the free latent state (read by linear probes)."""
    memory_dim: int = 32
    """H: width of the recurrent memory summary (GRU)."""
    slots: int = 8
    """S: episodic memory slots per agent."""
    slot_dim: int = 32
    """M: width of each episodic memory slot."""
    expression_dim: int = 32
    """X: width of the expression an agent broadcasts to its neighbours."""
    text_dim: int = TEXT_DIM
    """Width of the sentence embeddings read (persona, events, context)."""
    channels: int = 8
    """C: channels rated per agent-tick (filled from the data)."""
    categorical_sizes: list[int] = field(default_factory=list)
    """Number of categories of each identity attribute (IdentityVocab order)."""
    numeric_dim: int = 0
    """Numeric identity attributes (filled from the data)."""
    event_vocab_sizes: list[int] = field(default_factory=lambda: [len(v) for v in EVENT_VOCABS])
    """Sizes of the event source_type, channel and framing vocabularies."""
    event_features: list[str] = field(default_factory=lambda: list(EVENT_FEATURES))
    """The numeric event features the student reads, in order (its input width): always the
    code's `EVENT_FEATURES`, recorded so that a checkpoint trained on others is refused by name."""
    num_edge_types: int = len(EDGE_TYPES) + 1
    """Tie types of the graph attention (the graph's edge types, and self loops as their own)."""
    expression_noise: float = 0.1
    """Std of the noise added to the broadcast expression in training (a lossy channel)."""
    dropout: float = 0.0
    """Dropout of the graph attention."""
    graph: bool = True
    """False: no graph attention (the identity-only baseline: agents never hear each other)."""
    agent_noise: int = 16
    """Ra: width of the per-agent stochastic latent (drawn once per run; 0: a deterministic student)."""
    tick_noise: int = 0
    """Rt: width of a per-agent-tick stochastic latent (the teacher's own sampled reasoning). Off by
    default: inferred from the same tick's answer, it becomes a shortcut for the opinion itself and
    the student listens less to its neighbours (planted society, 2,000 agents: messages-removed TV
    0.77 of the truth's instead of 0.96; 0.23 in a run with shorter BPTT windows)."""
    rating_levels: int = RATING_LEVELS
    """L: channels are predicted as distributions over the teacher's rating levels."""
    context: bool = True
    """Condition every agent on the scenario's context and question (their sentence embedding)."""
    feedback: bool = True
    """Feed the agent's last drawn decision and stance back into its token (False: only its last
    distribution, as the first student did; for ablations)."""
    action_mlp: bool = True
    """Score actions against an MLP of their text and place, plus a per-action bias and a
    persistence bonus for the last drawn action (False: the first student's linear scorer)."""
    direct_dim: int = 4
    """P: width of the additive pathway (`social_sum`, `event_sum`): a small vector summed from
    what each agent hears and sees, added linearly to the decision logits (through a per-action
    lean), the stance before its tanh and the channels' level tilt, so a push is neither
    renormalised against other inputs nor squashed by a LayerNorm."""
    social_sum: bool = True
    """The social sum: Σ over shown senders j of gain_τ(j→i) ⊙ W·broadcast_j, scaled per receiver
    by a gain of its identity (`SocialSum`): multiplicative in what a sender says, a gain per tie
    type, not normalised by who else is shown (False: only the graph attention hears neighbours)."""
    event_sum: bool = True
    """The event sum: Σ over the events an agent sees of a push with products of the numeric
    features (valence × credibility) and terms per source, framing and text (`EventSum`); events
    add up (False: only the event attention, which averages them)."""
    stance_noise: bool = True
    """The stance is a distribution (mean and sd, trained by its Gaussian likelihood) conditioned
    on the decision drawn this tick, and rollouts draw it: what neighbours hear keeps its spread
    (False: the conditional mean, trained by squared error)."""
    channel_effects: bool = True
    """The agent latent reaches the channel head directly (a per-agent tilt of each channel's
    level distribution), and rollouts add per-tick channel noise of the residual SD fitted in
    training (`channel_tick_sd`) to the channels they report (False: channels are conditional means)."""

    def __post_init__(self) -> None:
        assert self.dim % self.heads == 0, f"dim {self.dim} must be divisible by heads {self.heads}"
        if list(self.event_features) != list(EVENT_FEATURES):
            raise ValueError(f"event_features {list(self.event_features)}: this version of lsm reads the event features "
                             f"{list(EVENT_FEATURES)} (society.scenario.EVENT_FEATURES); they are not a setting")

    @classmethod
    def from_preset(cls, preset: str | Path = "small", **changes: Any) -> "StudentConfig":
        """The student of a training preset (`model.student` of `configs/train/NAME.yaml`, a
        shipped name or a path) with `changes` applied: how `lsm recovery` and the benchmark size
        their student without restating it (a bad block is one `ConfigError`)."""
        path = resolve_config(preset, "train")
        data = read_yaml(path, kind="training config")
        model = data.get("model") if isinstance(data, dict) else None
        block = model.get("student") if isinstance(model, dict) else None
        return from_dict(cls, {**(block or {}), **changes}, source=f"{path} (model.student)", kind="student config")


ROW_ALIGN = 64
"""A pass over agents in chunks pads each chunk to a multiple of this many rows (copies of its
last agent, dropped after): BLAS kernels compute a batch's last rows (M mod their block) another
way, so without it an agent's outputs would differ in the last bit with how many agents share
its pass, and a sharded rollout would not equal one process's bit for bit."""


WIDTH_ALIGN = 4
"""The broadcasts neighbours hear (X + 1 floats: 17 or 33 in the shipped presets) are widened with
zero columns to a multiple of this many floats (16 bytes) on the padded path, and the weights
that read them likewise: a matmul's result for a row of 17 floats depends on where the row lies
(its address modulo 16 bytes), so a sender's projection would differ in the last bit between
the population's table and a shard's. The zeros add exact zeros."""


def align_width(t: Tensor) -> Tensor:
    """`t` (..., W) with zero columns appended up to a multiple of `WIDTH_ALIGN`."""
    extra = -t.shape[-1] % WIDTH_ALIGN
    return F.pad(t, (0, extra)) if extra else t


def pad_rows(t: Tensor, m: int) -> Tensor:
    """`t` (N, ...) with `m` copies of its last row appended (a row broadcast to all, stride 0, stays so)."""
    if m == 0:
        return t
    if t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1].expand(t.shape[0] + m, *t.shape[1:])
    return torch.cat([t, t[-1:].expand(m, *t.shape[1:])])


@dataclass
class TickInputs:
    """Everything one tick needs besides the state (N agents, possibly of several worlds)."""

    identity_cat: Tensor  # (N, n_cat) long
    identity_num: Tensor  # (N, n_num) float in 0..1
    persona_emb: Tensor  # (N, T) embedding of the persona beyond its attributes (a backstory; zeros if templated: embed.persona_features)
    edge_index: Tensor  # (2, E) row 0 sender j, row 1 receiver i (self loops added by the model)
    edge_type: Tensor  # (E,) long
    event_cat: Tensor  # (Ev, 3) long: source_type, channel, framing
    event_num: Tensor  # (Ev, F): the numeric event features, `EVENT_FEATURES` order
    event_emb: Tensor  # (Ev, T)
    exposure: Tensor  # (2, V) row 0 agent, row 1 event
    action_emb: Tensor  # (A, T) sentence embeddings of the action texts (name: description, or a bin range)
    neighbors: Tensor | None = None  # (N, K) senders shown to each receiver, -1 padded: the inference fast path
    neighbor_type: Tensor | None = None  # (N, K) their edge types (ignored where neighbors is -1)
    context_emb: Tensor | None = None  # (T,) sentence embedding of the scenario's context and question
    tick_noise: Tensor | None = None  # (N, Rt) this tick's stochastic latent (None: the prior mean, 0)
    draws: "Draws | None" = None  # what this tick's agents did (a trace's) or the random numbers they draw it with
    logit_offset: Tensor | None = None  # (N, A) added to the decision logits (a scenario's fitted `offsets`; lsm calibrate)

    def to(self, device: torch.device | str) -> "TickInputs":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in moved.items() if v is not None})

    def rows(self, idx: Tensor | slice, exposure: Tensor | None = None) -> "TickInputs":
        """The inputs of a subset of the agents (padded neighbour table only: it holds ids into
        the whole population, so the senders stay the population's); `exposure`: the subset's
        exposures when the caller has them (re-indexed), else they are selected here."""
        assert self.neighbors is not None and self.neighbor_type is not None, "a subset of agents needs the padded neighbour table"
        agent = self.exposure[0]
        if exposure is not None:
            pass
        elif isinstance(idx, slice):
            keep = (agent >= idx.start) & (agent < idx.stop)
            exposure = torch.stack([agent[keep] - idx.start, self.exposure[1][keep]])  # (2, V')
        else:
            pos = torch.full((self.identity_cat.shape[0],), -1, dtype=torch.long, device=agent.device)  # (N_all,)
            pos[idx] = torch.arange(len(idx), device=agent.device)
            new = pos[agent]  # (V,) the exposed agents' places in the subset, -1 outside it
            keep = new >= 0
            exposure = torch.stack([new[keep], self.exposure[1][keep]])  # (2, V')
        return replace(self, identity_cat=self.identity_cat[idx], identity_num=self.identity_num[idx],
                       persona_emb=self.persona_emb[idx], exposure=exposure, neighbors=self.neighbors[idx],
                       neighbor_type=self.neighbor_type[idx],
                       tick_noise=self.tick_noise[idx] if self.tick_noise is not None else None,
                       logit_offset=self.logit_offset[idx] if self.logit_offset is not None else None,
                       draws=self.draws.rows(idx) if self.draws is not None else None)

    def padded(self, m: int) -> "TickInputs":
        """These inputs with `m` copies of the last agent appended (`ROW_ALIGN`; no exposures,
        padded neighbour table only)."""
        if m == 0:
            return self
        assert self.neighbors is not None and self.neighbor_type is not None
        opt = lambda t: None if t is None else pad_rows(t, m)  # noqa: E731
        return replace(self, identity_cat=pad_rows(self.identity_cat, m), identity_num=pad_rows(self.identity_num, m),
                       persona_emb=pad_rows(self.persona_emb, m), neighbors=pad_rows(self.neighbors, m),
                       neighbor_type=pad_rows(self.neighbor_type, m), tick_noise=opt(self.tick_noise),
                       logit_offset=opt(self.logit_offset), draws=self.draws.padded(m) if self.draws is not None else None)


@dataclass
class Draws:
    """How this tick's decision, stance and reported channels are drawn (every field per agent,
    optional).

    A trace's agents (training, replay): `decision` is what each did (-1: unknown, invalid), and
    `stance` and `expression` what it said; the new state records them, so next tick the agent
    and its neighbours see what the teacher's agents did. A rollout: `uniform` draws the decision
    by the inverse CDF of its distribution, `stance_eps` and `channel_eps` the stance and the
    reported channels; the numbers are drawn per agent beforehand, so a chunked pass draws as one
    pass does. Fields left None: the decision is the distribution's mean (its expected action
    key), the stance and channels their means."""

    decision: Tensor | None = None  # (N,) long: the drawn decision, -1 where unknown
    stance: Tensor | None = None  # (N,) the said stance (with `decision`)
    expression: Tensor | None = None  # (N, X) the said message, encoded (with `decision`)
    uniform: Tensor | None = None  # (N,) in [0, 1): the inverse-CDF draw of the decision
    stance_eps: Tensor | None = None  # (N,) standard normal
    channel_eps: Tensor | None = None  # (N, C) standard normal

    def rows(self, idx: Tensor | slice) -> "Draws":
        return Draws(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx] for f in fields(self)})

    def padded(self, m: int) -> "Draws":
        return Draws(**{f.name: None if getattr(self, f.name) is None else pad_rows(getattr(self, f.name), m) for f in fields(self)})

    def to(self, device: torch.device | str) -> "Draws":
        return Draws(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class TickOutputs:
    decision_logits: Tensor  # (N, A)
    channels: Tensor  # (N, C) in 0..1: the expected rating level / (L - 1)
    channel_logits: Tensor  # (N, C, L) the predicted distribution over rating levels
    salience: Tensor  # (N,) in 0..1
    stance: Tensor  # (N,) in -1..1
    expression_text: Tensor | None  # (N, T) predicted sentence embedding of the public message (None: `decode_text` off)
    reasoning_text: Tensor | None  # (N, T) predicted sentence embedding of the private reasoning (None: `decode_text` off)
    attention: list[Tensor] | None = None  # per layer (E + N, H), or (N, K + 1, H) on the padded path
    memory_read: Tensor | None = None  # (N, S) weights of the episodic read (readouts)
    write_slot: Tensor | None = None  # (N,) slot written this tick (its gate is `salience`)
    drawn: Tensor | None = None  # (N,) long: the decision drawn or given this tick (-1: none, the mean was used)
    expression: Tensor | None = None  # (N, X) the agent's own message (the state records a given one instead)
    stance_mean: Tensor | None = None  # (N,) the stance's mean (`stance` is the drawn one where drawn)
    stance_sd: Tensor | None = None  # (N,) its predicted sd (`stance_noise`)
    direct: Tensor | None = None  # (N, P) the additive pathway's vector (`social_sum`, `event_sum`)


class EventAttention(nn.Module):
    """Cross-attention of each agent to the events it is exposed to this tick; an agent exposed to
    none gets the output projection of zero (its bias), whether or not anyone else saw an event
    (it used to be exactly zero when nobody did: an agent's output depended on the others')."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.q, self.v, self.o = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim, bias=False)  # a key bias shifts every score of a row equally: no effect

    def forward(self, h: Tensor, events: Tensor, exposure: Tensor) -> Tensor:
        n, H, Dh = h.shape[0], self.heads, self.head_dim
        out = torch.zeros_like(h).view(n, H, Dh)  # (N, H, Dh)
        if exposure.shape[1] == 0:
            return self.o(out.view(n, -1))
        a, e = exposure[0].long(), exposure[1].long()  # (V,), (V,)
        q = self.q(self.norm(h)).view(n, H, Dh)[a]  # (V, H, Dh)
        k = self.k(events).view(-1, H, Dh)[e]  # (V, H, Dh)
        v = self.v(events).view(-1, H, Dh)[e]  # (V, H, Dh)
        alpha = softmax((q * k).sum(-1) / math.sqrt(Dh), a, num_nodes=n)  # (V, H): over each agent's exposures
        out.index_add_(0, a, alpha[..., None] * v)
        return self.o(out.view(n, -1))


class SocialSum(nn.Module):
    r"""What a receiver hears, summed: z_i = (1 + W_u u_i) ⊙ Σ_{j shown to i} g_{τ(j,i)} ⊙ W_m m_j.

    m_j is sender j's broadcast [expression, stance], τ(j, i) the tie type, u_i the receiver's
    identity vector: a push multiplicative in what each sender says, with a gain per tie type and
    per receiver, summed over the senders shown (not normalised by who else is shown: a fourth
    sender adds). The gains start near 0: the sum is all but silent until the data asks for it.
    `forward` takes the padded table (N, K) of sender ids (-1 padded) into
    `messages`, `forward_edges` an edge list; the two are equal (tested).
    """

    def __init__(self, message_dim: int, identity_dim: int, num_edge_types: int, width: int):
        super().__init__()
        self.message = nn.Linear(message_dim, width, bias=False)
        self.type_gain = nn.Embedding(num_edge_types, width)
        self.receiver = nn.Linear(identity_dim, width)
        nn.init.normal_(self.type_gain.weight, std=0.02)  # near silent at first: a society without influence need not unlearn any
        nn.init.zeros_(self.receiver.weight)  # every receiver alike at first
        nn.init.zeros_(self.receiver.bias)

    def forward(self, messages: Tensor, neighbors: Tensor, neighbor_type: Tensor, identity: Tensor,
                projected: Tensor | None = None) -> Tensor:
        """messages (N_all, X + 1), neighbors / neighbor_type (N, K), identity (N, Di) -> (N, P);
        `projected` (N_all, P): `self.message(messages)` when the caller has it (one tick in chunks
        of receivers projects the population's messages once)."""
        n, K = neighbors.shape
        proj = self.project(messages) if projected is None else projected  # (N_all, P)
        got = proj.index_select(0, neighbors.clamp_min(0).reshape(-1)).view(n, K, -1)  # (N, K, P)
        gain = self.type_gain(neighbor_type.long().clamp_min(0)) * (neighbors >= 0)[..., None]  # (N, K, P)
        return (1 + self.receiver(identity)) * (got * gain).sum(1)

    def project(self, messages: Tensor) -> Tensor:
        """(N_all, W) broadcasts, possibly widened with zeros (`align_width`) -> (N_all, P)."""
        return F.linear(messages, F.pad(self.message.weight, (0, messages.shape[1] - self.message.weight.shape[1])))

    def forward_edges(self, messages: Tensor, edge_index: Tensor, edge_type: Tensor, identity: Tensor) -> Tensor:
        """The same over an edge list (2, E) sender -> receiver (no self loops) -> (N, P)."""
        j, i = edge_index[0].long(), edge_index[1].long()  # (E,), (E,)
        push = self.message(messages)[j] * self.type_gain(edge_type.long())  # (E, P)
        out = torch.zeros(identity.shape[0], push.shape[1], dtype=push.dtype, device=push.device).index_add_(0, i, push)
        return (1 + self.receiver(identity)) * out


class EventSum(nn.Module):
    r"""What an agent sees, summed: z_i = Σ_{e seen by i} [W_f φ(f_e) + Σ_k E_k[cat_ek] + W_t text_e],
    φ(f) = (f, f_a · f_b for a ≤ b) the numeric event features (`EVENT_FEATURES`) and their
    pairwise products: valence × credibility is a feature of its own, learned as fast as any
    linear term, and events seen together add."""

    def __init__(self, num_features: int, vocab_sizes: list[int], text_dim: int, width: int):
        super().__init__()
        self.pairs = torch.triu_indices(num_features, num_features)  # (2, F(F+1)/2) the products φ holds
        self.features = nn.Linear(num_features + self.pairs.shape[1], width)
        self.cat = nn.ModuleList(nn.Embedding(k, width) for k in vocab_sizes)
        self.text = nn.Linear(text_dim, width, bias=False)

    def expand(self, event_num: Tensor) -> Tensor:
        """(Ev, F) -> (Ev, F + F(F+1)/2): the features and their pairwise products, φ(f)."""
        a, b = self.pairs.to(event_num.device)
        return torch.cat([event_num, event_num[:, a] * event_num[:, b]], -1)

    def push(self, event_cat: Tensor, event_num: Tensor, event_emb: Tensor) -> Tensor:
        """(Ev, P) each event's push."""
        p = self.features(self.expand(event_num)) + self.text(event_emb)  # (Ev, P)
        for k, emb in enumerate(self.cat):
            p = p + emb(event_cat[:, k])
        return p

    def forward(self, n: int, event_cat: Tensor, event_num: Tensor, event_emb: Tensor, exposure: Tensor) -> Tensor:
        """-> (N, P): the sum of the pushes of the events each of the `n` agents is exposed to."""
        p = self.push(event_cat, event_num, event_emb)  # (Ev, P)
        out = p.new_zeros(n, p.shape[1])
        if exposure.shape[1]:
            out.index_add_(0, exposure[0].long(), p[exposure[1].long()])
        return out


@dataclass
class NeighborTable:
    """What receivers hear on the padded path: each receiver's senders as a table of ids into the
    population's broadcasts (rollouts, replays and training)."""

    senders: Tensor  # (N_all, X + 1) the raw broadcasts [expression, stance] of the population
    neighbors: Tensor  # (N, K + 1) sender ids, -1 padded, the receiver's own id last (the self loop)
    types: Tensor  # (N, K + 1) tie types, SELF_LOOP_TYPE last


@dataclass
class EdgeList:
    """What receivers hear on the edge-list path (any graph; self loops included)."""

    messages: Tensor  # (N, D) projected broadcasts
    edge_index: Tensor  # (2, E + N) sender j, receiver i
    edge_type: Tensor  # (E + N,)


class Block(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.graph = None if not cfg.graph else GraphAttention(cfg.dim, cfg.heads, identity_dim=cfg.dim, num_edge_types=cfg.num_edge_types,
                                    dropout=cfg.dropout)
        self.events = EventAttention(cfg.dim, cfg.heads)
        self.mlp = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim))

    def forward(self, h: Tensor, heard: NeighborTable | EdgeList, u: Tensor, events: Tensor, exposure: Tensor,
                message_proj: nn.Linear, want_attention: bool, agent_chunk: int = 0):
        att = None
        if self.graph is not None:
            if isinstance(heard, NeighborTable):  # raw broadcasts; their projection is folded into the attention
                g = self.graph.forward_padded(h, heard.senders, heard.neighbors, heard.types, identity=u, agent_chunk=agent_chunk,
                                              return_attention_weights=want_attention, message_proj=message_proj)
            else:
                g = self.graph(h, heard.messages, heard.edge_index, heard.edge_type, identity=u, return_attention_weights=want_attention)
            g, att = g if want_attention else (g, None)
            h = h + g
        h = h + self.events(h, events, exposure)
        return h + self.mlp(h), att


class SocietyModel(nn.Module):
    """One tick for all agents: `new_state, outputs = model(inputs, state)`."""

    prior_mean: Tensor  # (Ra,) buffer: mean of the agent latent's fitted prior
    prior_scale: Tensor  # (Ra, Ra) buffer: its lower-triangular Cholesky factor
    channel_tick_sd: Tensor  # (C,) buffer: the per-tick channel noise rollouts add (`channel_effects`)

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        self.agent_chunk = 0
        """Receivers per chunk in the padded attention path (0: all at once); set by rollouts."""
        self.decode_text = True
        """Decode the predicted message and reasoning embeddings (`TickOutputs.expression_text`,
        `reasoning_text`); a rollout that stores neither turns it off: at 10^6 agents they are
        3 GB of outputs and ~60 GFLOP per tick nothing reads."""
        self.straight_through = False
        """Draws pass the gradient of the decision distribution (straight-through; `lsm calibrate`'s
        differentiable rollout): the state still records the drawn one-hot."""
        D, T = cfg.dim, cfg.text_dim
        self.cat_emb = nn.ModuleList(nn.Embedding(k, D) for k in cfg.categorical_sizes)
        self.num_proj = nn.Linear(cfg.numeric_dim, D) if cfg.numeric_dim else None
        self.persona_proj = nn.Linear(T, D)
        self.context_proj = nn.Linear(T, D) if cfg.context else None
        self.state_proj = nn.Linear(cfg.channels + cfg.latent_dim + cfg.memory_dim + 1, D)  # + the last stance
        self.noise_proj = nn.Linear(cfg.agent_noise + cfg.tick_noise, D) if cfg.agent_noise + cfg.tick_noise else None
        # Actions are embedded from their text and place in the list, so one model serves any
        # action space (and a scenario left out of training): logits are scores of the agent
        # against each action's key, plus a per-action bias from the same key.
        self.action_key = nn.Sequential(nn.Linear(T + 1, D), nn.GELU(), nn.Linear(D, D))
        self.action_bias = nn.Linear(D, 1)
        self.drawn_proj = nn.Linear(D, D)  # the last drawn action's key -> the agent's token
        self.msg_proj = nn.Linear(cfg.expression_dim + 1, D)  # broadcast = [expression, stance]
        self.ev_cat = nn.ModuleList(nn.Embedding(k, D) for k in cfg.event_vocab_sizes)
        self.ev_num = nn.Linear(len(cfg.event_features), D)
        self.ev_text = nn.Linear(T, D)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.read_q = nn.Linear(D, cfg.slot_dim)
        self.read_out = nn.Linear(cfg.slot_dim, D)
        self.norm = nn.LayerNorm(D)
        self.head_channels = nn.Linear(D, cfg.channels * cfg.rating_levels)
        self.head_latent = nn.Linear(D, cfg.latent_dim)
        self.gru = nn.GRUCell(D, cfg.memory_dim)
        self.head_write = nn.Linear(D, cfg.slot_dim)
        self.head_salience = nn.Linear(D, 1)
        self.head_expression = nn.Linear(D, cfg.expression_dim)
        self.head_decision = nn.Linear(D, D)
        self.head_persistence = nn.Linear(D, 1)  # logit bonus of the last drawn action, per agent
        self.head_stance = nn.Linear(D, 1)
        self.head_expression_text = nn.Linear(cfg.expression_dim, T)  # decoded from the bottleneck only
        self.expression_in = nn.Linear(T, cfg.expression_dim)  # a teacher message -> the bottleneck (teacher forcing)
        self.head_reasoning_text = nn.Linear(D, T)
        self.drawn_now = nn.Linear(D, D)  # this tick's drawn action's key -> the token its stance and message are read from
        self.head_stance_sd = nn.Linear(D, 1) if cfg.stance_noise else None
        P = cfg.direct_dim
        self.social_sum = SocialSum(cfg.expression_dim + 1, D, cfg.num_edge_types, P) if cfg.social_sum and cfg.graph else None
        self.event_sum = EventSum(len(cfg.event_features), cfg.event_vocab_sizes, T, P) if cfg.event_sum else None
        direct = self.social_sum is not None or self.event_sum is not None
        self.direct_in = nn.Linear(P, D) if direct else None  # z -> the token (every head reads it)
        self.direct_lean = nn.Linear(D, P, bias=False) if direct else None  # action key -> its lean on z (logit += z·lean_a)
        self.direct_stance = nn.Linear(P, 1, bias=False) if direct else None
        self.direct_channels = nn.Linear(P, cfg.channels, bias=False) if direct else None  # z -> each channel's level tilt
        self.agent_channels = nn.Linear(cfg.agent_noise, cfg.channels, bias=False) if cfg.channel_effects and cfg.agent_noise else None
        self.register_buffer("channel_tick_sd", torch.zeros(cfg.channels))  # (C,) fitted in training (`fit_channel_noise`)
        self.posterior = LatentPosterior(cfg) if cfg.agent_noise + cfg.tick_noise else None
        # Rollouts draw the agent latent from the *aggregate* posterior of the training agents
        # (a Gaussian with its mean and covariance, refitted every training epoch), not from N(0, 1):
        # with a KL weight below 1 the two differ, and draws from N(0, 1) under-spread the population.
        self.register_buffer("prior_mean", torch.zeros(cfg.agent_noise))
        self.register_buffer("prior_scale", torch.eye(cfg.agent_noise))  # (Ra, Ra) lower-triangular

    def initial_state(self, n: int, actions: int, device="cpu") -> AgentState:
        c = self.cfg
        return AgentState.initial(n, c.channels, c.latent_dim, c.memory_dim, c.slots, c.slot_dim, c.expression_dim, actions,
                                  c.agent_noise, device)

    def draw_agent_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(N, Ra) agent latents drawn from the fitted prior (N(0, 1) before any training)."""
        eps = torch.randn(n, self.cfg.agent_noise, generator=generator)
        return (self.prior_mean.cpu() + eps @ self.prior_scale.cpu().T).to(self.prior_mean.device)

    def fit_prior(self, count: float, total: Tensor, outer: Tensor) -> None:
        """Set the prior to the Gaussian of `count` posterior samples with sum `total` (Ra,) and
        sum of outer products `outer` (Ra, Ra)."""
        if count < 2 or not self.cfg.agent_noise:
            return
        mean = total / count
        cov = outer / count - torch.outer(mean, mean)
        cov = 0.5 * (cov + cov.T) + 1e-4 * torch.eye(len(mean), device=cov.device)
        self.prior_mean.copy_(mean)
        self.prior_scale.copy_(torch.linalg.cholesky(cov))

    def encode_expression(self, text_emb: Tensor) -> Tensor:
        """(N, T) sentence embeddings of messages -> (N, X) broadcast expressions, the inverse of
        `head_expression_text`; used to feed the teacher's own messages under teacher forcing."""
        return torch.tanh(self.expression_in(text_emb))

    def identity(self, inp: TickInputs) -> Tensor:
        pe = inp.persona_emb  # (N, T)
        if pe.shape[0] > 1 and pe.stride(0) == 0:  # one row for all (templated personas: zeros): projected once, exactly
            u = self.persona_proj(pe[:1]).expand(pe.shape[0], -1)  # (N, D)
        else:
            u = self.persona_proj(pe)  # (N, D)
        for k, emb in enumerate(self.cat_emb):
            code = inp.identity_cat[:, k]  # (N,), UNKNOWN_CODE (-1) where the category is unknown: adds nothing
            u = u + emb(code.clamp(min=0)) * (code >= 0).unsqueeze(-1).to(u.dtype)
        if self.num_proj is not None:
            u = u + self.num_proj(inp.identity_num)
        if self.context_proj is not None and inp.context_emb is not None:
            u = u + self.context_proj(inp.context_emb)[None, :]
        return u

    def action_keys(self, action_emb: Tensor) -> Tensor:
        """(A, T) action-text embeddings -> (A, D) keys (text and relative place in the list)."""
        if not self.cfg.action_mlp:  # the first student: a linear map of the text embedding
            return self.action_key[0](torch.cat([action_emb, torch.zeros_like(action_emb[:, :1])], -1))
        A = action_emb.shape[0]
        place = torch.linspace(0, 1, A, device=action_emb.device)[:, None] if A > 1 else torch.zeros(1, 1, device=action_emb.device)
        return self.action_key(torch.cat([action_emb, place], -1))

    def forward(self, inp: TickInputs, state: AgentState, return_attention: bool = False,
                generator: torch.Generator | None = None, senders: Tensor | None = None,
                receivers: Tensor | None = None, senders_projected: Tensor | None = None) -> tuple[AgentState, TickOutputs]:
        """One tick (`model.tick.advance` is how every caller runs it).

        `senders` (N_all, X + 1): the broadcasts the receivers hear, ids of the padded neighbour
        table pointing into it (default: the receivers' own last broadcasts); `receivers` (N,):
        the receivers' own ids in `senders` (their self loops; default 0..N-1). `inp.draws`: the
        decision, stance and channels drawn or given this tick (`Draws`); the new state records
        the decision and what the agent said. `senders_projected` (N_all, P): the social sum's
        projection of `senders`, when the caller computed it once for several passes."""
        n, cfg = state.n, self.cfg
        u = self.identity(inp)  # (N, D)
        actions = self.action_keys(inp.action_emb)  # (A, D)
        # what the agent observably did last tick: its drawn decision and its stance (ablation: nothing)
        drawn = state.drawn if cfg.feedback else torch.zeros_like(state.drawn)  # (N, A)
        stance = state.stance if cfg.feedback else torch.zeros_like(state.stance)  # (N,)
        prev = torch.cat([state.channels, state.latent, state.memory, stance[:, None]], -1)  # (N, C + Z + H + 1)
        h = u + self.state_proj(prev) + torch.softmax(state.decision_logits, -1) @ actions + drawn @ self.drawn_proj(actions)  # (N, D)
        if self.noise_proj is not None:
            tick = inp.tick_noise if inp.tick_noise is not None else h.new_zeros(n, cfg.tick_noise)
            h = h + self.noise_proj(torch.cat([state.agent_noise, tick], -1))
        if senders is None:
            senders = torch.cat([state.expression, state.stance[:, None]], -1)  # (N, X + 1): what neighbours hear
        else:
            assert inp.neighbors is not None, "senders of another population need a padded neighbour table"
        if inp.neighbors is not None:
            senders = align_width(senders)  # (N_all, W) (`WIDTH_ALIGN`)
        events = self.ev_text(inp.event_emb) + self.ev_num(inp.event_num)  # (Ev, D)
        for k, emb in enumerate(self.ev_cat):
            events = events + emb(inp.event_cat[:, k])
        heard = self.heard(inp, senders, receivers, n)
        z = self.direct(inp, senders, heard, u, n, senders_projected)  # (N, P) or None
        if z is not None:
            assert self.direct_in is not None
            h = h + self.direct_in(z)
        attention = []
        for block in self.blocks:
            h, att = block(h, heard, u, events, inp.exposure, self.msg_proj, return_attention, self.agent_chunk)
            attention.append(att)
        # Content-addressed read of the episodic buffer, weighted towards salient slots.
        q = self.read_q(h)  # (N, M)
        scores = torch.einsum("nm,nsm->ns", q, state.episodes) / math.sqrt(cfg.slot_dim)  # (N, S)
        scores = scores + torch.log(state.episode_salience.clamp_min(1e-6))
        read = torch.softmax(scores, -1)  # (N, S)
        h = self.norm(h + self.read_out(torch.einsum("ns,nsm->nm", read, state.episodes)))
        # The decision, then what the agent says given the decision it drew.
        logits = self.head_decision(h) @ actions.T / math.sqrt(cfg.dim)  # (N, A)
        if cfg.action_mlp:
            logits = logits + self.action_bias(actions).T + self.head_persistence(h) * drawn
        if z is not None:
            assert self.direct_lean is not None
            logits = logits + z @ self.direct_lean(actions).T  # (N, A): z · lean_a
        if inp.logit_offset is not None:
            logits = logits + inp.logit_offset
        draws = inp.draws or Draws()
        now = self.draw_decision(logits, draws)  # (N,) long, -1: the mean
        onehot = drawn_onehot(now, logits.shape[1]).to(logits)  # (N, A)
        if self.straight_through:  # the drawn one-hot forward, the distribution's gradient backward
            p = torch.softmax(logits, -1)
            onehot = torch.where((now >= 0)[:, None], onehot + p - p.detach(), onehot)
        mean_key = torch.softmax(logits, -1)  # (N, A) where no decision was drawn
        said_from = h + self.drawn_now(torch.where((now >= 0)[:, None], onehot, mean_key) @ actions)  # (N, D)
        salience = torch.sigmoid(self.head_salience(h)).squeeze(-1)  # (N,)
        expression = torch.tanh(self.head_expression(said_from))  # (N, X)
        if self.training and cfg.expression_noise > 0:
            expression = expression + cfg.expression_noise * torch.randn(expression.shape, generator=generator, device=h.device)
        pre = self.head_stance(said_from).squeeze(-1)  # (N,)
        if z is not None:
            assert self.direct_stance is not None
            pre = pre + self.direct_stance(z).squeeze(-1)
        stance_mean = torch.tanh(pre)  # (N,)
        stance_sd = torch.exp(self.head_stance_sd(said_from).squeeze(-1).clamp(-6, 1)) if self.head_stance_sd is not None else None
        new_stance = stance_mean
        if stance_sd is not None and draws.stance_eps is not None:
            new_stance = (stance_mean + stance_sd * draws.stance_eps).clamp(-1, 1)
        # Salience-gated write into the least salient slot.
        slot = torch.argmin(state.episode_salience, dim=-1)  # (N,)
        rows = torch.arange(n, device=h.device)
        g = salience[:, None]  # (N, 1)
        episodes = state.episodes.clone()  # (N, S, M); only the written slot changes
        episodes[rows, slot] = state.episodes[rows, slot] * (1 - g) + torch.tanh(self.head_write(h)) * g
        gate = torch.zeros_like(state.episode_salience).scatter(1, slot[:, None], salience[:, None])  # (N, S)
        L = cfg.rating_levels
        channel_logits = self.head_channels(h).view(n, cfg.channels, L)  # (N, C, L)
        levels = torch.arange(L, dtype=h.dtype, device=h.device) / (L - 1)  # (L,)
        tilt = self.channel_tilt(z, state.agent_noise)  # (N, C) or None
        if tilt is not None:
            channel_logits = channel_logits + tilt[..., None] * (2 * levels - 1)  # a linear tilt moves each distribution's level
        channels = torch.softmax(channel_logits, -1) @ levels  # (N, C): the teacher's rule (expected level)
        # The state records what the agent did: the given or drawn decision and stance, its message.
        said_stance, said_expr = new_stance, expression
        if draws.decision is not None and draws.stance is not None:
            known = draws.decision >= 0  # (N,)
            said_stance = torch.where(known, draws.stance, new_stance)
            if draws.expression is not None:
                said_expr = torch.where(known[:, None], draws.expression, expression)
        new = AgentState(
            channels=channels, latent=torch.tanh(self.head_latent(h)),
            memory=self.gru(h, state.memory), episodes=episodes,
            episode_salience=torch.maximum(state.episode_salience * (1 - gate), gate) * 0.98,  # slow decay
            expression=said_expr, decision_logits=logits, stance=said_stance,
            drawn=onehot if draws.decision is not None or draws.uniform is not None else state.drawn,
            agent_noise=state.agent_noise,
        )
        reported = channels
        if draws.channel_eps is not None and cfg.channel_effects:
            reported = (channels + self.channel_tick_sd * draws.channel_eps).clamp(0, 1)  # per-tick noise, reported only
        out = TickOutputs(decision_logits=logits, channels=reported, channel_logits=channel_logits, salience=salience,
                          stance=new_stance, expression_text=self.head_expression_text(expression) if self.decode_text else None,
                          reasoning_text=self.head_reasoning_text(h) if self.decode_text else None,
                          attention=attention if return_attention else None, memory_read=read, write_slot=slot,
                          drawn=now, expression=expression, stance_mean=stance_mean, stance_sd=stance_sd, direct=z)
        return new, out

    def heard(self, inp: TickInputs, senders: Tensor, receivers: Tensor | None, n: int) -> NeighborTable | EdgeList:
        """What the receivers hear, on the path `inp` gives: its padded neighbour table (with a
        self-loop column) or its edge list (with N self loops appended, typed SELF_LOOP_TYPE)."""
        if inp.neighbors is not None:
            assert inp.neighbor_type is not None, "TickInputs.neighbors needs neighbor_type"
            own = receivers if receivers is not None else torch.arange(n, device=senders.device)
            loops = own.long()[:, None]  # (N, 1) the receivers' own ids
            return NeighborTable(senders, torch.cat([inp.neighbors.long(), loops], 1),  # (N, K + 1)
                                 torch.cat([inp.neighbor_type.long(), torch.full_like(loops, SELF_LOOP_TYPE)], 1))
        edge_index, edge_type = add_self_loops(inp.edge_index.long(), inp.edge_type.long(),
                                               fill_value=SELF_LOOP_TYPE, num_nodes=n)  # (2, E + N), (E + N,)
        return EdgeList(self.msg_proj(senders), edge_index, edge_type)

    def direct(self, inp: TickInputs, senders: Tensor, heard: NeighborTable | EdgeList, u: Tensor, n: int,
               projected: Tensor | None = None) -> Tensor | None:
        """(N, P) the additive pathway: the social sum plus the event sum (None: both off)."""
        if self.direct_in is None:
            return None
        z = u.new_zeros(n, self.cfg.direct_dim)
        if self.social_sum is not None:
            if isinstance(heard, NeighborTable):  # the shown senders only, not the self loop
                z = z + self.social_sum(senders, inp.neighbors, inp.neighbor_type, u, projected)
            else:
                z = z + self.social_sum.forward_edges(senders, inp.edge_index, inp.edge_type, u)
        if self.event_sum is not None:
            z = z + self.event_sum(n, inp.event_cat, inp.event_num, inp.event_emb, inp.exposure)
        return z

    def channel_tilt(self, z: Tensor | None, agent_noise: Tensor) -> Tensor | None:
        """(N, C) the shift of each channel's level distribution from the additive pathway and
        the agent's latent (`channel_effects`), or None."""
        tilt = None
        if z is not None:
            assert self.direct_channels is not None
            tilt = self.direct_channels(z)
        if self.agent_channels is not None:
            a = self.agent_channels(agent_noise)
            tilt = a if tilt is None else tilt + a
        return tilt

    @staticmethod
    def draw_decision(logits: Tensor, draws: Draws) -> Tensor:
        """(N,) long: the decision given (`draws.decision`), or drawn by the inverse CDF at
        `draws.uniform`, or -1 (none: the distribution's mean is used)."""
        if draws.decision is not None:
            return draws.decision.long()
        if draws.uniform is not None:
            cdf = torch.softmax(logits.float(), -1).cumsum(-1)  # (N, A)
            return torch.clamp((cdf < draws.uniform[:, None]).sum(-1), max=logits.shape[1] - 1)
        return torch.full((logits.shape[0],), -1, dtype=torch.long, device=logits.device)

    def fit_channel_noise(self, sd: Tensor) -> None:
        """Set the per-tick channel noise rollouts add (`channel_effects`) to `sd` (C,)."""
        self.channel_tick_sd.copy_(sd.to(self.channel_tick_sd))


    @torch.inference_mode()
    def forward_in_chunks(self, inp: TickInputs, state: AgentState, chunk: int,
                          senders: Tensor | None = None) -> tuple[AgentState, TickOutputs]:
        """`forward` for `chunk` receivers at a time (inference on a padded neighbour table; no
        attention weights). Every layer reads the senders' broadcasts of the previous state, never
        another agent's activations of this tick, so agents are independent given the state and
        the result equals one pass (tested). Activations take memory in proportion to the chunk,
        and their blocks are small enough for malloc to reuse: at 10^6 agents a whole-population
        pass allocates and frees blocks of up to 1 GB, which the kernel maps and zeroes afresh.

        `senders` (N_all, X + 1): the broadcasts heard, the receivers' own first (rows 0..N-1),
        then others' (a shard's halo); default: the receivers' own."""
        return self.chunked(inp, state, chunk, senders=senders)

    def chunked(self, inp: TickInputs, state: AgentState, chunk: int,
                call: Callable[[Callable[[], Any]], Any] | None = None,
                senders: Tensor | None = None) -> tuple[AgentState, TickOutputs]:
        """`forward_in_chunks` without its inference mode: `call(run)` runs each chunk's pass
        (default: `run()`); `lsm calibrate` passes activation checkpointing, so a backward pass
        recomputes one chunk of one tick at a time."""
        n = state.n
        call = call or (lambda run: run())
        if inp.neighbors is None or n == 0:  # the edge-list path: one pass
            assert senders is None, "senders of another population need a padded neighbour table"
            return call(lambda: self(inp, state))
        assert inp.neighbor_type is not None, "chunks need the padded neighbour table"
        chunk = chunk if chunk > 0 else n
        if senders is None:
            senders = torch.cat([state.expression, state.stance[:, None]], -1)  # (N, X + 1)
        senders = align_width(senders)  # (N_all, W) (`WIDTH_ALIGN`)
        projected = None  # (N_all, P): the social sum's projection of every sender, once for every chunk (rows aligned)
        if self.social_sum is not None:
            projected = self.social_sum.project(pad_rows(senders, -len(senders) % ROW_ALIGN))[:len(senders)]
        exposure = inp.exposure
        if exposure.shape[1] > 1 and not bool((exposure[0, 1:] >= exposure[0, :-1]).all()):
            exposure = exposure[:, torch.argsort(exposure[0], stable=True)]  # by agent, so each chunk is a slice
        starts = torch.arange(0, n + chunk, chunk).clamp(max=n)  # (chunks + 1,)
        bounds = torch.searchsorted(exposure[0].contiguous(), starts.to(exposure.device)).tolist()
        new_parts: dict[str, Tensor] = {}
        out_parts: dict[str, Tensor] = {}

        def put(parts: dict[str, Tensor], name: str, value: Tensor, s: int, e: int) -> None:
            if name not in parts:
                parts[name] = value.new_empty((n, *value.shape[1:]))
            parts[name][s:e] = value

        for c, s in enumerate(range(0, n, chunk)):
            e = min(s + chunk, n)
            m = -(e - s) % ROW_ALIGN  # padding rows (`ROW_ALIGN`)
            part = exposure[:, bounds[c]:bounds[c + 1]].clone()  # (2, V_c)
            part[0] -= s
            sub = inp.rows(slice(s, e), exposure=part).padded(m)
            part_state = AgentState(**{f.name: pad_rows(getattr(state, f.name)[s:e], m) for f in fields(state)})
            receivers = pad_rows(torch.arange(s, e, device=senders.device), m)
            new, out = call(partial(self, sub, part_state, senders=senders, receivers=receivers, senders_projected=projected))
            for f in fields(new):
                put(new_parts, f.name, getattr(new, f.name)[:e - s], s, e)
            for f in fields(out):
                value = getattr(out, f.name)
                if isinstance(value, Tensor) and value.dim() > 0:
                    put(out_parts, f.name, value[:e - s], s, e)
        outputs = {f.name: out_parts.get(f.name) for f in fields(TickOutputs)}
        return AgentState(**new_parts), TickOutputs(**outputs)  # type: ignore[arg-type]


class LatentPosterior(nn.Module):
    """q(agent noise | the teacher's trajectory) and q(tick noise | the teacher's tick), Gaussian.

    Training only: the student's stochastic latents are inferred from what the teacher actually
    did (its stance, channels, salience, reasoning embedding and the drawn action's text) *and*
    the agent's identity vector, so they can hold what identity does not explain; the decoder
    learns what the teacher's sampled reasoning and unobserved traits do; a KL term to the N(0, 1)
    prior lets rollouts draw them from the prior (a conditional VAE). Without the identity the
    posterior encodes identity-explained variation too, and prior draws lose its covariance with
    identity (planted society: channel spread across agents 0.33 of the truth's instead of 0.56).
    """

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        width = 2 + cfg.channels + 2 * cfg.text_dim + cfg.dim  # the answer's features + the agent's identity vector
        hid = cfg.dim
        self.agent_net = nn.Sequential(nn.Linear(width, hid), nn.GELU(), nn.Linear(hid, 2 * cfg.agent_noise)) if cfg.agent_noise else None
        self.tick_net = nn.Sequential(nn.Linear(width, hid), nn.GELU(), nn.Linear(hid, 2 * cfg.tick_noise)) if cfg.tick_noise else None

    @staticmethod
    def features(stance: Tensor, salience: Tensor, channels: Tensor, reasoning_emb: Tensor, drawn_emb: Tensor) -> Tensor:
        """(..., 2 + C + 2T) the teacher's observable answer of one agent-tick."""
        return torch.cat([stance[..., None], salience[..., None], channels, reasoning_emb, drawn_emb], -1)

    @staticmethod
    def sample(stats: Tensor, generator: torch.Generator | None = None, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(.., 2R) mean and log-variance -> a reparameterised sample (.., R) and KL to N(0, 1) per row
        (`eps`: the standard-normal draw to use; default: a fresh one)."""
        mu, logvar = stats.chunk(2, -1)
        logvar = logvar.clamp(-8, 4)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device) if eps is None else eps
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        return mu + eps * (0.5 * logvar).exp(), kl

    def agent(self, feats: Tensor, valid: Tensor, identity: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """feats (T, N, F), valid (T, N), identity (N, D) -> agent noise (N, Ra) and its KL (N,) (`eps`: the draw)."""
        assert self.agent_net is not None
        w = valid.float()[..., None]  # (T, N, 1)
        pooled = (feats * w).sum(0) / w.sum(0).clamp_min(1)  # (N, F): mean over the agent's valid ticks
        return self.sample(self.agent_net(torch.cat([pooled, identity], -1)), eps=eps)

    def tick(self, feats: Tensor, identity: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """feats (N, F) of one tick, identity (N, D) -> tick noise (N, Rt) and its KL (N,)."""
        assert self.tick_net is not None
        return self.sample(self.tick_net(torch.cat([feats, identity], -1)), generator)


def drawn_onehot(drawn: Tensor, actions: int) -> Tensor:
    """(N,) drawn decisions -> (N, A) one-hot, the way a state records them; -1: none (zeros)."""
    onehot = torch.zeros(len(drawn), actions, device=drawn.device)
    ok = drawn >= 0
    onehot[ok, drawn[ok].long()] = 1.0
    return onehot


def with_drawn(state: AgentState, drawn: Tensor, actions: int) -> AgentState:
    """The state with drawn decisions (N,) recorded as one-hot (N, A); -1: none (zeros)."""
    return replace(state, drawn=drawn_onehot(drawn.to(state.channels.device), actions))
