"""What-if runs from a base student rollout: the same checkpoint, world, seed and rollout
settings, under interventions (`society.interventions`: event edits, exposure, severed tie
types, agents' attributes); or a sweep of one edit over values, with the what-if's other edits.

A request names its edits in the intervention language (`"interventions": "events[0].credibility=0.2;
sever=friend"`, or a list of edits in the YAML form); the front end's older fields (`edits: [{event,
field, value}]` with fields `credibility`, `valence`, `reach`, `tick`, and `sever: [types]`) are
mapped onto the same edits here, in `request_interventions` (one place).

A what-if lands as an ordinary rollout file in `whatif/` beside the base rollout, named by
its edits (`rollout__e0-credibility-0.2__sever-friend.h5`), recording them (`config.interventions`);
asking for the same what-if again returns that file (rollouts are deterministic). A rollout file
copies its world from a world file, so the base's world is written there once
(`rollout_world.h5`), and each edited one once (`rollout__sever-friend_world.h5`). A sweep runs
each point in memory (`infer.counterfactual.run_sweep`) and writes `<name>.sweep/` (sweep.json,
sweep.csv, sweep.png).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from lsm.config import CONFIG_ROOT
from lsm.documents import parse_document
from lsm.infer.counterfactual import run_sweep as _run_sweep
from lsm.infer.rollout import Rollout, recorded_config
from lsm.infer.run import run_rollout
from lsm.limits import MAX_SWEEP_VALUES
from lsm.society import interventions as iv
from lsm.society.embed import persona_tensor
from lsm.society.store import StoreError, TraceFile, read_configs
from lsm.society.world import load_world, save_world
from lsm.society.world.graph import EDGE_TYPES

LEGACY_FIELDS = {"credibility": "credibility", "valence": "valence", "reach": "exposure.fraction", "tick": "tick"}
"""The front end's event fields (`edits[].field`, a sweep's `field`) and the edit each names:
`events[E].<this>=VALUE` in the intervention language."""


MAX_REQUEST_EDITS = 1000
"""Edits (and severed types) one request may name."""


def _legacy_edit(k: int, e: Any, n_events: int) -> str:
    """One `{event, field, value}` of the front end as a compact clause (ValueError naming it)."""
    if not isinstance(e, dict) or set(e) - {"event", "field", "value"}:
        raise ValueError(f"edits[{k}]: expected {{event, field, value}}, got {e!r}")
    ev, fld, val = e.get("event"), e.get("field"), e.get("value")
    if not isinstance(ev, int) or isinstance(ev, bool) or not 0 <= ev < n_events:
        raise ValueError(f"edits[{k}].event = {ev!r}: the scenario has scheduled events 0..{n_events - 1}")
    if fld not in LEGACY_FIELDS:
        raise ValueError(f"edits[{k}].field = {fld!r}: one of {', '.join(LEGACY_FIELDS)}")
    if not isinstance(val, (int, float)) or isinstance(val, bool):
        raise ValueError(f"edits[{k}].value = {val!r}: a number")
    return f"events[{ev}].{LEGACY_FIELDS[fld]}={val!r}"


def request_interventions(body: dict, n_events: int) -> iv.Interventions:
    """The edits a what-if or sweep request asks for: `interventions` (compact text or a list in
    the YAML form), then the front end's `edits` and `sever`, mapped onto the same language."""
    edits = iv.Interventions()
    given = body.get("interventions")
    if given is not None:
        if not isinstance(given, (str, list, dict)):
            raise ValueError(f"interventions: the compact text or a list of edits (got {given!r})")
        if len(given) > (MAX_REQUEST_EDITS if isinstance(given, list) else 100 * MAX_REQUEST_EDITS):
            raise ValueError(f"interventions: at most {MAX_REQUEST_EDITS} edits")
        edits = edits + iv.load(given, "interventions")
    raw_edits = body.get("edits") or []
    if not isinstance(raw_edits, list) or len(raw_edits) > MAX_REQUEST_EDITS:
        raise ValueError(f"edits: a list of {{event, field, value}} (got {raw_edits!r})")
    clauses = [_legacy_edit(k, e, n_events) for k, e in enumerate(raw_edits)]
    sever = body.get("sever") or []
    if not isinstance(sever, list) or len(sever) > MAX_REQUEST_EDITS or not all(isinstance(t, str) for t in sever):
        raise ValueError(f"sever: a list of tie types ({', '.join(EDGE_TYPES)})")
    if sever:
        clauses.append("sever=" + ",".join(sever))
    if clauses:
        edits = edits + iv.parse("; ".join(clauses), "edits")
    return edits


