"""How far the teacher's decisions move with the persona and with the neighbours' messages.

A teacher that ignores its neighbours makes a student that ignores the graph look
perfect, so sensitivity is a measured figure for every trace file, not an assumption. For a
sample of agents at a tick (agents shown one message or more), the agent's exact prompt is rebuilt
from the trace (recorded events, recorded shown neighbours and their messages of the previous
tick, memory replayed from earlier ticks) and its decision distribution is re-scored (the decision
continuation without the agent's reasoning, which already reflects the unchanged prompt; one
batched `score_options` call for every prompt; a numeric action's scores binned as in the trace).

The decomposition (`decomposition` in the result) scores each sampled agent-tick under:

- no messages;
- the shown messages in `orders` orders (`prompts.message_orders`, the shown order first, every
  order where k! <= orders): their average is the *real*, order-free distribution;
- each shown message alone;
- placebo messages: each shown message's text replaced by a neutral off-topic text of the same
  length (`prompts.placebo_message`, stream `PLACEBO_TEXTS`), same senders and relation words,
  averaged over the *same* orders as the real messages; and each placebo message alone.

and reports, each with a 95 % bootstrap interval over the sampled agents:

- `order_noise`: per agent, the mean TV between each order's distribution and their average
  (agents shown two or more messages);
- `presence`: TV(placebo, none) -- that someone speaks at all;
- `content`: TV(real, placebo) -- what the messages say, beyond their presence and length;
- `total_social`: TV(real, none);
- `additivity_l1`: mean L1 between the sum of the single-message effects (each message alone
  minus none) and the all-messages effect (real minus none), and `additivity_ratio`:
  mean TV(sum of singles) / mean TV(all), a ratio of means over the agents shown two or more;
- `r2_stance_tie`, `r2_stance_tie_embedding`: how well what a student sees predicts the content
  effect of one message, P(alone) - P(alone, placebo), per (agent, message) pair: the sender's
  stance last tick and a one-hot tie type (`EdgeTyper`, a pair with no tie typed a weak tie),
  then also the message's sentence embedding (`expression_emb`, reduced by a PCA fitted inside
  each training fold); ridge regression (`RIDGE_ALPHA` on standardised features), 5-fold
  cross-validated by agent, R² of the out-of-fold predictions averaged over the actions (negative
  where the prediction is worse than the mean; its interval resamples agents, predictions fixed);
- `content_share` (mean content TV / mean total TV) and `order_noise_share` (mean order noise /
  mean total TV over the agents shown two or more), ratios of means.

The earlier variants stay under `variants`, each against the unchanged prompt (the shown order):

- `no_messages`: the neighbours' messages removed;
- `opposite_messages`: each shown message replaced by the message of the agent with the most
  opposite stance last tick (opposite to the mean stance of those shown, or to + when it is 0 or
  unknown; ties: the lower id first; same count; a sender not shown is "an acquaintance");
- `reordered_messages`: the same messages in reverse order, a control: the student is blind to
  the order of its neighbours, so what order alone moves is prompt noise no student should copy
  (measured over the sampled agents shown two or more messages; the others' prompt is unchanged);
- `other_persona`: the persona of another, randomly drawn agent.

Reported per variant: mean total-variation distance to the unchanged prompt with a 95 %
bootstrap interval over the sampled agents, each agent's own TV, and the mean change of each
action's probability.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lsm.config import from_dict
from lsm.data_gen.teacher import prompts as ag
from lsm.data_gen.teacher.config import TeacherConfig, make_backend
from lsm.society import seeds
from lsm.society.loop.neighbors import EdgeTyper
from lsm.society.stats import agent_resamples, bootstrap, paired_tv
from lsm.society.store import TraceFile
from lsm.society.world.graph import EDGE_TYPES

VARIANTS = ("unchanged", "no_messages", "opposite_messages", "reordered_messages", "other_persona")
ORDERS = 4
"""Orders of the shown messages scored per agent-tick (`--orders`)."""
RIDGE_ALPHA = 1.0
"""Ridge penalty of the content-effect regressions (features standardised in each training fold)."""
PCA_COMPONENTS = 8
"""At most this many principal components of the message embedding (fitted in each training fold)."""
CV_FOLDS = 5
"""Cross-validation folds, by agent."""
DECOMPOSITION = ("order_noise", "presence", "content", "total_social", "additivity_l1", "additivity_ratio",
                 "r2_stance_tie", "r2_stance_tie_embedding", "content_share", "order_noise_share")
ROWS = {
    "order_noise": "order noise: each order vs their average", "presence": "presence: placebo vs none",
    "content": "content: real vs placebo", "total_social": "total social: real vs none",
    "additivity_l1": "additivity: L1(sum of singles - all)", "additivity_ratio": "additivity: TV(sum of singles) / TV(all)",
    "r2_stance_tie": "CV R2 content effect ~ stance + tie", "r2_stance_tie_embedding": "CV R2 content effect ~ stance+tie+embedding",
    "no_messages": "no_messages: shown order vs none", "opposite_messages": "opposite_messages vs shown",
    "reordered_messages": "reordered_messages vs shown", "other_persona": "other_persona vs shown",
}


def _memory_at(tf: TraceFile, sc, i: int, tick: int, capacity: int) -> ag.Memory:
    """Replay agent i's memory writes of ticks < tick (as the teacher did)."""
    m = ag.Memory()
    labels = sc.actions.labels
    for t in range(tick):
        if not tf.f["valid"][t, i]:
            m.record_tick(sc, t, None)
            continue
        d = f"{tf.f['decision_value'][t, i]:g}" if sc.actions.type == "numeric" else labels[int(tf.f["decision"][t, i])]
        mem = tf.f["salient_memory"][t, i]
        mem = mem.decode() if isinstance(mem, bytes) else mem
        m.record_tick(sc, t, d, float(tf.f["stance"][t, i]), mem, float(tf.f["salience"][t, i]), capacity)
    return m


