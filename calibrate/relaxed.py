"""A rollout of the student that is differentiable in the scenario's unknowns
(docs/calibrate.md#the-differentiable-rollout).

The rollout is `lsm rollout`'s own: the society loop shows each agent its events and neighbours,
the student advances every agent one tick per pass, each decision is drawn by the inverse CDF
at a per-agent uniform seeded by the run's seed, and triggers read the drawn population. Two
things make it differentiable:

- the unknowns enter as tensors: an event's numeric features in the student's event inputs, a
  group's offset in its decision logits (`TickInputs.logit_offset`). The run is made from the
  scenario with the values written in (what `lsm rollout` of the fitted scenario runs), plus
  θ − θ.detach(): zero in value, the path of the gradient;
- each draw is straight-through (`SocietyModel.straight_through`): the state records the one-hot
  of the drawn action, and the gradient flows as if it were the distribution.

With the random numbers fixed (common random numbers: the same seed for every evaluation), the
series is a deterministic function of the values; the fit compares the *expected* series (the
mean of the agents' decision distributions; the cumulative share 1 − Π_t (1 − p_t) along each
agent's path) with the observations. Each tick is recomputed in the backward pass
(`torch.utils.checkpoint`), so memory holds one tick's activations and the states between ticks.

Notation: T ticks | N agents | A actions | C channels | M observations | P unknowns | G groups.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from lsm.calibrate.observed import Observation, group_weights, parse_group
from lsm.calibrate.params import ParamSpace, scenario_dict
from lsm.infer.rollout import RolloutConfig, StudentPolicy
from lsm.model.checkpoint import Student
from lsm.model.society import TickInputs
from lsm.model.tick import advance
from lsm.society.groups import logit_offsets, where_mask
from lsm.society.loop.runner import Perception, Progress, SocietyLoop, TickOutput
from lsm.society.scenario import EVENT_FEATURES, Scenario
from lsm.society.world import World

CHECKPOINT_AGENTS = 50_000
"""Above this many agents each tick is recomputed in the backward pass, a chunk of agents at a time
(activation checkpointing, `SocietyModel.chunked`; the chunk is the rollout's `agent_chunk`, 16,384
on a CPU): memory then holds the states between ticks and one chunk's activations. Below, the
third more time it costs buys nothing (10^4 agents x 8 ticks keep under 4 GiB)."""


@dataclass
class Evaluation:
    """One rollout at one point of the unknowns."""

    values: np.ndarray
    """(P,) the unknowns' values."""
    expected: Tensor
    """(M,) the expected series at the observations (differentiable in the values when asked)."""
    drawn: np.ndarray
    """(M,) the same from the drawn decisions (what a rollout file of the fitted scenario holds)."""
    loss: Tensor
    """½ Σ (expected − observed)² / (se² + the run's own sampling variance) (`Simulator.variance`):
    the observations' negative log-likelihood (Gaussian), up to a constant."""
    seconds: float


class RelaxedPolicy(StudentPolicy):
    """The student policy with the unknowns as tensors and straight-through draws; keeps each
    tick's decision distributions and channels for the series."""

    def __init__(self, student: Student, world: World, scenario: Scenario, cfg: RolloutConfig):
        super().__init__(student, world, scenario, cfg)
        self.theta: Tensor | None = None
        self.space: ParamSpace | None = None
        self.offset_masks: dict[str, Tensor] = {}
        self.kept: list[tuple[Tensor, Tensor]] = []
        self.use_checkpoint = True

    def unknowns(self, inp: TickInputs, p: Perception) -> TickInputs:
        """`inp` with θ − θ.detach() added where each unknown enters (zero in value)."""
        theta, space = self.theta, self.space
        if theta is None or space is None or not theta.requires_grad:
            return inp
        delta = (theta - theta.detach()).float()  # (P,)
        num, offset = inp.event_num, inp.logit_offset
        rows = {e.uid: k for k, e in enumerate(p.events) if e.origin == "scheduled"}  # scheduled event index -> row this tick
        for j, prm in enumerate(space.params):
            if prm.kind == "event" and prm.event in rows:
                col = torch.zeros_like(num)
                col[rows[prm.event], EVENT_FEATURES.index(prm.name)] = 1
                num = num + delta[j] * col
            elif prm.kind == "offset":
                a = self.sc.actions.labels.index(prm.name)
                push = torch.zeros(p.n, self.sc.actions.n, device=num.device)
                push[:, a] = self.offset_masks[prm.group]
                offset = push * delta[j] if offset is None else offset + push * delta[j]
        return replace(inp, event_num=num, logit_offset=offset)

    def act(self, p: Perception, progress: Progress | None = None, capture: bool = False) -> TickOutput:
        inp = self.unknowns(self.inputs(p), p)
        state, model = self.state, self.model
        grad = torch.is_grad_enabled()

        def switched(run: Callable[[], Any]) -> Any:  # run again in the backward pass: sets its own switches
            model.decode_text, model.agent_chunk, model.straight_through = False, 0, grad
            try:
                return run()
            finally:
                model.decode_text, model.straight_through = True, False

        if grad and self.use_checkpoint:  # one chunk of agents of one tick recomputed at a time in the backward pass
            new, out = model.chunked(inp, state, self.chunk or CHECKPOINT_AGENTS,
                                     call=lambda run: checkpoint(switched, run, use_reentrant=False))
        else:
            new, out = switched(lambda: advance(model, state, inp, chunk=self.chunk))  # chunks without a gradient only
        self.state = new
        logits, channels, drawn = out.decision_logits, out.channels, out.drawn
        assert drawn is not None
        self.kept.append((torch.softmax(logits.float(), -1), channels.float()))
        decision = drawn.cpu().numpy()
        data = {"decision": decision.astype(np.int16), "channels": channels.detach().float().cpu().numpy(),
                "valid": np.ones(p.n, dtype=bool)}
        if self.numeric:
            data["decision_value"] = self.sc.actions.bin_centers[decision].astype(np.float32)
        return TickOutput(data, np.ones(p.n, dtype=bool))