def request_sweep(body: dict, n_events: int) -> tuple[iv.SweepAxis, iv.Interventions]:
    """(the axis, the edits applied at every point) of a sweep request: `sweep` (`EDIT=VALUES`, e.g.
    `events[0].credibility=0.1,0.9`) or the front end's `event`, `field` and `values`; plus the
    request's other edits (`request_interventions`)."""
    if "sweep" in body:
        if not isinstance(body["sweep"], str):
            raise ValueError(f"sweep: EDIT=VALUES, e.g. events[0].credibility=0.1,0.5,0.9 (got {body['sweep']!r})")
        axis = iv.SweepAxis.parse(body["sweep"], "sweep")
    else:
        values, event, fld = body.get("values"), body.get("event"), body.get("field")
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_SWEEP_VALUES:
            raise ValueError(f"values: 1 to {MAX_SWEEP_VALUES} numbers (got {values!r})")
        for k, v in enumerate(values):  # each checked as a what-if edit would be
            _legacy_edit(k, {"event": event, "field": fld, "value": v}, n_events)
        axis = iv.SweepAxis.parse(f"events[{event}].{LEGACY_FIELDS[str(fld)]}=" + ",".join(repr(v) for v in values), "sweep")
    return axis, request_interventions({k: v for k, v in body.items() if k in ("interventions", "edits", "sever")}, n_events)


class Base:
    """A base rollout: what a what-if keeps of it."""

    def __init__(self, path: Path):

        with TraceFile(path) as tf:
            if tf.kind != "student_rollout":
                raise ValueError(f"{path.name} is a {tf.kind}; a what-if starts from a student rollout")
            self.scenario_yaml = str(tf.f["scenario"].attrs["yaml"])
            self.scenario_data = parse_document(self.scenario_yaml, f"{path}:scenario", "scenario")
            self.rollout_cfg = read_configs(tf.f)["rollout"]
            self.ticks = tf.n_ticks
            self.n = tf.n_agents
        self.path = path
        self.events = [e for e in self.scenario_data.get("events", [])]

    def check(self, edits: iv.Interventions) -> None:
        """Raise `ConfigError` (an edit that does not fit: an unknown event) or the scenario
        checker's `ScenarioError` (a credibility above 1, ...) before any work: the rules are the
        language's and the scenario's own, not repeated here. World edits are checked when applied."""
        if edits.touches_perception:
            raise ValueError("a messages edit acts on replays (lsm recovery's paired ablations), not on a what-if rollout: "
                             "use event, exposure, sever or agents edits")
        late = [e for e in edits if isinstance(e, iv.MoveEvent) and not e.tick < self.ticks]
        if late:
            raise ValueError(f"events[{late[0].event}].tick = {late[0].tick}: a tick 0..{self.ticks - 1} (the base rollout's ticks)")
        iv.apply([e for e in edits if not isinstance(e, iv.WORLD_KINDS)], scenario=self.scenario_data,
                 source=f"{self.path.name} (what-if)")

    def edited(self, edits: iv.Interventions) -> iv.Edited:
        """The what-if's scenario and world: the edits applied to the base's."""

        return iv.apply(edits, scenario=self.scenario_data, world=load_world(self.path), source=f"{self.path.name} (what-if)")

    def describe(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "agents": self.n, "edge_types": list(EDGE_TYPES), "fields": list(LEGACY_FIELDS),
                "events": [{"index": k, "tick": e.get("tick"), "source": e.get("source", ""), "text": e.get("text", ""),
                            "credibility": e.get("credibility"), "valence": e.get("valence"),
                            "reach": (e.get("exposure") or {}).get("fraction", 1.0)} for k, e in enumerate(self.events)],
                "max_sweep_values": MAX_SWEEP_VALUES}


def _finished(out: Path, progress: Callable[[float, str], None], what: str) -> bool:
    """Whether `out` is a complete run (then reused: runs are deterministic); an incomplete one
    is run again, resuming from its journal."""

    if not out.is_file():
        return False
    try:
        with TraceFile(out):
            progress(1.0, f"already run: the same {what}'s file is reused")
            return True
    except StoreError:
        return False


def _rollout(student, base: Base, ed: iv.Edited):

    assert ed.scenario is not None and ed.world is not None
    student.check_world(ed.world.population, str(base.path))
    return Rollout(student, ed.world, ed.scenario, recorded_config(base.rollout_cfg), persona_emb=persona_tensor(ed.world.population),
                   scenario_source=f"{base.path.name} (what-if)", interventions=ed.interventions or None)