@dataclass
class RecordedPrompt:
    """What agent i's user prompt at a tick was built from, read back from the trace."""
    persona: str
    memory: ag.Memory
    events: list[str]
    messages: list[tuple[str, str, str]]
    """(neighbour name, relation word, message text) of the shown neighbours, in order."""
    shown: list[int]


class TracePrompts:
    """Rebuilds the teacher's prompts from a trace alone (recorded events, shown neighbours and
    their messages of the previous tick, memory replayed from earlier ticks); the tests check the
    rebuilt prompt re-scores to the recorded decision distribution."""

    def __init__(self, tf: TraceFile):

        self.tf, self.sc = tf, tf.scenario
        self.cfg = from_dict(TeacherConfig, tf.configs["teacher"], source=f"{tf.path}:config.teacher")
        self.mode = str(tf.f.attrs.get("answer_mode", "texts"))
        self.pop, graph = tf.world()
        self.rel = EdgeTyper(graph)
        self.events = {e["uid"]: e for e in tf.events()}
        self.system = ag.system_prompt(self.sc, self.mode)
        self.expression = tf.array("expression")

    def parts(self, i: int, tick: int) -> RecordedPrompt:
        tf, pop = self.tf, self.pop
        seen = [self.events[int(u)] for u in tf.f["exposed_events"][tick, i] if u >= 0]
        js = [int(j) for j in tf.f["shown_neighbors"][tick, i] if j >= 0]
        msgs = [(pop.names[j], ag.relation_words(self.rel.relation(int(i), j)), self.expression[tick - 1][j]) for j in js]
        return RecordedPrompt(pop.persona[i], _memory_at(tf, self.sc, int(i), tick, self.cfg.memory_capacity),
                              [ag.event_line(e["source"], e["text"]) for e in seen], msgs, js)

    def user(self, i: int, tick: int, parts: RecordedPrompt | None = None) -> str:
        p = parts or self.parts(i, tick)
        return ag.user_prompt(self.sc, tick, self.pop.names[i], p.persona, p.memory, self.cfg.memories, p.events, p.messages)


