"""Typed, directed social graphs sampled in O(E) (never O(N^2)).

Edge types (`EDGE_TYPES`, codes 0..4): household, friend, professional, weak_tie, media.
Convention (as in PyG): information flows from `edge_index[0]` (sender j) to `edge_index[1]`
(receiver i); agent i attends over its incoming edges. Undirected relations (household,
friend, professional, weak tie) are stored in both directions; `media` edges run from an
opinion leader to each follower. Edges are sorted by (receiver, type, sender) — CSR order.

How each type is sampled (all vectorised, memory O(N + E)):
  * household: agents sorted by locality (`group_by`) and a noisy similarity key
    (`similar_on`), then cut into households with sizes from `size_distribution`; cliques.
  * friend / professional: each eligible agent starts NegBin(mean/2) ties. With probability
    `homophily[a]` a partner is drawn from the agents sharing attribute a (numeric
    attributes use quantile bins; "a+b" means both), otherwise uniformly; a
    `triadic_closure` share of ties closes triangles (friend of a friend). Symmetrised.
  * weak_tie: Chung–Lu with Pareto weights (heavy-tailed degrees), optionally homophilous.
  * media: a small share of agents are opinion leaders with Pareto popularity; everyone
    follows Poisson(`follows_mean`) of them, ∝ popularity, homophilous on e.g. party.
Named media *outlets* are not agents: agents subscribe to them (`outlet_follow`), and a
scenario event can be shown to an outlet's followers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np

from lsm.config import Checked, ConfigError, Problem, load_config
from lsm.limits import MAX_CONTEXT_CHARS, MAX_DEGREE, MAX_MEAN_DEGREE, label_problem, name_problem
from lsm.society import seeds

EDGE_TYPES = ("household", "friend", "professional", "weak_tie", "media")
HOUSEHOLD, FRIEND, PROFESSIONAL, WEAK_TIE, MEDIA = range(5)


# --------------------------------------------------------------------------- config schema
def _check_homophily(h: dict[str, float], prefix: str = "homophily") -> Iterable[tuple[str, Any, str]]:
    for attr, p in h.items():
        if not 0 <= p <= 1:
            yield f"{prefix}.{attr}", p, "a probability in [0, 1]"
    if sum(h.values()) > 1 + 1e-9:
        yield prefix, h, "probabilities summing to at most 1 (the rest are uniform draws)"


def _check_degrees(mean_degree: float, max_degree: int) -> Iterable[tuple[str, Any, str]]:
    if not 0 <= mean_degree <= MAX_MEAN_DEGREE:
        yield "mean_degree", mean_degree, f"a number from 0 to {MAX_MEAN_DEGREE:,}"
    if not 1 <= max_degree <= MAX_DEGREE:
        yield "max_degree", max_degree, f"a number from 1 to {MAX_DEGREE:,}"


@dataclass
class HouseholdSpec(Checked):
    size_distribution: dict[int, float] = field(default_factory=lambda: {1: 0.28, 2: 0.35, 3: 0.15, 4: 0.13, 5: 0.06, 6: 0.03})
    """Household size (1..6) -> share of households."""
    group_by: list[str] = field(default_factory=list)
    """Categorical attributes all members share (locality), e.g. [area]."""
    similar_on: list[str] = field(default_factory=list)
    """Attributes members tend to be similar on (age, party, ...)."""
    mixing: float = 0.5
    """Noise added to the similarity key (0 = sorted strictly by similarity)."""
    weight: float = 1.0

    def check(self) -> Iterable[tuple[str, Any, str]]:
        for size, share in self.size_distribution.items():
            if not 1 <= size <= 6:
                yield f"size_distribution.{size}", size, "a household size between 1 and 6"
            if share < 0:
                yield f"size_distribution.{size}", share, "a share >= 0"
        if sum(self.size_distribution.values()) <= 0:
            yield "size_distribution", self.size_distribution, "shares with a positive sum"
        if self.mixing < 0:
            yield "mixing", self.mixing, "a number >= 0"


@dataclass
class TieSpec(Checked):
    """Friend or professional ties."""

    mean_degree: float
    """Mean number of ties per eligible agent (each tie is stored in both directions)."""
    dispersion: float = 2.0
    """Negative-binomial shape of the number of ties started (smaller = more unequal)."""
    homophily: dict[str, float] = field(default_factory=dict)
    """Attribute (or "a+b") -> probability that a tie is drawn among agents sharing it."""
    triadic_closure: float = 0.0
    """Share of ties that close a triangle (friend of a friend)."""
    exclude: dict[str, list[str]] = field(default_factory=dict)
    """Agents with these categories form no ties of this type, e.g. {occupation: [retired]}."""
    max_degree: int = 200
    weight: float = 1.0

    def check(self) -> Iterable[tuple[str, Any, str]]:
        yield from _check_degrees(self.mean_degree, self.max_degree)
        if self.dispersion <= 0:
            yield "dispersion", self.dispersion, "a positive number"
        if not 0 <= self.triadic_closure < 1:
            yield "triadic_closure", self.triadic_closure, "a share in [0, 1)"
        yield from _check_homophily(self.homophily)


@dataclass
class WeakTieSpec(Checked):
    mean_degree: float = 5.0
    exponent: float = 2.5
    """Power-law exponent of the degree tail (2 < exponent; smaller = heavier tail)."""
    max_degree: int = 1000
    homophily: dict[str, float] = field(default_factory=dict)
    weight: float = 0.3

    def check(self) -> Iterable[tuple[str, Any, str]]:
        yield from _check_degrees(self.mean_degree, self.max_degree)
        if self.exponent <= 2:
            yield "exponent", self.exponent, "a number > 2 (a finite mean degree)"
        yield from _check_homophily(self.homophily)


@dataclass
class OutletSpec(Checked):
    name: str
    reach: float
    """Share of agents following the outlet."""
    description: str = ""
    audience: dict[str, dict[str, float]] = field(default_factory=dict)
    """attribute -> category -> relative propensity to follow (unlisted categories: 1)."""
    text_limits: ClassVar[dict[str, int]] = {"description": MAX_CONTEXT_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := label_problem(self.name):
            yield "name", self.name, bad
        if not 0 <= self.reach <= 1:
            yield "reach", self.reach, "a share in [0, 1]"
        for attr, row in self.audience.items():
            for cat, w in row.items():
                if w < 0:
                    yield f"audience.{attr}.{cat}", w, "a propensity >= 0"


@dataclass
class MediaSpec(Checked):
    leader_share: float = 0.01
    """Share of agents who are opinion leaders (followed through `media` edges)."""
    follows_mean: float = 3.0
    exponent: float = 2.2
    """Power-law exponent of leaders' popularity."""
    homophily: dict[str, float] = field(default_factory=dict)
    weight: float = 0.5
    outlets: list[OutletSpec] = field(default_factory=list)

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if not 0 <= self.leader_share <= 1:
            yield "leader_share", self.leader_share, "a share in [0, 1]"
        if not 0 <= self.follows_mean <= MAX_MEAN_DEGREE:
            yield "follows_mean", self.follows_mean, f"a number from 0 to {MAX_MEAN_DEGREE:,}"
        if self.exponent <= 1:
            yield "exponent", self.exponent, "a number > 1"
        yield from _check_homophily(self.homophily)
        names = [o.name for o in self.outlets]
        for i, name in enumerate(names):
            if names.index(name) != i:
                yield f"outlets[{i}].name", name, "a name not used by another outlet"


