"""What `lsm recovery` measures on the held-out world, student against the planted truth.

Every figure is read against an exact floor -- what the planted process itself gives under the
same question -- and is named in the JSON as in docs/recovery.md#what-is-measured.

- Paired ablations (`society.interventions`), per agent-tick from tick 1 on (tick 0 has no
  messages): the student replayed one tick ahead of the held-out trace (`train.replay`) and the
  process re-evaluated exactly (`recovery.truth`), factual and under each edit. TV between the
  factual and edited distributions, student beside truth; and the *signed* change Δp = edited -
  factual: `signed_error` = E‖Δp_student - Δp_truth‖₁ / E‖Δp_truth‖₁ (0: the same change, 1: no
  change at all) and `slope` of Δp_student on Δp_truth through the origin (1: the right size).
  Bootstrap 95 % intervals over agents.
- Influence per tie type: one shown neighbour of that type replaced by a random agent of the top
  decile of last stances, then of the bottom decile; the effect is the slope of ΔP(first action)
  on the two senders' stance difference (through the origin), student and truth, with intervals;
  their slope across types, and the rank order judged on the pairs of types the truth tells apart.
- The modulating attribute: messages-removed TV by its categories, student / truth.
- Persistence: the drop in P(the drawn action) when the last draw is forgotten.
- Decision KL(recorded ‖ prediction) of the student and the identity-only model beside the
  oracle: the process's own distribution with its per-tick noise ξ integrated out
  (`PlantedTrace.expected`), the floor of any predictor that does not see ξ; normalised
  (student - oracle) / (identity-only - oracle).
- Channels: CRPS of the student's 11-level distribution (and of its expected level as a point
  forecast) against the recorded channel value, beside the process's own distribution.
- Interventions (`INTERVENTIONS`, in the intervention language): free-running rollouts of the
  student and runs of the planted process on `seeds` common seeds each, the change of the run's
  *expected* decision shares (mean decision_dist over every agent-tick), mean and standard error
  over seeds; and the exact one-tick version of each, replayed on the held-out trace.
- Rollout fidelity against the process's own floor (`infer.validate`: the same agents' random
  effects, another draw of the per-tick noise), and against a *population* floor (another
  scenario seed: fresh random effects, exposures and neighbours -- what a student drawing its
  agents' latents from a prior can at best match); channel SD ratio; two-sided tail survival.

Notation: S samples | T ticks | N agents | A actions | C channels | L rating levels |
K seeds (interventions) | R rows (agent-ticks) | B bootstrap resamples.
"""
from __future__ import annotations

import math
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lsm.config import load_config
from lsm.data_gen.gen import generate
from lsm.data_gen.planted.config import PlantedConfig
from lsm.infer.report import RunView
from lsm.infer.rollout import Rollout, RolloutConfig
from lsm.infer.validate import compare
from lsm.model.checkpoint import load_checkpoint
from lsm.recovery.truth import EventChanges, PlantedTrace, _kl
from lsm.society import interventions as ab
from lsm.society import stats
from lsm.society.embed import persona_tensor
from lsm.society.interventions import tables
from lsm.society.scenario import EVENT_FEATURES, event_features, load_scenario
from lsm.society.store import TraceFile
from lsm.society.world import load_world, save_world
from lsm.society.world.graph import EDGE_TYPES
from lsm.train.data import load_episode
from lsm.train.replay import replay

MIN_ROWS = 30
"""Tie types shown in fewer agent-ticks of the held-out trace are left out of the influence slope."""
FIRST = 0
"""Influence is read on the first action (the positive end of the planted opinion axis)."""
KL_SAMPLES = 8
"""Draws of the stochastic latent averaged into the predicted distribution a KL or a CRPS scores."""
SEEDS = 4
"""Common seeds of the intervention runs, student and truth alike."""
PASS_RELATIVE, PASS_SE = 0.2, 2.0
"""An intervention passes when |Δstudent - Δtruth| ≤ max(0.2 |Δtruth|, 2 SE) for every action."""
TAIL_SHARE, TAIL_TOLERANCE = 0.10, math.log(1.1)
"""Rare actions (the truth's expected share below 10 %) survive when |log(student / truth share)| ≤ log 1.1."""
SIGNED_ABLATIONS = ("no_messages", "shuffled", "opposite")
INTERVENTIONS = {
    "remove_event_0": "events[0]=removed",
    "halve_credibility_event_2": "events[2].credibility*=0.5",
    "sever_household": "sever=household",
}
"""The interventions measured, in the intervention language (`society.interventions`): each is
applied to the held-out scenario and world, for the student and the planted process alike
(`sever` removes the ties from the world both run on); and, one tick at a time, to the inputs of
the held-out trace (`one_tick_change`)."""


def _ci(x: tuple[float, float, float]) -> dict[str, float]:
    return {"value": x[0], "low": x[1], "high": x[2]}


