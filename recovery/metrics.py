"""What `lsm recovery` measures on the held-out world, student against the planted truth.

- Paired ablations (`society.interventions`), per agent-tick from tick 1 on (tick 0 has no messages):
  TV between the student's factual and edited distributions beside the process's own TV under
  the same edit (`recovery.truth`), bootstrap 95 % intervals over agents.
- Influence per tie type: the change in P(first action) when one shown neighbour of that type
  holds the most positive rather than the most negative stance; student against truth, slope
  through the origin and rank order.
- The modulating attribute: messages-removed TV by its categories, student / truth.
- Persistence: the drop in P(the drawn action) when the last draw is forgotten.
- Decision KL(truth ‖ prediction) of the student, the identity-only model, and of the planted
  process against its own second noise seed (`truth_kl`).
- Interventions (free-running rollouts, common random numbers; `INTERVENTIONS`, in the
  intervention language): remove an event, halve an event's credibility, sever household ties
  (removed from the world the student and the planted process both run on) -- the change in the run's decision shares (over
  every tick: in the planted process an event acts in the tick it is seen, so its effect on the
  final tick alone is mostly below the noise), relative error ‖Δstudent − Δtruth‖₁ / ‖Δtruth‖₁.
- Rollout fidelity against the process's own floor (`infer.validate`: the same agents' random
  effects, another draw of the per-tick noise), and against a *population* floor (another
  scenario seed: fresh random effects, exposures and neighbours -- what a student drawing its
  agents' latents from a prior can at best match); channel SD ratio.

Notation: S samples | T ticks | N agents | A actions.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lsm.config import load_config
from lsm.data_gen.gen import generate
from lsm.data_gen.planted.config import PlantedConfig
from lsm.infer.report import RunView, shares
from lsm.infer.rollout import Rollout, RolloutConfig
from lsm.infer.validate import compare
from lsm.model.checkpoint import load_checkpoint
from lsm.recovery.truth import PlantedTrace
from lsm.society import interventions as ab
from lsm.society import stats
from lsm.society.embed import persona_tensor
from lsm.society.scenario import load_scenario
from lsm.society.store import TraceFile
from lsm.society.world import load_world, save_world
from lsm.society.world.graph import EDGE_TYPES
from lsm.train.data import load_episode
from lsm.train.replay import replay

MIN_ROWS = 30
"""Tie types shown in fewer agent-ticks of the held-out trace are left out of the influence slope."""
FIRST = 0
"""Influence is read on the first action (the positive end of the planted opinion axis)."""


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = np.asarray(p, np.float64), np.clip(np.asarray(q, np.float64), 1e-8, None)
    return (p * (np.log(np.clip(p, 1e-8, None)) - np.log(q))).sum(-1)


def _ci(x: tuple[float, float, float]) -> dict[str, float]:
    return {"value": x[0], "low": x[1], "high": x[2]}


def table_edits(types_present: list[int]) -> dict[str, ab.TableEdit]:
    """Every shown-table edit measured, by name (the same edits for the student and the truth)."""
    specs = {"no_messages": "messages=none", "shuffled": "messages=shuffled", "opposite": "messages=opposite"}
    for ty in types_present:
        for sign in (1, -1):
            specs[f"strong_{ty}_{sign}"] = f"messages=strong:{EDGE_TYPES[ty]}:{sign:+d}"
    edits: dict[str, ab.TableEdit] = {}
    for name, spec in specs.items():  # in the intervention language: a `messages` edit is a shown-table edit
        table = ab.apply(ab.parse(spec, f"recovery ablation {name}")).perception
        assert table is not None
        edits[name] = table
    return edits


def _student_edits(tables: dict[str, ab.TableEdit], stance: torch.Tensor) -> dict[str, Callable]:
    edits: dict[str, Callable] = {k: ab.as_edit(e, stance) for k, e in tables.items()}

    def forget(t, inp, state):
        state.drawn = torch.zeros_like(state.drawn)
        return inp, state

    edits["forget_draw"] = forget
    return edits


def _truth(tr: PlantedTrace, tables: dict[str, ab.TableEdit]) -> dict[str, np.ndarray]:
    """(T, N, A) the process, factual, under every table edit and with the last draw forgotten."""
    ticks = range(tr.ticks)
    out = {"factual": np.stack([tr.probabilities(t) for t in ticks]),
           "forget_draw": np.stack([tr.probabilities(t, forget_draw=True) for t in ticks])}
    out.update({k: np.stack([tr.probabilities(t, e) for t in ticks]) for k, e in tables.items()})
    return out


def paired_ablations(student, ep, tr: PlantedTrace, samples: int) -> dict[str, Any]:
    """Student and truth under every edit, on the held-out planted trace."""

    T, N = tr.shown.shape[:2]
    counts = {ty: int(sum(ab.rows_with_type(tr.shown[t], tr.types[t], ty).sum() for t in range(1, T))) for ty in range(len(EDGE_TYPES))}
    types_present = [ty for ty, c in counts.items() if c >= MIN_ROWS]
    tables = table_edits(types_present)
    res = replay(student, ep, _student_edits(tables, ep.targets["stance"]), samples=samples)
    probs = {k: v["probs"].numpy() for k, v in res.items()}  # (S, T, N, A)
    truth = _truth(tr, tables)
    agents = np.broadcast_to(np.arange(N), (T - 1, N)).ravel()
    out: dict[str, Any] = {"ablations": {}}
    stu_tv = {}
    for name in ("no_messages", "shuffled", "opposite"):
        s_tv = stats.paired_tv(probs["factual"], probs[name]).mean(0)[1:]  # (T-1, N), mean over paired samples
        t_tv = stats.paired_tv(truth["factual"], truth[name])[1:]
        stu_tv[name] = s_tv
        out["ablations"][name] = {"student_tv": _ci(stats.bootstrap(s_tv.ravel(), agents)),
                                  "truth_tv": _ci(stats.bootstrap(t_tv.ravel(), agents)),
                                  "ratio": _ci(stats.bootstrap(s_tv.ravel(), agents, other=t_tv.ravel()))}
    out["ablation_tv_ratio"] = out["ablations"]["no_messages"]["ratio"]["value"]
    # influence per tie type
    per_type = {}
    for ty in types_present:
        rows = np.stack([ab.rows_with_type(tr.shown[t], tr.types[t], ty) for t in range(T)])  # (T, N)
        rows[0] = False
        s_eff = (probs[f"strong_{ty}_1"] - probs[f"strong_{ty}_-1"])[..., FIRST].mean(0)  # (T, N)
        t_eff = (truth[f"strong_{ty}_1"] - truth[f"strong_{ty}_-1"])[..., FIRST]
        per_type[EDGE_TYPES[ty]] = {"student": float(s_eff[rows].mean()), "truth": float(t_eff[rows].mean()), "rows": int(rows.sum())}
    s = np.array([v["student"] for v in per_type.values()])
    t = np.array([v["truth"] for v in per_type.values()])
    out["influence_by_type"] = per_type
    out["influence_slope"] = float((s * t).sum() / max((t * t).sum(), 1e-12)) if len(t) else float("nan")
    out["influence_rank_ok"] = bool(len(t) > 1 and (np.argsort(-s, kind="stable") == np.argsort(-t, kind="stable")).all())
    # the modulating attribute
    soc = tr.society
    attr = soc.cfg.conformity_attribute
    if attr:
        t_tv = stats.paired_tv(truth["factual"], truth["no_messages"])[1:]
        labels = np.asarray(soc.pop.labels(attr), dtype=object)
        out["conformity_by_group"] = {
            str(g): {"student_tv": float(stu_tv["no_messages"][:, labels == g].mean()), "truth_tv": float(t_tv[:, labels == g].mean()),
                     "conformity": soc.cfg.conformity.get(str(g), 1.0)} for g in sorted(set(labels.tolist()))}
    # persistence: P(drawn action) with and without the memory of the draw
    drawn = tr.decision[:-1]  # (T-1, N): the draw each agent-tick from 1 on remembers

    def pick(p: np.ndarray) -> np.ndarray:  # (..., T, N, A) -> (..., T-1, N): P(the remembered draw)
        later = p[..., 1:, :, :]
        return np.take_along_axis(later, np.broadcast_to(drawn[..., None], later.shape[:-1] + (1,)), -1)[..., 0]

    s_pers = (pick(probs["factual"]) - pick(probs["forget_draw"])).mean(0)
    t_pers = pick(truth["factual"]) - pick(truth["forget_draw"])
    out["persistence"] = {"student": float(s_pers.mean()), "truth": float(t_pers.mean()),
                          "ratio": _ci(stats.bootstrap(s_pers.ravel(), agents, other=t_pers.ravel()))}
    out["student_kl"] = replay_kl(student, ep, tr)
    return out


KL_SAMPLES = 8
"""Draws of the stochastic latent averaged into the predicted distribution a KL scores."""


def replay_kl(model, ep, tr: PlantedTrace) -> float:
    """Mean KL(truth ‖ the model's distribution averaged over `KL_SAMPLES` latent draws) per agent-tick."""

    probs = replay(model, ep, samples=KL_SAMPLES if model.cfg.agent_noise else 1)["factual"]["probs"].numpy().mean(0)
    return float(_kl(tr.decision_dist, probs).mean())


def null_tv(model, ep, samples: int) -> dict[str, float]:

    res = replay(model, ep, {"no_messages": ab.as_edit(ab.no_messages, ep.targets["stance"])}, samples=samples)
    tv = stats.paired_tv(res["factual"]["probs"].numpy(), res["no_messages"]["probs"].numpy()).mean(0)[1:]
    return _ci(stats.bootstrap(tv.ravel(), np.broadcast_to(np.arange(ep.n), tv.shape).ravel()))


def run_shares(path: Path) -> np.ndarray:
    """(A,) decision shares over every agent-tick of a run (the run's average share per action)."""

    v = RunView.read(path)
    return shares(v.decision.reshape(1, -1), v.valid.reshape(1, -1), len(v.actions))[0]


def measure(ckpt: dict[str, Path], held: Path, sc_path: Path, held_tr: dict[str, Path], planted_cfg: Path, rollouts: Path,
            cfg, say: Callable[[str], None]) -> dict[str, Any]:

    student = load_checkpoint(ckpt["student"])
    tr = PlantedTrace.read(held_tr["planted_s0"])
    ep = load_episode(held_tr["planted_s0"], student.vocab)
    out = paired_ablations(student.model, ep, tr, cfg.samples)
    mlp = load_checkpoint(ckpt["identity_mlp"])
    out["identity_mlp_kl"] = replay_kl(mlp.model, load_episode(held_tr["planted_s0"], mlp.vocab), tr)
    with TraceFile(held_tr["planted_s1"]) as tf:
        out["truth_kl"] = float(_kl(tr.decision_dist, tf.array("decision_dist")).mean())
    nul = load_checkpoint(ckpt["null_student"])
    out["null_ablation"] = null_tv(nul.model, load_episode(held_tr["null_s0"], nul.vocab), cfg.samples)
    out["null_ablation_tv"] = out["null_ablation"]["value"]
    say(f"  paired ablations: student/truth TV (messages removed) {out['ablation_tv_ratio']:.3f}, "
        f"null {out['null_ablation_tv']:.4f}, influence slope {out['influence_slope']:.3f}")
    out.update(interventions_and_fidelity(student, held, sc_path, held_tr, planted_cfg, rollouts, say))
    return out


INTERVENTIONS = {
    "remove_event_0": "events[0]=removed",
    "halve_credibility_event_2": "events[2].credibility*=0.5",
    "sever_household": "sever=household",
}
"""The interventions measured on free-running rollouts, in the intervention language
(`society.interventions`): each is applied to the held-out scenario and world, for the student and
the planted process alike (`sever` removes the ties from the world both run on)."""


def intervention_inputs(spec: str, sc_path: Path, world, source: str = "recovery intervention") -> ab.Edited:
    """The scenario and world an intervention runs on: `spec` (the compact form) applied to the
    held-out scenario file and world."""

    return ab.apply(ab.parse(spec, source), scenario=load_scenario(sc_path), world=world, source=source)


def interventions_and_fidelity(student, held: Path, sc_path: Path, held_tr: dict[str, Path], planted_cfg: Path, rollouts: Path,
                               say: Callable[[str], None]) -> dict[str, Any]:

    rule = load_config(PlantedConfig, planted_cfg, kind="planted society config").neighbors
    rollouts.mkdir(parents=True, exist_ok=True)
    world = load_world(held)
    persona = persona_tensor(world.population)  # (N, T)

    def rollout(name: str, ed: ab.Edited | None = None, world_file: Path = held) -> Path:
        p = rollouts / f"student_{name}.h5"
        if not p.exists():
            sc, w = (load_scenario(sc_path), world) if ed is None else (ed.scenario, ed.world)
            assert sc is not None and w is not None
            Rollout(student, w, sc, RolloutConfig(seed=0, neighbors=rule), persona, scenario_source=str(sc_path),
                    interventions=None if ed is None else ed.interventions).run(
                p, world_file=world_file, scenario_yaml=sc_path.read_text() if ed is None else ed.scenario_yaml)
        return p

    def planted(name: str, scenario: Path, world_file: Path) -> Path:
        p = rollouts / f"planted_{name}.h5"
        if not p.exists():
            generate(world_file, scenario, planted_cfg, 0, p, llm_seed=0, quiet=True)
        return p

    base_s, base_t = run_shares(rollout("base")), run_shares(held_tr["planted_s0"])
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
        ds = run_shares(rollout(name, ed, world_file)) - base_s
        dt = run_shares(planted(name, sc_file, world_file)) - base_t
        rel = float(np.abs(ds - dt).sum() / max(np.abs(dt).sum(), 1e-9))
        interventions[name] = {"intervention": spec, "student_delta": ds.tolist(), "truth_delta": dt.tolist(), "rel_error": rel}
    ref, rep, stu = RunView.read(held_tr["planted_s0"]), RunView.read(held_tr["planted_s1"]), RunView.read(rollouts / "student_base.h5")
    s, f = compare(ref, stu), compare(ref, rep)
    ratio = lambda k, f=f: s[k] / f[k] if f[k] and not math.isnan(f[k]) else float("nan")  # noqa: E731
    pop = compare(ref, RunView.read(held_tr["planted_population"])) if "planted_population" in held_tr else None
    sd_s, sd_t = stu.channels[1:].std(1), ref.channels[1:].std(1)  # (T-1, C)
    say(f"  interventions: max relative error {max(v['rel_error'] for v in interventions.values()):.2f}")
    return {"interventions": interventions,
            "intervention_rel_error_max": max(v["rel_error"] for v in interventions.values()),
            "fidelity": {"student": s, "floor": f, "population_floor": pop},
            "decision_jsd_final_ratio": ratio("decision_jsd_final"), "channel_w1_ratio": ratio("channel_w1_mean"),
            "channel_w1_ratio_population_floor": ratio("channel_w1_mean", pop) if pop else float("nan"),
            "decision_jsd_final_ratio_population_floor": ratio("decision_jsd_final", pop) if pop else float("nan"),
            "channel_sd_ratio": float((sd_s / np.maximum(sd_t, 1e-9)).mean()),
            "tail_survival_min": s["tail_survival_min"]}

