"""The table `lsm recovery` prints: every headline figure beside its goal, one column per size,
then the details of the largest size."""
from __future__ import annotations

import math
from typing import Any, Callable

from lsm.recovery.metrics import TAIL_TOLERANCE

Goal = tuple[str, Callable[[Any, dict[str, Any]], bool]]

GOALS: dict[str, Goal] = {
    "ablation_tv_ratio": ("0.8–1.25", lambda v, r: 0.8 <= v <= 1.25),
    "ablation_signed_error": ("≤ 0.3", lambda v, r: v <= 0.3),
    "null_ablation_tv": ("< 0.01", lambda v, r: v < 0.01),
    "influence_slope": ("0.8–1.2", lambda v, r: 0.8 <= v <= 1.2),
    "influence_rank_ok": ("true", lambda v, r: bool(v)),
    "interventions_pass": ("true", lambda v, r: bool(v)),
    "intervention_rel_error_max": ("–", lambda v, r: True),
    "kl_oracle_normalised": ("≤ 0.5", lambda v, r: v <= 0.5),
    "student_kl": ("–", lambda v, r: True),
    "identity_mlp_kl": ("–", lambda v, r: True),
    "oracle_kl": ("–", lambda v, r: True),
    "agent_blind_kl": ("–", lambda v, r: True),
    "kl_agent_blind_normalised": ("–", lambda v, r: True),
    "truth_kl": ("–", lambda v, r: True),
    "channel_sd_ratio": ("0.9–1.1", lambda v, r: 0.9 <= v <= 1.1),
    "channel_w1_ratio_population_floor": ("≤ 1.5", lambda v, r: v <= 1.5),
    "channel_w1_ratio": ("–", lambda v, r: True),
    "channel_crps_ratio": ("–", lambda v, r: True),
    "tail_survival_ok": (f"true (|log share ratio| ≤ log 1.1 = {TAIL_TOLERANCE:.3f})", lambda v, r: bool(v)),
    "tail_log_ratio_max": ("–", lambda v, r: True),
    "tail_survival_min": ("–", lambda v, r: True),
    "decision_jsd_final_ratio": ("–", lambda v, r: True),
    "decision_jsd_final_ratio_population_floor": ("–", lambda v, r: True),
}
"""The goals at 10,000 training agents (docs/recovery.md#what-is-measured); `met` is reported for
every size. Figures with goal "–" are shown for reading the others (the floors and the raw KLs)."""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _ci(d: dict[str, float], digits: int = 4) -> str:
    return f"{d['value']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def _vec(xs: list[float], se: list[float] | None = None) -> str:
    if se is None:
        return " ".join(f"{x:+.4f}" for x in xs)
    return " ".join(f"{x:+.4f}±{e:.4f}" for x, e in zip(xs, se))