def through_origin(y: np.ndarray, x: np.ndarray) -> float:
    """The least-squares slope of y on x through the origin, Σ x y / Σ x² (nan without any x)."""
    den = float((np.asarray(x, np.float64) ** 2).sum())
    return float((np.asarray(x) * np.asarray(y)).sum() / den) if den > 0 else float("nan")


# -- the rules: pure arithmetic on arrays ----------------------------------------------------------


def signed_error_floors(tr: PlantedTrace, edit: ab.TableEdit, dt: np.ndarray, agents: np.ndarray) -> dict[str, float]:
    """The signed error (`signed_agreement`) of an edit's change Δp_truth (T, N, A; at the
    realised noise) as predicted by the oracle, E_ξ[Δp] (it knows everything but the tick's noise
    ξ), and by the agent-blind oracle, E_{ξ, r}[Δp] (nor the agent's random effect r): a
    prediction that does not see ξ cannot be at 0, and one that has not inferred r from an
    agent's history does no better than the agent-blind figure."""
    out = {}
    for name, blind in (("oracle", False), ("agent_blind", True)):
        fact = np.stack([tr.expected(t, agent_blind=blind)[0] for t in range(tr.ticks)])  # (T, N, A)
        changed = np.stack([tr.expected(t, edit=edit, agent_blind=blind)[0] for t in range(tr.ticks)])
        out[name] = signed_agreement((changed - fact)[1:], dt[1:], agents)["signed_error"]["value"]
    return out


def signed_agreement(ds: np.ndarray, dt: np.ndarray, agents: np.ndarray) -> dict[str, dict[str, float]]:
    """Student against truth on the signed change of a distribution, ds, dt (..., A) per agent-tick
    (Δp = changed - factual), agents (R,) each agent-tick's agent (R: the leading dims, flattened):
    `signed_error` = E‖ds - dt‖₁ / E‖dt‖₁ (0: the same change; 1: none, or of the wrong size and sign)
    and `slope` = Σ ds·dt / Σ dt·dt over actions and agent-ticks (1: the right size)."""
    A = np.shape(dt)[-1]
    ds, dt = np.asarray(ds, np.float64).reshape(-1, A), np.asarray(dt, np.float64).reshape(-1, A)  # (R, A)
    return {"signed_error": _ci(stats.bootstrap(np.abs(ds - dt).sum(-1), agents, other=np.abs(dt).sum(-1))),
            "slope": _ci(stats.bootstrap((ds * dt).sum(-1), agents, other=(dt * dt).sum(-1)))}