def run_whatif(student, base: Base, edits: iv.Interventions, progress: Callable[[float, str], None]) -> Path:
    """Run (or find) the what-if rollout; returns its path."""

    out_dir = base.path.parent / "whatif"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{base.path.stem}__{edits.slug}.h5"
    if _finished(out, progress, "what-if"):
        return out
    progress(0.02, "loading the world and the scenario")
    ed = base.edited(edits)
    world_edits = iv.Interventions(tuple(e for e in edits if isinstance(e, iv.WORLD_KINDS)))
    world_out = out_dir / f"{base.path.stem}{'__' + world_edits.slug if world_edits else ''}_world.h5"  # the base's world, or it edited
    if not world_out.is_file():
        assert ed.world is not None
        save_world(ed.world, world_out)  # a rollout file copies its world from a world file
    r = _rollout(student, base, ed)
    progress(0.05, f"rollout of {r.n:,} agents")
    r.run(out, world_out, f"# what-if of {base.path.name}: {edits.describe()}\n" + ed.scenario_yaml,
          quiet=True, progress=lambda t: progress(0.05 + 0.95 * (t + 1) / r.n_ticks, f"tick {t + 1}/{r.n_ticks}"))
    return out


def run_sweep(student, base: Base, axis: iv.SweepAxis, edits: iv.Interventions, progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Final-tick decision shares at each value of the axis, with `edits` at every point (in
    memory; `infer.counterfactual.run_sweep`), written to `whatif/<base>__sweep-<axis>[__<edits>].sweep/`."""

    world = load_world(base.path)
    student.check_world(world.population, str(base.path))
    cfg = recorded_config(base.rollout_cfg)

    def one(sc, w, desc):
        return Rollout(student, w, sc, cfg, persona_emb=persona_tensor(w.population)).run(None, quiet=True)

    name = f"{base.path.stem}__sweep-{re.sub(r'[^A-Za-z0-9_.+-]', '_', axis.name)}{'__' + edits.slug if edits else ''}.sweep"
    out_dir = base.path.parent / "whatif" / name
    result = _run_sweep(one, base.scenario_data, world, [axis], 0 if "seed" not in base.rollout_cfg else int(base.rollout_cfg["seed"]),
                        out_dir, base=edits, source=f"{base.path.name} (sweep)", progress=progress)
    e = axis.edits_at(axis.values[0]).edits[0]
    field = next((k for k, v in LEGACY_FIELDS.items() if axis.name.endswith("." + v)), axis.name)
    return {**result, "values": list(axis.values), "event": getattr(e, "event", None), "field": field,
            "edits": edits.describe() if edits else "", "written": f"{name}/sweep.json"}


def scenario_choices(catalog) -> dict[str, str]:
    """Scenarios a base rollout can use: the shipped ones by name, and the scenario files under
    the served folders by their served name (a YAML file with `actions` and `events`)."""

    out = {p.stem: str(p) for p in sorted((CONFIG_ROOT / "scenarios").glob("*.yaml"))}
    for k, root in enumerate(catalog.roots):
        for p in sorted(root.rglob("*.yaml"))[:200]:
            if any(part.startswith(".") for part in p.relative_to(root).parts) or not p.resolve().is_relative_to(root):
                continue
            try:
                data = parse_document(p.read_text(), str(p), "scenario")
            except Exception:  # noqa: BLE001 - not a scenario: not offered
                continue
            if isinstance(data, dict) and "actions" in data and "events" in data:
                out[f"{k}/{p.relative_to(root)}"] = str(p)
    return out


def run_base(ckpt: Path, world: Path, scenario: Path, scenario_name: str, seed: int,
             progress: Callable[[float, str], None]) -> Path:
    """A base rollout of the checkpoint on a world and scenario (`lsm rollout`, with its report;
    agents hear their neighbours by the checkpoint's rule), written to `whatif/<world>__<scenario>.h5` beside the world; an existing one is reused."""

    out_dir = world.parent / "whatif"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{world.stem}__{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(scenario_name).stem)}__s{seed}.h5"
    if _finished(out, progress, "base rollout"):
        return out
    progress(0.1, f"rollout of {world.name} with {Path(scenario_name).stem}")
    run_rollout(ckpt=ckpt, world=world, scenario=scenario, out=str(out), seed=seed, quiet=True)
    return out