class Simulator:
    """Rollouts of one student on one world and base scenario, at any values of the unknowns."""

    def __init__(self, student: Student, world: World, base: Scenario, space: ParamSpace,
                 observations: list[Observation], cfg: RolloutConfig):
        self.world, self.base, self.space, self.obs = world, base, space, observations
        self.base_data = scenario_dict(base)
        self.policy = RelaxedPolicy(student, world, base, cfg)
        self.cfg = self.policy.cfg  # the neighbour rule resolved
        pop = world.population
        self.policy.space = space
        self.policy.offset_masks = {p.group: torch.from_numpy(where_mask(pop, parse_group(p.group)).astype(np.float32))
                                    for p in space.params if p.kind == "offset"}
        self.groups, weights, sizes = group_weights(observations, pop)
        self.weights = torch.from_numpy(weights).float()  # (G, N) each group's mean
        self.sizes = torch.from_numpy(sizes)  # (G,) agents per group
        self.use_checkpoint = self.policy.use_checkpoint = world.n > CHECKPOINT_AGENTS
        labels, channels = base.actions.labels, base.channel_names
        self.o_tick = torch.tensor([o.tick for o in observations])  # (M,)
        self.o_group = torch.tensor([self.groups.index(o.group) for o in observations])  # (M,)
        self.o_kind = [o.metric for o in observations]
        self.o_target = torch.tensor([channels.index(o.target) if o.metric == "channel_mean" else labels.index(o.target)
                                      for o in observations])  # (M,)
        self.observed = torch.tensor([o.value for o in observations], dtype=torch.float64)  # (M,)
        self.se = torch.tensor([o.se for o in observations], dtype=torch.float64)  # (M,)
        self.ticks = max(o.tick for o in observations) + 1
        self.rollouts = 0
        """Rollouts run so far (forward-only and differentiable alike)."""

    @property
    def n(self) -> int:
        return self.world.n

    def scenario(self, values: np.ndarray) -> Scenario:
        return self.space.scenario(self.base_data, values)

    def evaluate(self, values: np.ndarray, grad: bool = False, theta: Tensor | None = None, seed: int | None = None) -> Evaluation:
        """A rollout at `values` (P,): the series at the observations and the loss. With `grad`
        (or a `theta` that requires grad, whose values are used), the expected series and the loss
        are differentiable in θ. `seed`: another rollout seed than the fit's (other random numbers)."""
        import time

        if seed is not None and seed != self.cfg.seed:
            base = self.cfg
            self.cfg = self.policy.cfg = replace(base, seed=seed)
            try:
                return self.evaluate(values, grad, theta)
            finally:
                self.cfg = self.policy.cfg = base
        t0 = time.perf_counter()
        values = np.asarray(values if theta is None else theta.detach().numpy(), dtype=np.float64)
        if theta is None:
            theta = torch.tensor(values, requires_grad=grad)
        sc = self.scenario(values)
        pol = self.policy
        pol.sc, pol.theta, pol.kept = sc, theta, []
        offsets = logit_offsets(sc, self.world.population)
        pol.offsets = None if offsets is None else torch.from_numpy(offsets).to(pol.cfg.device)
        pol.state = pol.fresh_state()
        rule = self.space.rule(self.cfg.neighbors, values) if self.cfg.neighbors is not None else None
        assert rule is not None
        loop = SocietyLoop(pol, sc, self.world.population, self.world.graph, self.cfg.seed, rule, self.ticks)
        decisions = []
        with torch.set_grad_enabled(bool(theta.requires_grad)):
            for rec in loop.ticks():
                decisions.append(rec.data["decision"].astype(np.int64))
            probs = torch.stack([k[0] for k in pol.kept])  # (T, N, A)
            channels = torch.stack([k[1] for k in pol.kept])  # (T, N, C)
            expected = self.series(probs, channels, torch.from_numpy(np.stack(decisions)))
            loss = 0.5 * ((expected - self.observed) ** 2 / self.variance(expected.detach())).sum()
        pol.kept = []
        hard = self.drawn_series(np.stack(decisions), channels.detach())
        self.rollouts += 1
        return Evaluation(values, expected, hard, loss, time.perf_counter() - t0)

    def variance(self, expected: Tensor) -> Tensor:
        """(M,) the variance of observed − simulated: the observation's se² plus the simulated
        run's own sampling variance (a share of a group of n agents: p(1 − p)/n; a channel
        mean: none counted). Both runs are draws of a finite population, so a fit that ignored
        the second would claim to know the unknowns better than its own rollout does."""
        share = torch.tensor([k != "channel_mean" for k in self.o_kind])  # (M,)
        n = self.sizes[self.o_group]  # (M,)
        p = expected.clamp(0, 1)
        return self.se**2 + torch.where(share, p * (1 - p) / n, torch.zeros_like(p))

    def series(self, probs: Tensor, channels: Tensor, drawn: Tensor) -> Tensor:
        """(T, N, A) decision distributions, (T, N, C) channels and (T, N) drawn decisions -> (M,)
        the expected series at the observations (float64), each tick's given the run's draws
        before it: the share p_t; the cumulative share e_{t-1} + (1 − e_{t-1})·p_t with e the
        drawn "has chosen it by then" (straight-through: the gradient of its own expectation)."""
        ever = torch.cummax(torch.nn.functional.one_hot(drawn, probs.shape[-1]).to(probs), 0).values  # (T, N, A)
        cums = [probs[0]]
        for t in range(1, len(probs)):
            e = ever[t - 1] + cums[-1] - cums[-1].detach()  # (N, A) drawn, with the expectation's gradient
            cums.append(e + (1 - e) * probs[t])
        cum = torch.stack(cums)  # (T, N, A) chance of having chosen each action by t, given the draws before
        by = {"share": probs, "cumulative_share": cum, "channel_mean": channels}
        out = torch.zeros(len(self.obs), dtype=torch.float64)
        for kind, q in by.items():
            rows = torch.tensor([m for m, k in enumerate(self.o_kind) if k == kind], dtype=torch.long)
            if not len(rows):
                continue
            means = torch.einsum("gn,tnk->gtk", self.weights, q)  # (G, T, K)
            out = out.index_put((rows,), means[self.o_group[rows], self.o_tick[rows], self.o_target[rows]].double())
        return out

    def drawn_series(self, decisions: np.ndarray, channels: Tensor) -> np.ndarray:
        """(T, N) drawn decisions -> (M,) the series a rollout file of the same run holds."""
        return drawn_series(self.obs, self.weights.numpy(), self.groups, decisions, channels.numpy(), self.base)


def drawn_series(obs: list[Observation], weights: np.ndarray, groups: list[str], decisions: np.ndarray,
                 channels: np.ndarray, scenario: Scenario) -> np.ndarray:
    """The observed quantities of a run: (T, N) drawn decisions and (T, N, C) channels, groups'
    (G, N) averaging weights (in the order of `groups`) -> (M,) one number per observation."""
    A = scenario.actions.n
    onehot = np.eye(A, dtype=np.float64)[decisions]  # (T, N, A)
    q = {"share": onehot, "cumulative_share": np.maximum.accumulate(onehot, axis=0),  # (T, N, A)
         "channel_mean": np.asarray(channels, dtype=np.float64)}  # (T, N, C)
    w = np.asarray(weights, dtype=np.float64)  # (G, N)
    out = np.zeros(len(obs))
    for m, o in enumerate(obs):
        k = scenario.channel_names.index(o.target) if o.metric == "channel_mean" else scenario.actions.labels.index(o.target)
        out[m] = w[groups.index(o.group)] @ q[o.metric][o.tick, :, k]
    return out