@dataclass
class GraphConfig(Checked):
    name: str
    description: str = ""
    household: HouseholdSpec = field(default_factory=HouseholdSpec)
    friend: TieSpec = field(default_factory=lambda: TieSpec(mean_degree=8.0))
    professional: TieSpec = field(default_factory=lambda: TieSpec(mean_degree=6.0))
    weak_tie: WeakTieSpec = field(default_factory=WeakTieSpec)
    media: MediaSpec = field(default_factory=MediaSpec)
    quantile_bins: int = 8
    """Numeric attributes used for homophily are cut into this many quantile bins."""
    text_limits: ClassVar[dict[str, int]] = {"description": MAX_CONTEXT_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := name_problem(self.name):
            yield "name", self.name, bad
        if not 1 <= self.quantile_bins <= 100:
            yield "quantile_bins", self.quantile_bins, "a number of bins from 1 to 100"


def load_graph_config(path: str | Path) -> GraphConfig:
    return load_config(GraphConfig, path, kind="graph config")


# --------------------------------------------------------------------------- the graph
@dataclass
class SocialGraph:
    """A typed directed graph over N agents (see the module docstring for conventions).

    Shapes: edge_index [2, E] (row 0 sender j, row 1 receiver i), edge_type [E] int8 codes into
    EDGE_TYPES, edge_weight [E] float32, household [N] int32, outlet_follow [2, F] (agent,
    outlet index into `outlets`).
    """

    n: int
    edge_index: np.ndarray
    edge_type: np.ndarray
    edge_weight: np.ndarray
    household: np.ndarray
    outlets: list[str] = field(default_factory=list)
    outlet_follow: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int32))
    leaders: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def in_degree(self, edge_type: int | None = None) -> np.ndarray:
        """Number of incoming edges per agent, [N] (optionally of one type)."""
        dst = self.edge_index[1] if edge_type is None else self.edge_index[1][self.edge_type == edge_type]
        return np.bincount(dst, minlength=self.n)

    def followers_of(self, outlet: str) -> np.ndarray:
        """Bool mask [N] of the agents following outlet `outlet`."""
        k = self.outlets.index(outlet)
        mask = np.zeros(self.n, dtype=bool)
        mask[self.outlet_follow[0][self.outlet_follow[1] == k]] = True
        return mask