@dataclass
class Design:
    """The decomposition's prompts of one agent-tick (see the module docstring)."""
    orders: list[tuple[int, ...]]
    """The orders of the shown messages scored, the shown order (the identity) first."""
    real: list[RecordedPrompt]
    """The shown messages in each order."""
    alone: list[RecordedPrompt]
    """Each shown message alone, in the shown order."""
    placebo_texts: list[str]
    """Each shown message's placebo text (same length)."""
    placebo: list[RecordedPrompt]
    """The placebo messages in each order (same senders and relation words in the same slots)."""
    placebo_alone: list[RecordedPrompt]
    """Each placebo message alone."""
    none: RecordedPrompt
    """No messages."""


def placebo_texts(messages: list[tuple[str, str, str]], seed: int, tick: int, agent: int) -> list[str]:
    """A neutral text of each message's length, seeded per (run seed, tick, agent)."""
    rng = seeds.rng(seed, seeds.Stream.PLACEBO_TEXTS, tick, agent)
    return [ag.placebo_message(len(text), rng) for _, _, text in messages]


def design(parts: RecordedPrompt, tick: int, agent: int, seed: int = 0, orders: int = ORDERS) -> Design:
    """The decomposition's prompts of agent `agent` at `tick`, from its unchanged prompt `parts`."""
    msgs = parts.messages
    perms = ag.message_orders(len(msgs), orders, seeds.rng(seed, seeds.Stream.MESSAGE_ORDERS, tick, agent))
    texts = placebo_texts(msgs, seed, tick, agent)
    fake = [(name, rel, t) for (name, rel, _), t in zip(msgs, texts)]
    return Design(perms, [replace(parts, messages=[msgs[k] for k in o]) for o in perms],
                  [replace(parts, messages=[m]) for m in msgs], texts,
                  [replace(parts, messages=[fake[k] for k in o]) for o in perms],
                  [replace(parts, messages=[m]) for m in fake], replace(parts, messages=[]))


def ridge_cv_predict(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, emb: np.ndarray | None = None,
                     components: int = PCA_COMPONENTS, alpha: float = RIDGE_ALPHA, folds: int = CV_FOLDS) -> np.ndarray | None:
    """Out-of-fold ridge predictions (R, A) of targets Y (R, A) from features X (R, F), with the
    rows of one group (agent) in one fold (`folds` folds, groups dealt in order of first appearance);
    `emb` (R, D), if given, adds its first `components` principal components, fitted on each
    training fold. Features are standardised on the training fold; the intercept is not
    penalised. None with fewer than two groups."""
    Y = np.asarray(Y, np.float64)
    X = np.asarray(X, np.float64).reshape(len(Y), -1)
    groups = np.asarray(groups)
    ids = list(dict.fromkeys(groups.tolist()))
    k = min(folds, len(ids))
    if k < 2:
        return None
    deal = {g: n % k for n, g in enumerate(ids)}
    fold = np.array([deal[g] for g in groups.tolist()])
    pred = np.zeros_like(Y)
    for f in range(k):
        tr, te = fold != f, fold == f
        xtr, xte = X[tr], X[te]
        if emb is not None:
            e = np.asarray(emb, np.float64)
            mu = e[tr].mean(0)
            c = min(components, int(tr.sum()) - 1, e.shape[1])
            if c > 0:
                _, sv, vt = np.linalg.svd(e[tr] - mu, full_matrices=False)
                c = min(c, int((sv > 1e-3 * sv[0]).sum()))  # components with (numerically) no spread would blow up held-out rows
                w = vt[:c].T  # (D, c)
                xtr, xte = np.hstack([xtr, (e[tr] - mu) @ w]), np.hstack([xte, (e[te] - mu) @ w])
        mu, sd = xtr.mean(0), xtr.std(0)
        sd = np.where(sd > 1e-6 * max(float(sd.max(initial=0.0)), 1e-12), sd, np.inf)  # a (numerically) constant training column: no information
        ztr, zte = (xtr - mu) / sd, (xte - mu) / sd
        ym = Y[tr].mean(0)
        beta = np.linalg.solve(ztr.T @ ztr + alpha * np.eye(ztr.shape[1]), ztr.T @ (Y[tr] - ym))
        pred[te] = ym + zte @ beta
    return pred


