"""The planted reference society's parameters (`configs/teacher/planted*.yaml`, `policy: planted`).

A documented parametric process whose answers are known exactly: the known-answer test of
distillation. Per agent i and tick t, with the neighbours S_it shown by the society loop and
the events E_it it sees:

    opinion   o_it = identity_i                                   (identity effects)
                   + dose · m_i · (1/K) Σ_{j ∈ S_it} β_type(j→i) · s_j,t-1   (social influence)
                   + Σ_{e ∈ E_it} (γ · valence_e · credibility_e + source[e] + framing[e])  (events)
                   + r_i                                           (agent random effect, N(0, σ_agent²))
                   + σ_noise · ξ_it                                (per-tick noise, N(0, 1))
    logits    u_ita = bias_a + scale · lean_a · o_it + persistence · 1[a = d_i,t-1]
    decision  p_it = softmax(u_it);  d_it ~ p_it
    stance    s_it = clip(tanh(o_it) + σ_stance · ζ_it, -1, 1)      (what neighbours hear next tick)
    channels  μ_itc = sigmoid(channel_bias_c + loading_c · o_it + η_ic + σ_channel · ν_itc);
              channel_dist_itc[l] ∝ exp(-(l - 10 μ_itc)² / (2 spread²)), l = 0..10;
              channels_itc = Σ_l l · channel_dist_itc[l] / 10 (the teacher's rule)
    salience  sigmoid(-1 + 2 |events term| + 0.5 ζ'_it)

identity_i = Σ_attr identity[attr][category_i(attr)] + Σ_attr identity_numeric[attr] · x_i(attr),
x the numeric attribute rescaled to -1..1 over its range. m_i = conformity[category_i] of the
`conformity_attribute` (1 where unlisted). lean_a: the action's place on the opinion axis
(`action_lean`; default evenly spaced from +1 for the first action to -1 for the last).
Numeric actions: the drawn bin's number is uniform within the bin. Message and reasoning
embeddings are fixed seeded directions (stance, opinion, the drawn action) plus noise; texts
are short templates naming the largest terms.

Randomness: r_i and η_ic from the scenario `seed` (shared by noise-floor runs); ξ, ζ, ν and the
draws from `llm_seed` (the process's own noise: two llm seeds give the floor).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from lsm.config import Checked
from lsm.society.loop.neighbors import NeighborRule
from lsm.society.world.graph import EDGE_TYPES


def default_influence() -> dict[str, float]:
    return {"household": 1.6, "friend": 1.0, "professional": 0.6, "weak_tie": 0.3, "media": 0.8}


@dataclass
class EventEffects(Checked):
    valence_credibility: float = 1.0
    """γ: opinion push per unit of valence × credibility of an event seen."""
    source_type: dict[str, float] = field(default_factory=dict)
    """Extra push by the event's source type (unlisted: 0)."""
    framing: dict[str, float] = field(default_factory=dict)
    """Extra push by the event's framing (unlisted: 0)."""


@dataclass
class PlantedConfig(Checked):
    """Parameters of the planted reference society (module docstring: the process, term by term)."""

    policy: Literal["planted"] = "planted"
    name: str = "planted"
    neighbors: NeighborRule = field(default_factory=NeighborRule)
    """Who hears whom (`society.loop.neighbors.NeighborRule`, the one definition): K shown per
    agent-tick at most, tie-type weights, varied counts (which identify the effect of hearing others)."""
    identity: dict[str, dict[str, float]] = field(default_factory=dict)
    """Opinion effect of each category of a categorical attribute (unlisted: 0)."""
    identity_numeric: dict[str, float] = field(default_factory=dict)
    """Opinion effect per unit of a numeric attribute rescaled to -1..1 over its range."""
    influence: dict[str, float] = field(default_factory=default_influence)
    """β: opinion push per edge type from a shown neighbour's stance (divided by K)."""
    dose: float = 1.0
    """Multiplies every β: 0 is the null variant (no social influence)."""
    conformity_attribute: str | None = None
    """Categorical attribute whose categories modulate the influence (m_i)."""
    conformity: dict[str, float] = field(default_factory=dict)
    """m_i by category of `conformity_attribute` (unlisted: 1)."""
    events: EventEffects = field(default_factory=EventEffects)
    agent_sd: float = 0.5
    """σ_agent: sd of the agent random effect r_i."""
    noise_sd: float = 0.3
    """σ_noise: sd of the per-tick opinion noise."""
    action_lean: dict[str, float] = field(default_factory=dict)
    """lean_a by action label, -1..1 (unlisted: evenly spaced from +1 for the first action to -1 for the last)."""
    action_bias: dict[str, float] = field(default_factory=dict)
    """bias_a by action label (unlisted: 0); a strongly negative bias makes a rare action."""
    scale: float = 2.0
    """How sharply the opinion separates the actions."""
    persistence: float = 0.8
    """Logit bonus of the agent's own last drawn decision."""
    stance_sd: float = 0.15
    channel_loading: dict[str, float] = field(default_factory=dict)
    """loading_c by channel name (unlisted: `default_loading`)."""
    channel_bias: dict[str, float] = field(default_factory=dict)
    default_loading: float = 0.6
    channel_agent_sd: float = 0.4
    """sd of the per-agent channel effect η_ic."""
    channel_noise_sd: float = 0.2
    channel_spread: float = 1.2
    """Width (in rating levels) of each channel's 11-level distribution."""
    embedding_seed: int = 1234
    """Seed of the fixed directions the message and reasoning embeddings are made of."""
    embedding_noise: float = 0.3

    def check(self) -> Iterable[tuple[str, Any, str]]:
        for t, b in self.influence.items():
            if t not in EDGE_TYPES:
                yield f"influence.{t}", b, f"an edge type among {list(EDGE_TYPES)}"
        for k in ("agent_sd", "noise_sd", "stance_sd", "channel_agent_sd", "channel_noise_sd", "embedding_noise"):
            if not getattr(self, k) >= 0:
                yield k, getattr(self, k), "a standard deviation >= 0"
        if not self.channel_spread > 0:
            yield "channel_spread", self.channel_spread, "a width > 0"
        if self.conformity and not self.conformity_attribute:
            yield "conformity_attribute", None, "the attribute whose categories `conformity` lists"
        for a, v in self.action_lean.items():
            if not -1 <= v <= 1:
                yield f"action_lean.{a}", v, "a number from -1 to 1"

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        return NeighborRule.upgrade_flat(data)  # planted configs before 2026-12 spelled the rule flat
