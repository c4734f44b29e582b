"""The student's per-agent state, as named tensors (never column numbers).

Notation: N agents | C anchored channels | Z free latent | H memory summary | S episodic slots |
M slot width | X expression width | A actions | R stochastic latent (agent + tick parts).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class AgentState:
    channels: Tensor
    """(N, C) anchored channels in 0..1 (trust_institutions, ...; names in the scenario)."""
    latent: Tensor
    """(N, Z) free latent, read by linear probes."""
    memory: Tensor
    """(N, H) recurrent memory summary (GRU)."""
    episodes: Tensor
    """(N, S, M) episodic buffer."""
    episode_salience: Tensor
    """(N, S) salience of each slot in 0..1 (0: empty)."""
    expression: Tensor
    """(N, X) last broadcast expression (what neighbours attend to)."""
    decision_logits: Tensor
    """(N, A) logits of the last decision distribution."""
    stance: Tensor
    """(N,) last expressed stance in -1..1 (broadcast with the expression: what neighbours hear)."""
    drawn: Tensor
    """(N, A) one-hot of the last *drawn* decision (zeros before the first; the teacher's in
    training, the sampled one in rollouts): agents stick with what they did, not with a distribution."""
    agent_noise: Tensor
    """(N, Ra) the agent's stochastic latent, drawn once per run from the prior (N(0, 1)) in
    rollouts, inferred from the teacher's trajectory in training: heterogeneity identity cannot explain."""

    @classmethod
    def initial(cls, n: int, channels: int, latent: int, memory: int, slots: int, slot_dim: int,
                expression: int, actions: int, agent_noise: int = 0, device: torch.device | str = "cpu") -> "AgentState":
        z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
        return cls(channels=torch.full((n, channels), 0.5, device=device), latent=z(n, latent), memory=z(n, memory),
                   episodes=z(n, slots, slot_dim), episode_salience=z(n, slots), expression=z(n, expression),
                   decision_logits=z(n, actions), stance=z(n), drawn=z(n, actions), agent_noise=z(n, agent_noise))

    def detach(self) -> "AgentState":
        return replace(self, **{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def to(self, device) -> "AgentState":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, idx: Tensor) -> "AgentState":
        """The state of a subset of agents (a sampled subgraph)."""
        return replace(self, **{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @property
    def n(self) -> int:
        return self.channels.shape[0]