def headline(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| figure | goal | " + " | ".join(f"n={r['agents']}" for r in rows) + " |", "|---|---|" + "---|" * len(rows)]
    for key, (goal, ok) in GOALS.items():
        cells = []
        for r in rows:
            v = r.get(key, float("nan"))
            met = "" if goal == "–" or _missing(v) else (" ✓" if ok(v, r) else " ✗")
            cells.append(_fmt(v) + met)
        lines.append(f"| {key} | {goal} | " + " | ".join(cells) + " |")
    return lines


def ablations(last: dict[str, Any]) -> list[str]:
    lines = ["", "Paired ablations at the largest size (per agent-tick; 95 % bootstrap interval over agents; signed error "
             "E‖Δstudent − Δtruth‖₁ / E‖Δtruth‖₁, slope of Δstudent on Δtruth):", "",
             "| change | student TV | truth TV | ratio | signed error | slope |", "|---|---|---|---|---|---|"]
    for name, a in last["ablations"].items():
        signed = f"{_ci(a['signed_error'], 3)} | {_ci(a['slope'], 3)}" if "signed_error" in a else "– | –"
        lines.append(f"| {name.replace('_', ' ')} | {_ci(a['student_tv'])} | {_ci(a['truth_tv'])} | {_ci(a['ratio'])} | {signed} |")
    floor = last.get("ablation_signed_error_floor")
    if floor:
        lines += ["", f"Signed error of messages removed, floors: the oracle (knows all but the tick's noise) "
                  f"{floor['oracle']:.3f}, the agent-blind oracle (nor the agent's random effect) {floor['agent_blind']:.3f}"]
    return lines


def _with_interval(v: dict[str, Any], who: str) -> str:
    iv = v.get(f"{who}_interval")
    return f"{v[who]:+.4f}" + (f" [{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv else "")


def influence(last: dict[str, Any]) -> list[str]:
    lines = ["", "Influence by tie type: slope of ΔP(first action) on the stance difference of a random top- vs "
             "bottom-decile sender (95 % interval):", "", "| tie | student | truth | agent-ticks |", "|---|---|---|---|"]
    for ty, v in last["influence_by_type"].items():
        lines.append(f"| {ty} | {_with_interval(v, 'student')} | {_with_interval(v, 'truth')} | {v['rows']} |")
    pairs = last.get("influence_rank_pairs")
    if pairs is not None:
        judged = ", ".join(f"{p['pair'][0]} {'>' if p['truth_difference'][0] > 0 else '<'} {p['pair'][1]}{'' if p['ok'] else ' ✗'}"
                           for p in pairs)
        lines += ["", f"Rank order judged on the pairs the truth tells apart: {judged or 'none'}"]
    return lines


def interventions(last: dict[str, Any]) -> list[str]:
    lines = ["", "Interventions (change of the run's expected decision shares, mean ± standard error over seeds; pass: "
             "|Δstudent − Δtruth| ≤ max(0.2 |Δtruth|, 2 SE) for every action; replay: the one-tick change on the held-out trace):", "",
             "| intervention | student Δ | truth Δ | relative error | pass | replay signed error |", "|---|---|---|---|---|---|"]
    for name, v in last["interventions"].items():
        passed = _fmt(v["pass"]) if "pass" in v else "–"
        lines.append(f"| {name.replace('_', ' ')} | {_vec(v['student_delta'], v.get('student_se'))} | "
                     f"{_vec(v['truth_delta'], v.get('truth_se'))} | {v['rel_error']:.2f} | {passed} | "
                     f"{_fmt(v.get('replay_signed_error'))} |")
    return lines


def tails(last: dict[str, Any]) -> list[str]:
    tail = last.get("tail_survival")
    if not tail:
        return []
    lines = ["", "Rare actions (expected shares over seeds; log(student / truth), ± 2 SE):", "",
             "| action | student share | truth share | log ratio | ok |", "|---|---|---|---|---|"]
    for a, v in tail.items():
        lines.append(f"| {a} | {v['student_share']:.4f} | {v['truth_share']:.4f} | {v['value']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] | "
                     f"{_fmt(v['ok'])} |")
    return lines


def floors(last: dict[str, Any]) -> list[str]:
    lines = []
    if "oracle_kl" in last:
        lines += ["", f"Decision KL(recorded ‖ prediction): student {last['student_kl']:.4f}, identity-only "
                  f"{last['identity_mlp_kl']:.4f}, oracle floor {last['oracle_kl']:.4f} (normalised "
                  f"{_fmt(last['kl_oracle_normalised'])}); to the oracle's expected distribution: student "
                  f"{last['student_kl_expected']:.4f}, identity-only {last['identity_mlp_kl_expected']:.4f}"]
        if "agent_blind_kl" in last:
            lines += [f"The agent-blind oracle (the agent's random effect integrated out too): KL {last['agent_blind_kl']:.4f}; "
                      f"the student against it {_fmt(last['kl_agent_blind_normalised'])} (0: as good, < 0: better, by "
                      "what it infers of each agent from its history)"]
    c = last.get("channel_crps")
    if c:
        lines += ["", f"Channel CRPS (per agent-tick-channel, 0..1 scale): student's level distribution {c['student']:.4f}, "
                  f"the process's own {_fmt(c.get('floor'))}; expected level as a point forecast {c['point_student']:.4f}, "
                  f"the process's repeat {_fmt(c.get('point_floor_repeat'))}"]
    return lines


def format_table(result: dict[str, Any]) -> str:
    rows = result.get("rows", [result])
    last = rows[-1]
    lines = headline(rows) + ablations(last) + influence(last)
    if "conformity_by_group" in last:
        lines += ["", "Messages-removed TV by the modulating attribute's category:", "",
                  "| category | conformity | student TV | truth TV |", "|---|---|---|---|"]
        for g, v in last["conformity_by_group"].items():
            lines.append(f"| {g} | {v['conformity']} | {v['student_tv']:.4f} | {v['truth_tv']:.4f} |")
    p = last["persistence"]
    lines += ["", f"Persistence (ΔP of the drawn action when it is forgotten): student {p['student']:.4f}, truth {p['truth']:.4f}, "
              f"ratio {p['ratio']['value']:.3f} [{p['ratio']['low']:.3f}, {p['ratio']['high']:.3f}]"]
    lines += interventions(last) + tails(last) + floors(last) + pathway_rows(last)
    return "\n".join(lines)


def pathway_rows(last: dict[str, Any]) -> list[str]:
    """The pathway ablations (`--ablations`): the student beside the same student with a pathway
    switched off, trained to the same step budget."""
    table = last.get("ablation_rows")
    if not table:
        return []
    keys = list(next(iter(table.values())))
    out = ["", f"Pathway ablations (the same step budget, {last.get('steps')} steps; training in `training`):", "",
           "| student | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, row in table.items():
        out.append(f"| {name} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    return out