class _Groups:
    """Eligible agents bucketed by a group code, for fast 'random member of my group' draws.

    `codes` [N] gives every agent's group; only `members` (default: all) can be drawn. With
    `weights` [N], members are drawn ∝ weight (O(log N) per draw via cumulative sums). A
    sender whose group has no member gets -1.
    """

    def __init__(self, codes: np.ndarray, weights: np.ndarray | None = None, members: np.ndarray | None = None):
        members = np.arange(len(codes)) if members is None else members
        member_codes = codes[members]
        self.order = members[np.argsort(member_codes, kind="stable")].astype(np.int64)
        counts = np.bincount(member_codes, minlength=int(codes.max(initial=0)) + 1)
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.size = counts.astype(np.int64)
        self.codes = codes
        self.cumw = None if weights is None else np.cumsum(weights[self.order].astype(np.float64))

    def draw(self, of_agents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = self.codes[of_agents]
        start, size = self.start[g], self.size[g]
        empty = size == 0
        size = np.maximum(size, 1)
        if self.cumw is None:
            pos = start + (rng.random(len(g)) * size).astype(np.int64)
        else:
            lo = np.where(start > 0, self.cumw[np.maximum(start - 1, 0)], 0.0)
            hi = self.cumw[np.minimum(start + size - 1, len(self.cumw) - 1)]
            pos = np.searchsorted(self.cumw, lo + rng.random(len(g)) * (hi - lo), side="right")
            pos = np.clip(pos, start, start + size - 1)
        out = self.order[np.minimum(pos, len(self.order) - 1)] if len(self.order) else np.zeros(len(g), np.int64)
        out[empty] = -1
        return out


class _GroupKeys:
    """Group codes for homophily keys: categorical codes, quantile bins, or "a+b" composites."""

    def __init__(self, pop, bins: int, source: str | None):
        self.pop, self.bins, self.source = pop, bins, source
        self._cache: dict[str, np.ndarray] = {}

    def codes(self, key: str, field_path: str) -> np.ndarray:
        if key in self._cache:
            return self._cache[key]
        parts = key.split("+")
        code = np.zeros(self.pop.n, dtype=np.int64)
        for part in parts:
            if part in self.pop.categorical:
                c, k = self.pop.categorical[part].astype(np.int64), len(self.pop.categories[part])
            elif part in self.pop.numeric:
                v = self.pop.numeric[part]
                edges = np.unique(np.quantile(v, np.linspace(0, 1, self.bins + 1)[1:-1]))
                c, k = np.searchsorted(edges, v, side="right").astype(np.int64), len(edges) + 1
            else:
                raise ConfigError(self.source, [Problem(field_path, part, f"an attribute of the population ({', '.join(self.pop.attributes)})")], "graph config")
            code = code * k + c
        _, code = np.unique(code, return_inverse=True)
        self._cache[key] = code
        return code


def _homophilous_partners(src: np.ndarray, homophily: dict[str, float], keys: _GroupKeys, n: int,
                          rng: np.random.Generator, path: str, weights: np.ndarray | None = None,
                          pool: np.ndarray | None = None) -> np.ndarray:
    """For each sender, one partner: same group on a homophily key w.p. h[key], else at random.

    `pool` [N] bool restricts partners to eligible agents; `weights` [N] draws them ∝ weight.
    A sender whose group holds no eligible agent gets a random eligible partner.
    """
    members = None if pool is None else np.nonzero(pool)[0]
    anyone = _Groups(np.zeros(n, dtype=np.int64), weights, members)
    dst = np.empty(len(src), dtype=np.int64)
    attrs = list(homophily)
    probs = np.array([homophily[a] for a in attrs] + [max(0.0, 1 - sum(homophily.values()))])
    choice = rng.choice(len(probs), size=len(src), p=probs / probs.sum())
    for k in range(len(probs)):
        sel = np.nonzero(choice == k)[0]
        if not len(sel):
            continue
        if k < len(attrs):
            codes = keys.codes(attrs[k], f"{path}.homophily.{attrs[k]}")
            dst[sel] = _Groups(codes, weights, members).draw(src[sel], rng)
        else:
            dst[sel] = anyone.draw(src[sel], rng)
    missing = np.nonzero(dst < 0)[0]
    if len(missing):
        dst[missing] = anyone.draw(src[missing], rng)
    return dst


def _eligible(pop, exclude: dict[str, list[str]], source: str | None, path: str) -> np.ndarray:
    mask = np.ones(pop.n, dtype=bool)
    for attr, cats in exclude.items():
        if attr not in pop.categorical:
            raise ConfigError(source, [Problem(f"{path}.exclude.{attr}", attr, f"a categorical attribute of the population ({', '.join(pop.categorical)})")], "graph config")
        for cat in cats:
            if cat not in pop.categories[attr]:
                raise ConfigError(source, [Problem(f"{path}.exclude.{attr}", cat, f"a category of '{attr}' ({', '.join(pop.categories[attr])})")], "graph config")
            mask &= pop.categorical[attr] != pop.categories[attr].index(cat)
    return mask


def _csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(src, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    return indptr, dst[order]


def _ties(spec: TieSpec, pop, keys: _GroupKeys, rng: np.random.Generator, source: str | None, path: str):
    """Undirected homophilous ties with triadic closure; returns (src, dst) one direction."""
    n = pop.n
    pool = _eligible(pop, spec.exclude, source, path)
    eligible = np.nonzero(pool)[0]
    if spec.mean_degree == 0 or len(eligible) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    half = spec.mean_degree / 2  # each tie is started by one side and mirrored
    r = spec.dispersion
    started = rng.negative_binomial(r, r / (r + half), size=len(eligible))
    started = np.minimum(started, spec.max_degree // 2)
    closing = rng.binomial(started, spec.triadic_closure)
    src = np.repeat(eligible, started - closing)
    dst = _homophilous_partners(src, spec.homophily, keys, n, rng, path, pool=pool)
    if closing.sum() and len(src):
        # Friend of a friend: i -> random neighbour j -> random neighbour k of j.
        both_src = np.concatenate([src, dst])
        both_dst = np.concatenate([dst, src])
        indptr, nbr = _csr(both_src, both_dst, n)
        deg = np.diff(indptr)
        c_src = np.repeat(eligible, closing)
        c_src = c_src[deg[c_src] > 0]
        j = nbr[indptr[c_src] + (rng.random(len(c_src)) * deg[c_src]).astype(np.int64)]
        k = nbr[indptr[j] + (rng.random(len(j)) * deg[j]).astype(np.int64)]
        src, dst = np.concatenate([src, c_src]), np.concatenate([dst, k])
    return src, dst


def _households(spec: HouseholdSpec, pop, keys: _GroupKeys, rng: np.random.Generator, source: str | None):
    n = pop.n
    sizes = np.array(sorted(spec.size_distribution), dtype=np.int64)
    probs = np.array([spec.size_distribution[s] for s in sizes], dtype=np.float64)
    probs /= probs.sum()
    mean_size = float((sizes * probs).sum())
    draws = rng.choice(sizes, size=int(n / mean_size * 1.2) + 10, p=probs)
    while draws.sum() < n:
        draws = np.concatenate([draws, rng.choice(sizes, size=len(draws), p=probs)])
    cut = np.searchsorted(np.cumsum(draws), n)
    hh_sizes = draws[: cut + 1].copy()
    hh_sizes[-1] -= hh_sizes.sum() - n  # last household takes what is left
    hh_sizes = hh_sizes[hh_sizes > 0]

    similar = np.zeros(n)
    for attr in spec.similar_on:
        c = keys.codes(attr, f"household.similar_on.{attr}").astype(np.float64)
        similar += (c - c.mean()) / (c.std() + 1e-9)
    similar += spec.mixing * rng.standard_normal(n) * max(1.0, np.sqrt(len(spec.similar_on)))
    sort_keys = [similar] + [keys.codes(a, f"household.group_by.{a}") for a in reversed(spec.group_by)]
    order = np.lexsort(sort_keys)
    household = np.empty(n, dtype=np.int32)
    household[order] = np.repeat(np.arange(len(hh_sizes), dtype=np.int32), hh_sizes)

    srcs, dsts = [], []
    offsets = np.concatenate([[0], np.cumsum(hh_sizes)[:-1]])
    for s in range(2, int(hh_sizes.max(initial=1)) + 1):
        start = offsets[hh_sizes == s]
        if not len(start):
            continue
        members = order[start[:, None] + np.arange(s)[None, :]]  # [H_s, s]
        a, b = np.nonzero(~np.eye(s, dtype=bool))
        srcs.append(members[:, a].ravel())
        dsts.append(members[:, b].ravel())
    src = np.concatenate(srcs) if srcs else np.zeros(0, np.int64)
    dst = np.concatenate(dsts) if dsts else np.zeros(0, np.int64)
    return src, dst, household


def _pareto_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    # Chung–Lu: expected degree ∝ weight; a Pareto(α = exponent - 1) weight gives a degree
    # tail P(k) ~ k^-exponent.
    return (1.0 - rng.random(n)) ** (-1.0 / (exponent - 1.0))


def _weak_ties(spec: WeakTieSpec, pop, keys: _GroupKeys, rng: np.random.Generator):
    n = pop.n
    m = int(round(n * spec.mean_degree / 2))
    if m == 0 or n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    w = _pareto_weights(n, spec.exponent, rng)
    w = np.minimum(w, w.mean() * spec.max_degree / max(spec.mean_degree, 1e-9))
    src = _Groups(np.zeros(n, dtype=np.int64), w).draw(np.zeros(m, dtype=np.int64), rng)
    dst = _homophilous_partners(src, spec.homophily, keys, n, rng, "weak_tie", weights=w)
    return src, dst


def _media(spec: MediaSpec, pop, keys: _GroupKeys, rng: np.random.Generator, source: str | None):
    n = pop.n
    n_leaders = int(round(spec.leader_share * n))
    empty = np.zeros(0, np.int64)
    leaders = np.sort(rng.choice(n, size=n_leaders, replace=False)) if n_leaders else empty
    if n_leaders and spec.follows_mean > 0:
        pop_w = np.zeros(n)
        pop_w[leaders] = _pareto_weights(n_leaders, spec.exponent, rng)
        follows = rng.poisson(spec.follows_mean, size=n)
        follower = np.repeat(np.arange(n), follows)
        pool = np.zeros(n, dtype=bool)
        pool[leaders] = True
        leader = _homophilous_partners(follower, spec.homophily, keys, n, rng, "media", weights=pop_w, pool=pool)
        src, dst = leader, follower
    else:
        src, dst = empty, empty
    # Outlet subscriptions.
    agent_idx, outlet_idx = [], []
    for k, outlet in enumerate(spec.outlets):
        propensity = np.ones(n)
        for attr, row in outlet.audience.items():
            if attr not in pop.categorical:
                raise ConfigError(source, [Problem(f"media.outlets[{k}].audience.{attr}", attr, f"a categorical attribute ({', '.join(pop.categorical)})")], "graph config")
            table = np.ones(len(pop.categories[attr]))
            for cat, wgt in row.items():
                if cat not in pop.categories[attr]:
                    raise ConfigError(source, [Problem(f"media.outlets[{k}].audience.{attr}.{cat}", cat, f"a category of '{attr}' ({', '.join(pop.categories[attr])})")], "graph config")
                table[pop.categories[attr].index(cat)] = wgt
            propensity *= table[pop.categorical[attr]]
        p = np.clip(outlet.reach * propensity / max(propensity.mean(), 1e-12), 0, 1)
        who = np.nonzero(rng.random(n) < p)[0]
        agent_idx.append(who)
        outlet_idx.append(np.full(len(who), k))
    outlet_follow = (np.stack([np.concatenate(agent_idx), np.concatenate(outlet_idx)]).astype(np.int32)
                     if agent_idx else np.zeros((2, 0), np.int32))
    return src, dst, leaders.astype(np.int32), outlet_follow


GRAPH_STEPS = ("households", "friends", "professional ties", "weak ties", "media", "merging edges")
"""The steps of `build_graph`, in order (`step` is called with each name as it starts)."""


def build_graph(config: GraphConfig, pop, seed: int, source: str | None = None,
                step: Callable[[str], None] | None = None) -> SocialGraph:
    """Sample the typed social graph for population `pop` (deterministic for `seed`); `step(name)`
    is told each of `GRAPH_STEPS` as it starts (a progress bar)."""
    step = step or (lambda name: None)
    n = pop.n
    rng = seeds.rng(seed, seeds.Stream.GRAPH)
    keys = _GroupKeys(pop, config.quantile_bins, source)
    parts = []  # (src, dst, type, weight, symmetric)

    step(GRAPH_STEPS[0])
    h_src, h_dst, household = _households(config.household, pop, keys, rng, source)
    parts.append((h_src, h_dst, HOUSEHOLD, config.household.weight, False))  # already both ways
    step(GRAPH_STEPS[1])
    f_src, f_dst = _ties(config.friend, pop, keys, rng, source, "friend")
    parts.append((f_src, f_dst, FRIEND, config.friend.weight, True))
    step(GRAPH_STEPS[2])
    p_src, p_dst = _ties(config.professional, pop, keys, rng, source, "professional")
    parts.append((p_src, p_dst, PROFESSIONAL, config.professional.weight, True))
    step(GRAPH_STEPS[3])
    w_src, w_dst = _weak_ties(config.weak_tie, pop, keys, rng)
    parts.append((w_src, w_dst, WEAK_TIE, config.weak_tie.weight, True))
    step(GRAPH_STEPS[4])
    m_src, m_dst, leaders, outlet_follow = _media(config.media, pop, keys, rng, source)
    parts.append((m_src, m_dst, MEDIA, config.media.weight, False))
    step(GRAPH_STEPS[5])

    # One int64 key per edge sorts by (receiver, type, sender) and removes duplicates
    # within a type; self-loops are dropped.
    keys_all, weights = [], np.array([p[3] for p in parts], dtype=np.float32)
    for src, dst, etype, _, symmetric in parts:
        if symmetric:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        keep = src != dst
        src, dst = src[keep].astype(np.int64), dst[keep].astype(np.int64)
        keys_all.append((dst * len(EDGE_TYPES) + etype) * n + src)
        del src, dst
    key = np.unique(np.concatenate(keys_all))
    del keys_all
    src = (key % n).astype(np.int32 if n < 2**31 else np.int64)
    rest = key // n
    etype = (rest % len(EDGE_TYPES)).astype(np.int8)
    dst = (rest // len(EDGE_TYPES)).astype(src.dtype)
    del key, rest
    return SocialGraph(
        n=n,
        edge_index=np.stack([src, dst]),
        edge_type=etype,
        edge_weight=weights[etype],
        household=household,
        outlets=[o.name for o in config.media.outlets],
        outlet_follow=outlet_follow,
        leaders=leaders,
    )


# --------------------------------------------------------------------------- statistics
def degree_stats(graph: SocialGraph) -> dict[str, dict[str, float]]:
    """Per edge type (and 'all'): in-degree mean / median / max over all agents."""
    out = {}
    for k, name in [(None, "all")] + list(enumerate(EDGE_TYPES)):
        deg = graph.in_degree(k)
        out[name] = {"edges": int(deg.sum()), "mean": float(deg.mean()), "median": float(np.median(deg)), "max": int(deg.max(initial=0))}
    return out


def homophily_stats(graph: SocialGraph, pop, attributes: list[str], max_edges: int = 2_000_000, seed: int = 0) -> dict[str, dict[str, float]]:
    """How much more alike connected agents are than random pairs, per attribute and type.

    Categorical: share of edges joining the same category over the random-pair baseline
    Σ p_c² (1 = no homophily). Numeric: Pearson correlation of the two endpoints' values
    (0 = none). Computed on at most `max_edges` sampled edges.
    """
    rng = seeds.rng(seed, seeds.Stream.HOMOPHILY)
    e = graph.num_edges
    idx = rng.choice(e, size=max_edges, replace=False) if e > max_edges else np.arange(e)
    src, dst, et = graph.edge_index[0][idx], graph.edge_index[1][idx], graph.edge_type[idx]
    out: dict[str, dict[str, float]] = {}
    for attr in attributes:
        row = {}
        for k, name in [(None, "all")] + list(enumerate(EDGE_TYPES)):
            sel = slice(None) if k is None else et == k
            s, d = src[sel], dst[sel]
            if len(s) < 2:
                row[name] = float("nan")
                continue
            if attr in pop.categorical:
                codes = pop.categorical[attr]
                p = np.bincount(codes, minlength=len(pop.categories[attr])) / pop.n
                row[name] = float((codes[s] == codes[d]).mean() / max((p**2).sum(), 1e-12))
            else:
                v = pop.numeric[attr]
                a, b = v[s].astype(np.float64), v[d].astype(np.float64)
                row[name] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        out[attr] = row
    return out


def homophily_attributes(config: GraphConfig, pop) -> list[str]:
    """Every (single) attribute the config asks homophily on and the population has."""
    seen: list[str] = []
    for h in (config.friend.homophily, config.professional.homophily, config.weak_tie.homophily, config.media.homophily):
        for key in h:
            for part in key.split("+"):
                if part in pop.attributes and part not in seen:
                    seen.append(part)
    for part in config.household.similar_on + config.household.group_by:
        if part in pop.attributes and part not in seen:
            seen.append(part)
    return seen


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