def _spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, A) one value per seed -> (A,) mean and (A,) standard error over seeds (0 for one seed)."""
    x = np.asarray(x, np.float64)
    se = x.std(0, ddof=1) / math.sqrt(len(x)) if len(x) > 1 else np.zeros(x.shape[1:])
    return x.mean(0), se


def intervention_pass(ds: np.ndarray, dt: np.ndarray) -> dict[str, Any]:
    """The change an intervention makes, student ds against truth dt, (K, A) per common seed: mean
    and standard error over seeds (the truth's own SE is its floor), `pass_by_action` when
    |Δs - Δt| ≤ max(`PASS_RELATIVE` |Δt|, `PASS_SE` SE), SE combining both, and `rel_error`
    ‖Δs - Δt‖₁ / ‖Δt‖₁ of the means."""
    ms, ses = _spread(ds)
    mt, set_ = _spread(dt)
    gap = np.abs(ms - mt)
    ok = gap <= np.maximum(PASS_RELATIVE * np.abs(mt), PASS_SE * np.hypot(ses, set_))
    return {"student_delta": ms.tolist(), "truth_delta": mt.tolist(), "student_se": ses.tolist(), "truth_se": set_.tolist(),
            "pass_by_action": ok.tolist(), "pass": bool(ok.all()),
            "rel_error": float(gap.sum() / max(np.abs(mt).sum(), 1e-9))}


def tail_survival(student: np.ndarray, truth: np.ndarray, actions: list[str]) -> dict[str, dict[str, Any]]:
    """Two-sided survival of the rare actions (truth's mean expected share in (0, `TAIL_SHARE`)),
    from (K, A) expected shares per seed: the mean over seeds of log(student / truth share), an
    interval of ± `PASS_SE` standard errors, and `ok` when |value| ≤ `TAIL_TOLERANCE`."""
    s, t = np.asarray(student, np.float64), np.asarray(truth, np.float64)
    out = {}
    for a in np.nonzero((t.mean(0) > 0) & (t.mean(0) < TAIL_SHARE))[0]:
        r = np.log(np.clip(s[:, a], 1e-12, None) / t[:, a])  # (K,)
        mean, se = _spread(r[:, None])
        v, e = float(mean[0]), float(se[0])
        out[actions[a]] = {"value": v, "low": v - PASS_SE * e, "high": v + PASS_SE * e, "student_share": float(s[:, a].mean()),
                           "truth_share": float(t[:, a].mean()), "ok": bool(abs(v) <= TAIL_TOLERANCE)}
    return out


def slopes_by_type(agent_of: dict[str, np.ndarray], dp: dict[str, dict[str, np.ndarray]],
                   dx: dict[str, np.ndarray]) -> dict[str, Any]:
    """Influence by tie type: per type, the slope through the origin of ΔP (R_type,) on the senders'
    stance difference dx (R_type,) over its agent-ticks (`agent_of`: each row's agent), for each
    model in `dp` ({"student": {type: ΔP}, "truth": ...}); 95 % intervals from resampling agents
    (one resample for every type and model, `stats.agent_resamples`); the slope of student on
    truth effects across types; and the rank order judged on the pairs of types whose truth
    difference's interval excludes 0 (`rank_ok`: every judged pair in the truth's order, and at
    least one judged). Needs at least one type."""
    names = list(agent_of)
    sizes = np.cumsum([0] + [len(agent_of[k]) for k in names])
    inv, W = stats.agent_resamples(np.concatenate([agent_of[k] for k in names]))  # W (B, agents)
    inv_of = {k: inv[sizes[j]:sizes[j + 1]] for j, k in enumerate(names)}
    m = W.shape[1]
    den = {k: stats.per_agent(dx[k] ** 2, inv_of[k], m) for k in names}  # (agents,)
    point: dict[str, np.ndarray] = {}
    boot: dict[str, np.ndarray] = {}
    for who, eff in dp.items():
        num = {k: stats.per_agent(eff[k] * dx[k], inv_of[k], m) for k in names}
        point[who] = np.array([num[k].sum() / max(den[k].sum(), 1e-12) for k in names])  # (types,)
        boot[who] = np.stack([(W @ num[k]) / np.maximum(W @ den[k], 1e-12) for k in names], 1)  # (B, types)
    per_type: dict[str, dict[str, Any]] = {}
    for j, k in enumerate(names):
        per_type[k] = {"rows": len(agent_of[k])}
        for who in dp:
            lo, hi = np.percentile(boot[who][:, j], [2.5, 97.5])
            per_type[k][who] = float(point[who][j])
            per_type[k][f"{who}_interval"] = [float(lo), float(hi)]
    s, t = point["student"], point["truth"]
    slope_boot = (boot["student"] * boot["truth"]).sum(1) / np.maximum((boot["truth"] ** 2).sum(1), 1e-12)  # (B,)
    pairs = []
    for a, b in combinations(range(len(names)), 2):
        lo, hi = np.percentile(boot["truth"][:, a] - boot["truth"][:, b], [2.5, 97.5])
        if lo > 0 or hi < 0:
            pairs.append({"pair": [names[a], names[b]], "truth_difference": [float(t[a] - t[b]), float(lo), float(hi)],
                          "student_difference": float(s[a] - s[b]), "ok": bool(np.sign(s[a] - s[b]) == np.sign(t[a] - t[b]))})
    lo, hi = np.percentile(slope_boot, [2.5, 97.5])
    return {"by_type": per_type, "slope": through_origin(s, t),
            "slope_interval": [float(lo), float(hi)], "rank_pairs": pairs,
            "rank_ok": bool(pairs) and all(p["ok"] for p in pairs)}


# -- what is changed: table edits and one-tick interventions -----------------------------------------


def table_edits() -> dict[str, ab.TableEdit]:
    """The shown-table ablations measured, by name (the same edits for the student and the truth),
    from the intervention language (a `messages` edit is a shown-table edit)."""
    specs = {"no_messages": "messages=none", "shuffled": "messages=shuffled", "opposite": "messages=opposite"}
    edits: dict[str, ab.TableEdit] = {}
    for name, spec in specs.items():
        table = ab.apply(ab.parse(spec, f"recovery ablation {name}")).perception
        assert table is not None
        edits[name] = table
    return edits


def decile_edits(types_present: list[int]) -> dict[str, ab.TableEdit]:
    """Per tie type, one shown neighbour of that type replaced by a random top- or bottom-decile sender."""
    return {f"decile_{ty}_{end}": tables.decile_sender(ty, top=end == "top") for ty in types_present for end in ("top", "bottom")}


REMOVED = "(removed by the recovery replay)"
"""A removed event is marked with this source, not dropped, so the edited scenario's events stay
aligned with the trace's scheduled events (uid i: the scenario's event i)."""


def _compose(edits: list[ab.TableEdit]) -> ab.TableEdit | None:
    if not edits:
        return None

    def edit(t: int, shown: np.ndarray, types: np.ndarray, stance: np.ndarray) -> np.ndarray:
        for e in edits:
            shown = e(t, shown, types, stance)
        return shown

    return edit


def one_tick_change(spec: str, tr: PlantedTrace) -> tuple[ab.TableEdit | None, EventChanges]:
    """An intervention as a change of one tick's inputs along the held-out trace: a shown-table
    edit (`sever`: the slots of those tie types emptied; `messages`) and event changes (removed;
    numeric features set or scaled). Raises ValueError for the edits a tick's inputs cannot carry
    (moving an event, changing who sees it, its text or category, agents' attributes)."""
    table: list[ab.TableEdit] = []
    marked: list[ab.Edit] = []
    for e in ab.parse(spec, f"recovery intervention {spec}"):
        if isinstance(e, ab.SeverTies):
            table.append(tables.without_ties(tuple(EDGE_TYPES.index(t) for t in e.ties)))
        elif isinstance(e, ab.EditMessages):
            table.append(e.table_edit())
        elif isinstance(e, ab.RemoveEvent):
            marked.append(ab.SetEvent(e.event, "source", REMOVED))
        elif isinstance(e, (ab.SetEvent, ab.ScaleEvent)) and e.field in ab.NUMERIC_EVENT_FIELDS:
            marked.append(e)
        else:
            raise ValueError(f"{ab.edit_to_string(e)}: not a change of one tick's inputs")
    changes: EventChanges = {}
    if marked:
        base = tr.society.sc
        edited = ab.apply(marked, scenario=base, source=f"recovery intervention {spec}").scenario
        assert edited is not None
        row = {int(r["uid"]): r for r in tr.event_rows}
        for uid, (before, after) in enumerate(zip(base.events, edited.events)):  # scheduled event i has uid i
            if after.source == REMOVED:
                changes[uid] = None
            elif event_features(after) != event_features(before):
                changes[uid] = {**row[uid], **event_features(after)}
    return _compose(table), changes


def _changed_events(inp, uids: np.ndarray, changes: EventChanges):
    """A tick's student inputs with `changes` applied to its event rows (`uids`: each row's uid):
    a removed event's exposures dropped, a changed one's numeric features (`EVENT_FEATURES`) set."""
    if inp.event_num.shape[0] != len(uids):
        raise ValueError(f"the tick has {inp.event_num.shape[0]} event rows, the trace {len(uids)} events seen")
    num = inp.event_num.clone()  # (Ev, F)
    keep = torch.ones(inp.exposure.shape[1], dtype=torch.bool)  # (V,)
    for q, uid in enumerate(uids.tolist()):
        if uid not in changes:
            continue
        new = changes[uid]
        if new is None:
            keep &= inp.exposure[1] != q
        else:
            num[q] = torch.tensor([float(new[k]) for k in EVENT_FEATURES], dtype=num.dtype)
    return replace(inp, event_num=num, exposure=inp.exposure[:, keep])


def student_change(tr: PlantedTrace, table: ab.TableEdit | None, events: EventChanges, stance: torch.Tensor):
    """`one_tick_change`'s change as a `train.replay` edit; `stance` (T, N): the teacher's stances."""
    tab = ab.as_edit(table, stance) if table is not None else None

    def edit(t, inp, state):
        if tab is not None:
            inp, state = tab(t, inp, state)
        if events:
            inp = _changed_events(inp, tr.tick_uids(t), events)
        return inp, state

    return edit


def _forget(t, inp, state):
    state.drawn = torch.zeros_like(state.drawn)
    return inp, state


# -- the replay on the held-out trace ----------------------------------------------------------------


def _first_slot_stance(edit: ab.TableEdit, tr: PlantedTrace, ty: int) -> np.ndarray:
    """(T, N) the last stance of the sender `edit` puts in each row's first slot of tie type `ty` (0 where none)."""
    out = np.zeros(tr.shown.shape[:2])
    for t in range(1, tr.ticks):
        stance, _ = tr.last(t)
        shown = edit(t, tr.shown[t], tr.types[t], stance)
        slot = tables.first_slot(shown, tr.types[t], ty)
        has = slot >= 0
        out[t, has] = stance[shown[np.nonzero(has)[0], slot[has]]]
    return out


def paired_ablations(student, ep, tr: PlantedTrace, samples: int, interventions: dict[str, str] | None = None) -> dict[str, Any]:
    """Student and truth under every edit, on the held-out planted trace: ablations, influence by
    tie type, the modulating attribute, persistence and the one-tick interventions."""

    interventions = INTERVENTIONS if interventions is None else interventions
    T, N = tr.shown.shape[:2]
    counts = {ty: int(sum(ab.rows_with_type(tr.shown[t], tr.types[t], ty).sum() for t in range(1, T))) for ty in range(len(EDGE_TYPES))}
    types_present = [ty for ty, c in counts.items() if c >= MIN_ROWS]
    tabs = {**table_edits(), **decile_edits(types_present)}
    stance = ep.targets["stance"]
    edits: dict[str, Callable] = {k: ab.as_edit(e, stance) for k, e in tabs.items()}
    edits["forget_draw"] = _forget
    changes, skipped = {}, {}
    for name, spec in interventions.items():
        try:
            changes[name] = one_tick_change(spec, tr)
        except ValueError as err:
            skipped[name] = str(err)
            continue
        edits[f"intervention_{name}"] = student_change(tr, *changes[name], stance)
    res = replay(student, ep, edits, samples=samples)
    probs = {k: v["probs"].numpy().astype(np.float64) for k, v in res.items()}  # (S, T, N, A)
    ticks = range(T)
    truth = {"factual": np.stack([tr.probabilities(t) for t in ticks]),
             "forget_draw": np.stack([tr.probabilities(t, forget_draw=True) for t in ticks])}
    truth.update({k: np.stack([tr.probabilities(t, e) for t in ticks]) for k, e in tabs.items()})
    truth.update({f"intervention_{k}": np.stack([tr.probabilities(t, table, events=ev) for t in ticks])
                  for k, (table, ev) in changes.items()})  # (T, N, A) each
    delta_s = {k: (probs[k] - probs["factual"]).mean(0) for k in probs if k != "factual"}  # (T, N, A), mean over paired samples
    delta_t = {k: truth[k] - truth["factual"] for k in truth if k != "factual"}
    agents = np.broadcast_to(np.arange(N), (T - 1, N)).ravel()
    out: dict[str, Any] = {"ablations": {}}
    stu_tv = {}
    for name in SIGNED_ABLATIONS:
        s_tv = stats.paired_tv(probs["factual"], probs[name]).mean(0)[1:]  # (T-1, N), mean over paired samples
        t_tv = stats.paired_tv(truth["factual"], truth[name])[1:]
        stu_tv[name] = s_tv
        out["ablations"][name] = {"student_tv": _ci(stats.bootstrap(s_tv.ravel(), agents)),
                                  "truth_tv": _ci(stats.bootstrap(t_tv.ravel(), agents)),
                                  "ratio": _ci(stats.bootstrap(s_tv.ravel(), agents, other=t_tv.ravel())),
                                  **signed_agreement(delta_s[name][1:], delta_t[name][1:], agents)}
    out["ablation_tv_ratio"] = out["ablations"]["no_messages"]["ratio"]["value"]
    out["ablation_signed_error"] = out["ablations"]["no_messages"]["signed_error"]["value"]
    out["ablation_signed_error_floor"] = signed_error_floors(tr, tabs["no_messages"], delta_t["no_messages"], agents)
    out["ablation_slope"] = out["ablations"]["no_messages"]["slope"]["value"]
    out.update(influence(tr, tabs, delta_s, delta_t, types_present))
    out.update(conformity(tr, stu_tv["no_messages"], truth))
    out["persistence"] = persistence(tr, probs, truth, agents)
    every = np.broadcast_to(np.arange(N), (T, N)).ravel()
    out["replay_interventions"] = {  # every tick: an event acts in the tick it is seen, tick 0 included
        name: {"intervention": spec, **(signed_agreement(delta_s[f"intervention_{name}"], delta_t[f"intervention_{name}"], every)
                                        if name in changes else {"skipped": skipped[name]})}
        for name, spec in interventions.items()}
    return out


def influence(tr: PlantedTrace, tabs: dict[str, ab.TableEdit], delta_s: dict[str, np.ndarray], delta_t: dict[str, np.ndarray],
              types_present: list[int]) -> dict[str, Any]:
    """Influence by tie type from random top- and bottom-decile senders (`slopes_by_type`)."""
    agent_of: dict[str, np.ndarray] = {}
    dx: dict[str, np.ndarray] = {}
    dp: dict[str, dict[str, np.ndarray]] = {"student": {}, "truth": {}}
    for ty in types_present:
        name = EDGE_TYPES[ty]
        top, bottom = f"decile_{ty}_top", f"decile_{ty}_bottom"
        rows = np.stack([ab.rows_with_type(tr.shown[t], tr.types[t], ty) for t in range(tr.ticks)])  # (T, N)
        rows[0] = False
        agent_of[name] = np.nonzero(rows)[1]
        dx[name] = (_first_slot_stance(tabs[top], tr, ty) - _first_slot_stance(tabs[bottom], tr, ty))[rows]  # (R_type,)
        dp["student"][name] = (delta_s[top] - delta_s[bottom])[..., FIRST][rows]
        dp["truth"][name] = (delta_t[top] - delta_t[bottom])[..., FIRST][rows]
    if not agent_of:
        return {"influence_by_type": {}, "influence_slope": float("nan"), "influence_slope_interval": [float("nan")] * 2,
                "influence_rank_ok": False, "influence_rank_pairs": []}
    r = slopes_by_type(agent_of, dp, dx)
    return {"influence_by_type": r["by_type"], "influence_slope": r["slope"], "influence_slope_interval": r["slope_interval"],
            "influence_rank_ok": r["rank_ok"], "influence_rank_pairs": r["rank_pairs"]}


def conformity(tr: PlantedTrace, stu_tv: np.ndarray, truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Messages-removed TV (T-1, N) by the categories of the attribute modulating influence."""
    soc = tr.society
    attr = soc.cfg.conformity_attribute
    if not attr:
        return {}
    t_tv = stats.paired_tv(truth["factual"], truth["no_messages"])[1:]
    labels = np.asarray(soc.pop.labels(attr), dtype=object)
    return {"conformity_by_group": {
        str(g): {"student_tv": float(stu_tv[:, labels == g].mean()), "truth_tv": float(t_tv[:, labels == g].mean()),
                 "conformity": soc.cfg.conformity.get(str(g), 1.0)} for g in sorted(set(labels.tolist()))}}


def persistence(tr: PlantedTrace, probs: dict[str, np.ndarray], truth: dict[str, np.ndarray], agents: np.ndarray) -> dict[str, Any]:
    """P(the drawn action) with and without the memory of the draw, student and truth."""
    drawn = tr.decision[:-1]  # (T-1, N): the draw each agent-tick from 1 on remembers

    def pick(p: np.ndarray) -> np.ndarray:  # (..., T, N, A) -> (..., T-1, N): P(the remembered draw)
        later = p[..., 1:, :, :]
        return np.take_along_axis(later, np.broadcast_to(drawn[..., None], later.shape[:-1] + (1,)), -1)[..., 0]

    s_pers = (pick(probs["factual"]) - pick(probs["forget_draw"])).mean(0)
    t_pers = pick(truth["factual"]) - pick(truth["forget_draw"])
    return {"student": float(s_pers.mean()), "truth": float(t_pers.mean()),
            "ratio": _ci(stats.bootstrap(s_pers.ravel(), agents, other=t_pers.ravel()))}


def predictions(model, ep) -> tuple[np.ndarray, np.ndarray]:
    """((T, N, A) decision distribution, (T, N, C, L) channel-level distribution) of the model
    replayed on the trace, each averaged over `KL_SAMPLES` draws of its stochastic latent."""
    res = replay(model, ep, samples=KL_SAMPLES if model.cfg.agent_noise else 1)["factual"]
    return res["probs"].numpy().astype(np.float64).mean(0), res["channel_dist"].numpy().astype(np.float64).mean(0)


def decision_kl(probs: np.ndarray, mlp_probs: np.ndarray, tr: PlantedTrace) -> dict[str, Any]:
    """KL(recorded ‖ prediction) of the student and the identity-only model beside the oracle
    (`PlantedTrace.expected`): `kl_oracle_normalised` = (student - oracle) / (identity-only - oracle)
    (0: the oracle's floor; 1: no better than the identity-only model); and KL(p̄ ‖ prediction)
    to the oracle's distribution p̄ (its expectation is the student's excess over the floor)."""
    oracle = [tr.expected(t) for t in range(tr.ticks)]
    mean = np.stack([m for m, _ in oracle])  # (T, N, A) p̄
    okl = float(np.stack([k for _, k in oracle]).mean())
    s, m = float(_kl(tr.decision_dist, probs).mean()), float(_kl(tr.decision_dist, mlp_probs).mean())
    blind = np.stack([tr.expected(t, agent_blind=True)[0] for t in range(tr.ticks)])  # (T, N, A)
    bkl = float(_kl(tr.decision_dist, blind).mean())
    gap = m - okl
    return {"student_kl": s, "identity_mlp_kl": m, "oracle_kl": okl, "agent_blind_kl": bkl,
            "kl_oracle_normalised": (s - okl) / gap if gap > 0 else float("nan"),
            "kl_agent_blind_normalised": (s - bkl) / (m - bkl) if m > bkl else float("nan"),
            "student_kl_expected": float(_kl(mean, probs).mean()), "identity_mlp_kl_expected": float(_kl(mean, mlp_probs).mean())}


def channel_crps(levels_dist: np.ndarray, ep, repeat: Path | None = None) -> dict[str, Any]:
    """Per agent-tick-channel CRPS against the recorded channel value y (T, N, C) of the held-out
    trace: the student's level distribution (T, N, C, L) beside the process's own recorded
    distribution (its floor); and the student's expected level as a point forecast (|ŷ - y|)
    beside the process's repeat under another noise seed (`repeat`, the same agents)."""
    y = ep.targets["channels"].numpy().astype(np.float64)  # (T, N, C)
    L = levels_dist.shape[-1]
    levels = np.arange(L) / (L - 1)  # (L,)
    v = ep.targets["valid"].numpy()  # (T, N)
    out: dict[str, Any] = {"student": float(stats.crps(levels, levels_dist, y)[v].mean())}
    if "channel_dist" in ep.targets:
        q = ep.targets["channel_dist"].numpy().astype(np.float64)
        q = q / np.clip(q.sum(-1, keepdims=True), 1e-12, None)
        out["floor"] = float(stats.crps(levels, q, y)[v].mean())
        out["ratio"] = out["student"] / out["floor"] if out["floor"] > 0 else float("nan")
    point = levels_dist @ levels  # (T, N, C) the expected level
    out["point_student"] = float(stats.crps(point[..., None], np.ones_like(point)[..., None], y)[v].mean())
    if repeat is not None:
        with TraceFile(repeat) as tf:
            other = np.nan_to_num(tf.array("channels").astype(np.float64))
        out["point_floor_repeat"] = float(stats.crps(other[..., None], np.ones_like(other)[..., None], y)[v].mean())
    return out


def null_tv(model, ep, samples: int) -> dict[str, float]:

    res = replay(model, ep, {"no_messages": ab.as_edit(ab.no_messages, ep.targets["stance"])}, samples=samples)
    tv = stats.paired_tv(res["factual"]["probs"].numpy(), res["no_messages"]["probs"].numpy()).mean(0)[1:]
    return _ci(stats.bootstrap(tv.ravel(), np.broadcast_to(np.arange(ep.n), tv.shape).ravel()))


# -- free-running interventions and rollout fidelity -------------------------------------------------


def expected_shares(path: Path) -> np.ndarray:
    """(A,) a run's expected decision shares: its decision distribution averaged over every valid agent-tick."""
    with TraceFile(path) as tf:
        dist = tf.array("decision_dist").astype(np.float64)  # (T, N, A)
        valid = tf.array("valid").astype(bool)  # (T, N)
    return dist[valid].mean(0)


def intervention_inputs(spec: str, sc_path: Path, world, source: str = "recovery intervention") -> ab.Edited:
    """The scenario and world an intervention runs on: `spec` (the compact form) applied to the
    held-out scenario file and world."""

    return ab.apply(ab.parse(spec, source), scenario=load_scenario(sc_path), world=world, source=source)


def _suffix(k: int) -> str:
    return "" if k == 0 else f"_s{k}"


def interventions_and_fidelity(student, held: Path, sc_path: Path, held_tr: dict[str, Path], planted_cfg: Path, rollouts: Path,
                               say: Callable[[str], None], seeds: int = SEEDS) -> dict[str, Any]:
    """Each intervention on `seeds` common seeds (student rollout seed k; planted process: the
    held-out world's scenario seed 0 -- its agents' random effects -- and noise seed k), the change
    of the expected shares (`intervention_pass`); rollout fidelity of the seed-0 base run; tail
    survival of the rare actions over the seeds' base runs."""

    rule = load_config(PlantedConfig, planted_cfg, kind="planted society config").neighbors
    rollouts.mkdir(parents=True, exist_ok=True)
    world = load_world(held)
    persona = persona_tensor(world.population)  # (N, T)

    def rollout(name: str, k: int, ed: ab.Edited | None = None, world_file: Path = held) -> Path:
        p = rollouts / f"student_{name}{_suffix(k)}.h5"
        if not p.exists():
            sc, w = (load_scenario(sc_path), world) if ed is None else (ed.scenario, ed.world)
            assert sc is not None and w is not None
            Rollout(student, w, sc, RolloutConfig(seed=k, neighbors=rule), persona, scenario_source=str(sc_path),
                    interventions=None if ed is None else ed.interventions).run(
                p, world_file=world_file, scenario_yaml=sc_path.read_text() if ed is None else ed.scenario_yaml)
        return p

    def planted(name: str, k: int, scenario: Path, world_file: Path) -> Path:
        if name == "base" and k == 0:
            return held_tr["planted_s0"]
        p = rollouts / f"planted_{name}{_suffix(k)}.h5"
        if not p.exists():
            generate(world_file, scenario, planted_cfg, 0, p, llm_seed=k, quiet=True)
        return p

    K = range(seeds)
    base_s = np.stack([expected_shares(rollout("base", k)) for k in K])  # (K, A)
    base_t = np.stack([expected_shares(planted("base", k, sc_path, held)) for k in K])  # (K, A)
    interventions = {}
    for name, spec in INTERVENTIONS.items():
        ed = intervention_inputs(spec, sc_path, world, source=f"recovery intervention {name}")
        sc_file, world_file = rollouts / f"sc_{name}.yaml", held
        sc_file.write_text(ed.scenario_yaml)
        assert ed.world is not None
        if ed.world is not world:  # the planted process and the rollout file read the edited world from a file
            world_file = rollouts / f"world_{name}.h5"
            if not world_file.exists():
                save_world(ed.world, world_file)
        ds = np.stack([expected_shares(rollout(name, k, ed, world_file)) for k in K]) - base_s  # (K, A)
        dt = np.stack([expected_shares(planted(name, k, sc_file, world_file)) for k in K]) - base_t  # (K, A)
        interventions[name] = {"intervention": spec, "seeds": seeds, **intervention_pass(ds, dt)}
    ref, rep, stu = RunView.read(held_tr["planted_s0"]), RunView.read(held_tr["planted_s1"]), RunView.read(rollouts / "student_base.h5")
    s, f = compare(ref, stu), compare(ref, rep)
    ratio = lambda k, f=f: s[k] / f[k] if f[k] and not math.isnan(f[k]) else float("nan")  # noqa: E731
    pop = compare(ref, RunView.read(held_tr["planted_population"])) if "planted_population" in held_tr else None
    sd_s, sd_t = stu.channels[1:].std(1), ref.channels[1:].std(1)  # (T-1, C)
    tails = tail_survival(base_s, base_t, ref.actions)
    say(f"  interventions ({seeds} seeds): max relative error {max(v['rel_error'] for v in interventions.values()):.2f}, "
        f"pass {sum(v['pass'] for v in interventions.values())}/{len(interventions)}")
    return {"interventions": interventions,
            "intervention_rel_error_max": max(v["rel_error"] for v in interventions.values()),
            "interventions_pass": all(v["pass"] for v in interventions.values()),
            "expected_shares": {"student": base_s.mean(0).tolist(), "truth": base_t.mean(0).tolist(), "seeds": seeds},
            "fidelity": {"student": s, "floor": f, "population_floor": pop},
            "decision_jsd_final_ratio": ratio("decision_jsd_final"), "channel_w1_ratio": ratio("channel_w1_mean"),
            "channel_w1_ratio_population_floor": ratio("channel_w1_mean", pop) if pop else float("nan"),
            "decision_jsd_final_ratio_population_floor": ratio("decision_jsd_final", pop) if pop else float("nan"),
            "channel_sd_ratio": float((sd_s / np.maximum(sd_t, 1e-9)).mean()),
            "tail_survival_min": s["tail_survival_min"], "tail_survival": tails,
            "tail_survival_ok": all(v["ok"] for v in tails.values()) if tails else float("nan"),  # nan: no rare action
            "tail_log_ratio_max": max((abs(v["value"]) for v in tails.values()), default=float("nan"))}


def measure(ckpt: dict[str, Path], held: Path, sc_path: Path, held_tr: dict[str, Path], planted_cfg: Path, rollouts: Path,
            cfg, say: Callable[[str], None], seeds: int | None = None) -> dict[str, Any]:
    """Everything above on the held-out world; `seeds`: common seeds of the intervention runs
    (default: `cfg.seeds` when the config has it, else `SEEDS`)."""

    student = load_checkpoint(ckpt["student"])
    tr = PlantedTrace.read(held_tr["planted_s0"])
    ep = load_episode(held_tr["planted_s0"], student.vocab)
    out = paired_ablations(student.model, ep, tr, cfg.samples)
    mlp = load_checkpoint(ckpt["identity_mlp"])
    probs, levels_dist = predictions(student.model, ep)
    mlp_probs, _ = predictions(mlp.model, load_episode(held_tr["planted_s0"], mlp.vocab))
    out.update(decision_kl(probs, mlp_probs, tr))
    with TraceFile(held_tr["planted_s1"]) as tf:
        out["truth_kl"] = float(_kl(tr.decision_dist, tf.array("decision_dist")).mean())
    out["channel_crps"] = channel_crps(levels_dist, ep, held_tr.get("planted_s1"))
    out["channel_crps_ratio"] = out["channel_crps"].get("ratio", float("nan"))
    nul = load_checkpoint(ckpt["null_student"])
    out["null_ablation"] = null_tv(nul.model, load_episode(held_tr["null_s0"], nul.vocab), cfg.samples)
    out["null_ablation_tv"] = out["null_ablation"]["value"]
    say(f"  paired ablations: student/truth TV (messages removed) {out['ablation_tv_ratio']:.3f}, signed error "
        f"{out['ablation_signed_error']:.3f}, null {out['null_ablation_tv']:.4f}, influence slope {out['influence_slope']:.3f}; "
        f"KL over the oracle, normalised {out['kl_oracle_normalised']:.3f}")
    k = seeds if seeds is not None else int(getattr(cfg, "seeds", SEEDS))
    out.update(interventions_and_fidelity(student, held, sc_path, held_tr, planted_cfg, rollouts, say, seeds=k))
    for name, v in out["replay_interventions"].items():
        if name in out["interventions"] and "signed_error" in v:
            out["interventions"][name]["replay_signed_error"] = v["signed_error"]["value"]
    return out