def cv_r2(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, emb: np.ndarray | None = None,
          **kw: Any) -> tuple[float | None, float | None, float | None]:
    """(R², low, high): the cross-validated R² of `ridge_cv_predict` (pooled out-of-fold
    predictions against the overall mean), averaged over the targets that vary, with a 95 %
    percentile interval from resampling groups (the predictions held fixed). Nones where it cannot
    be computed (fewer than two groups, no varying target)."""
    Y = np.asarray(Y, np.float64)
    pred = ridge_cv_predict(X, Y, groups, emb, **kw)
    if pred is None:
        return None, None, None
    inv, draws = agent_resamples(np.asarray(groups))
    G = int(inv.max()) + 1
    sse = np.stack([np.bincount(inv, weights=c, minlength=G) for c in ((Y - pred) ** 2).T], 1)  # (G, A)
    sst = np.stack([np.bincount(inv, weights=c, minlength=G) for c in ((Y - Y.mean(0)) ** 2).T], 1)
    if not (sst.sum(0) > 1e-12).any():
        return None, None, None

    def est(w: np.ndarray) -> float:
        num, den = w @ sse, w @ sst
        ok = den > 1e-12
        return float(np.mean(1 - num[ok] / den[ok])) if ok.any() else np.nan

    boot = np.array([est(w) for w in draws])
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return est(np.ones(G)), float(lo), float(hi)


def _figure(values: np.ndarray, ids: list[int], other: np.ndarray | None = None) -> dict[str, Any]:
    """Mean of per-agent values (or ratio of means with `other`) with its bootstrap interval over agents."""
    values = np.asarray(values, np.float64)
    if not len(values):
        mean = low = high = None  # JSON null, not NaN
    else:
        mean, low, high = bootstrap(values, np.arange(len(values)), other)
    return {"mean": mean, "low": low, "high": high, "agents": len(ids), "agent_ids": [int(i) for i in ids],
            "values": np.round(values, 5).tolist()}


def measure(trace: str, tick: int | None = None, agents: int = 16, seed: int = 0, backend=None,
            orders: int = ORDERS) -> dict[str, Any]:

    if orders < 1:
        raise ValueError("orders must be 1 or more")
    with TraceFile(trace) as tf:
        rebuilt = TracePrompts(tf)
        sc, pop, cfg = rebuilt.sc, rebuilt.pop, rebuilt.cfg
        tick = tf.n_ticks - 1 if tick is None else tick
        if not 1 <= tick < tf.n_ticks:
            raise ValueError(f"tick must be in 1..{tf.n_ticks - 1} (tick 0 has no neighbour messages)")
        valid = tf.array("valid")
        shown = tf.array("shown_neighbors")[tick]
        prev_msg = rebuilt.expression[tick - 1]
        prev_stance = tf.array("stance")[tick - 1]
        prev_emb = np.asarray(tf.f["expression_emb"][tick - 1], np.float64) if "expression_emb" in tf.f else None
        prev_valid = valid[tick - 1]
        rng = seeds.rng(seed, seeds.Stream.SENSITIVITY_SAMPLE, tick)
        candidates = np.nonzero(valid[tick] & ((shown >= 0).sum(1) > 0))[0]
        sample = rng.choice(candidates, size=min(agents, len(candidates)), replace=False) if len(candidates) else candidates
        backend = backend or make_backend(cfg)
        convs: list = []
        index: dict[str, int] = {}  # the same prompt (a one-message agent's only order, ...) is scored once
        prefix = ag.bare_decision_prefix(sc.actions.type == "numeric")

        def slot(i: int, p: RecordedPrompt) -> int:
            user = rebuilt.user(i, tick, p)
            if user not in index:
                index[user] = len(convs)
                convs.append(ag.conversation(rebuilt.system, user) + [{"role": "assistant", "content": prefix}])
            return index[user]

        shown_count, plan, pairs = [], [], []
        for i in sample:
            i = int(i)
            parts = rebuilt.parts(i, tick)
            shown_count.append(len(parts.messages))
            js = parts.shown
            stance_i = float(np.nanmean([prev_stance[j] for j in js])) if js else 0.0
            stance_i = stance_i if np.isfinite(stance_i) else 0.0
            pool = np.nonzero(prev_valid)[0]
            opposite = pool[np.argsort(prev_stance[pool] * np.sign(stance_i or 1.0), kind="stable")][: len(js)]  # most opposite first
            opp_msgs = [(pop.names[j], ag.relation_words(rebuilt.rel.relation(i, int(j))) if j in js else "an acquaintance",
                         prev_msg[j]) for j in opposite]
            other = int(rng.choice([k for k in range(pop.n) if k != i]))
            variants = {
                "unchanged": parts, "no_messages": replace(parts, messages=[]),
                "opposite_messages": replace(parts, messages=opp_msgs),
                "reordered_messages": replace(parts, messages=parts.messages[::-1]),
                "other_persona": replace(parts, persona=pop.persona[other]),
            }
            d = design(parts, tick, i, seed, orders)
            plan.append({"variants": [slot(i, variants[v]) for v in VARIANTS], "none": slot(i, d.none),
                         "real": [slot(i, p) for p in d.real], "placebo": [slot(i, p) for p in d.placebo],
                         "alone": [slot(i, p) for p in d.alone], "placebo_alone": [slot(i, p) for p in d.placebo_alone]})
            ties = rebuilt.rel(np.array(js, np.int64), np.full(len(js), i, np.int64))
            pairs += [(i, float(prev_stance[j]), int(t), j) for j, t in zip(js, ties)]
    probs = backend.score_options(convs, [ag.decision_options(sc)] * len(convs)) if convs else []
    A = sc.actions.n
    probs = [ag.options_to_actions(sc, p) for p in probs]
    S = np.array(probs, np.float64).reshape(len(convs), A)
    P = S[[pl["variants"] for pl in plan]] if plan else np.zeros((0, len(VARIANTS), A))
    out: dict[str, Any] = {"trace": str(trace), "tick": tick, "agents": int(len(sample)), "agent_ids": [int(i) for i in sample],
                           "labels": sc.actions.labels, "variants": {}}
    for k, v in enumerate(VARIANTS[1:], start=1):
        rows = np.arange(len(sample)) if v != "reordered_messages" else np.nonzero(np.array(shown_count) >= 2)[0]
        tv = paired_tv(P[rows, k], P[rows, 0])  # (agents,)
        mean, low, high = bootstrap(tv, np.arange(len(tv))) if len(tv) else (None, None, None)  # JSON null, not NaN
        out["variants"][v] = {"mean_tv": mean, "low": low, "high": high, "agents": int(len(rows)),
                              "agent_ids": [int(sample[r]) for r in rows], "tv": np.round(tv, 5).tolist(),
                              "mean_shift": dict(zip(sc.actions.labels, np.round((P[rows, k] - P[rows, 0]).mean(0)
                                                                                  if len(rows) else np.zeros(A), 4).tolist()))}
    out["unchanged_mean"] = dict(zip(sc.actions.labels, np.round(P[:, 0].mean(0), 4).tolist())) if len(sample) else {}
    out["decomposition"] = _decompose(S, plan, [int(i) for i in sample], np.array(shown_count, int), pairs, prev_emb,
                                      orders, sc.actions.labels)
    return out


def _decompose(S: np.ndarray, plan: list[dict], ids: list[int], count: np.ndarray, pairs: list[tuple],
               prev_emb: np.ndarray | None, orders: int, labels: list[str]) -> dict[str, Any]:
    """The decomposition's figures from the scored prompts S (prompts, A) and each agent's plan."""
    A = S.shape[1]
    none = S[[pl["none"] for pl in plan]].reshape(-1, A)
    per_order = [S[pl["real"]] for pl in plan]
    real = np.array([o.mean(0) for o in per_order]).reshape(-1, A)  # order-averaged
    placebo = np.array([S[pl["placebo"]].mean(0) for pl in plan]).reshape(-1, A)
    multi = np.nonzero(count >= 2)[0]
    multi_ids = [ids[r] for r in multi]
    noise = np.array([paired_tv(per_order[r], real[r]).mean() for r in multi])
    total = paired_tv(real, none)
    singles = np.array([(S[plan[r]["alone"]] - none[r]).sum(0) for r in multi]).reshape(-1, A)
    together = real[multi] - none[multi]
    d: dict[str, Any] = {
        "orders": orders, "placebo_orders": "the same orders as the real messages",
        "order_noise": _figure(noise, multi_ids), "presence": _figure(paired_tv(placebo, none), ids),
        "content": _figure(paired_tv(real, placebo), ids), "total_social": _figure(total, ids),
        "additivity_l1": _figure(np.abs(singles - together).sum(-1), multi_ids),
        "additivity_ratio": _figure(0.5 * np.abs(singles).sum(-1), multi_ids, other=total[multi]),
        "content_share": _figure(paired_tv(real, placebo), ids, other=total),
        "order_noise_share": _figure(noise, multi_ids, other=total[multi]),
    }
    # the content effect of each (agent, message) pair, predicted from what a student sees
    if pairs:
        Y = np.concatenate([S[pl["alone"]] - S[pl["placebo_alone"]] for pl in plan])  # (pairs, A)
        who = np.array([p[0] for p in pairs])
        stance = np.nan_to_num(np.array([p[1] for p in pairs]))
        tie = np.eye(len(EDGE_TYPES))[[p[2] for p in pairs]]
        X = np.column_stack([stance, tie])
        emb = np.nan_to_num(prev_emb[[p[3] for p in pairs]]) if prev_emb is not None else None
    for key, e in (("r2_stance_tie", None), ("r2_stance_tie_embedding", "emb")):
        if not pairs or (e and emb is None):
            d[key] = {"mean": None, "low": None, "high": None, "agents": 0, "pairs": 0}
            continue
        mean, low, high = cv_r2(X, Y, who, emb if e else None)
        d[key] = {"mean": mean, "low": low, "high": high, "agents": len(set(who.tolist())), "pairs": len(pairs)}
    d.update(ridge_alpha=RIDGE_ALPHA, pca_components=PCA_COMPONENTS, cv_folds=CV_FOLDS)
    d["per_agent"] = {"agent_ids": ids, "messages": count.tolist(), "labels": labels,
                      **{k: np.round(v, 6).tolist() for k, v in (("real", real), ("placebo", placebo), ("none", none))}}
    return d


def _cell(x: float | None, r2: bool = False) -> str:
    return "     --" if x is None else (f"{x:+7.3f}" if r2 else f"{x:7.3f}")


def format_report(r: dict[str, Any]) -> str:
    d = r.get("decomposition", {})
    multi = d.get("order_noise", {}).get("agents")
    lines = [f"Sensitivity of {r['trace']} at tick {r['tick']} ({r['agents']} agents"
             + (f", {multi} shown two or more messages; up to {d['orders']} message orders each" if d else "")
             + "; decision distribution re-scored; 95 % bootstrap interval over agents):",
             "  unchanged prompt, mean: " + "  ".join(f"{k} {v:.3f}" for k, v in r["unchanged_mean"].items()),
             f"  {'quantity':<46} {'mean':>7}   {'95 % interval':<18} agents"]
    rows = [(ROWS[k], d[k]["mean"], d[k]["low"], d[k]["high"],
             f"{d[k]['agents']}" + (f" ({d[k]['pairs']} messages)" if "pairs" in d[k] else ""), k.startswith("r2"))
            for k in DECOMPOSITION[:8] if k in d]
    rows += [(ROWS.get(v, v), s["mean_tv"], s["low"], s["high"], f"{s.get('agents', r['agents'])}", False)
             for v, s in r["variants"].items()]
    for name, mean, low, high, n, r2 in rows:
        interval = f"[{_cell(low, r2).strip()}, {_cell(high, r2).strip()}]" if mean is not None else "no sampled agent"
        lines.append(f"  {name:<46} {_cell(mean, r2)}   {interval:<18} {n}")
    cs, ns = d.get("content_share"), d.get("order_noise_share")
    if cs and cs["mean"] is not None:
        noise = (f"; order noise is {ns['mean']:.0%} [{ns['low']:.0%}, {ns['high']:.0%}] of the total social effect "
                 "(agents shown two or more messages)" if ns and ns["mean"] is not None else "")
        lines.append(f"  Content beyond placebo is {cs['mean']:.0%} [{cs['low']:.0%}, {cs['high']:.0%}] of the total "
                     f"social effect (mean TV real vs placebo / mean TV real vs none){noise}.")
    return "\n".join(lines)
