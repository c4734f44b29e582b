"""What-if runs from a base student rollout: the same checkpoint, world, seed and rollout
settings, with the scenario's events edited (credibility, reach, valence, timing) and/or one
or more tie types severed; or a sweep of one event parameter.

A what-if lands as an ordinary rollout file in `whatif/` beside the base rollout, named by
its edits (`rollout__e0-credibility-0.2__sever-friend.h5`); asking for the same what-if again
returns that file (rollouts are deterministic). A rollout file copies its world from a world
file, so the base's world is written there once (`rollout_world.h5`), and each severed one
once (`rollout__sever-friend_world.h5`). A sweep runs each point in
memory and writes `<name>.sweep.json`.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lsm.society.world.graph import EDGE_TYPES
from lsm.limits import MAX_SWEEP_VALUES

EDIT_FIELDS = {"credibility": ("credibility",), "valence": ("valence",), "reach": ("exposure", "fraction"), "tick": ("tick",)}
"""What a what-if can change of a scheduled event, and where that lives in the scenario YAML."""


@dataclass(frozen=True)
class Edit:
    event: int
    field: str
    value: float

    @property
    def slug(self) -> str:
        return f"e{self.event}-{self.field}-{self.value:g}"


def parse_edits(raw: list[dict], n_events: int, ticks: int) -> list[Edit]:
    """Edits from a request, each checked (a bad one raises ValueError naming it)."""
    out = []
    for k, e in enumerate(raw):
        if not isinstance(e, dict) or set(e) - {"event", "field", "value"}:
            raise ValueError(f"edits[{k}]: expected {{event, field, value}}, got {e!r}")
        ev, fld, val = e.get("event"), e.get("field"), e.get("value")
        if not isinstance(ev, int) or not 0 <= ev < n_events:
            raise ValueError(f"edits[{k}].event = {ev!r}: the scenario has scheduled events 0..{n_events - 1}")
        if fld not in EDIT_FIELDS:
            raise ValueError(f"edits[{k}].field = {fld!r}: one of {', '.join(EDIT_FIELDS)}")
        if not isinstance(val, (int, float)) or isinstance(val, bool) or not np.isfinite(val):
            raise ValueError(f"edits[{k}].value = {val!r}: a number")
        if fld == "tick" and (int(val) != val or not 0 <= val < ticks):
            raise ValueError(f"edits[{k}].value = {val!r}: a tick 0..{ticks - 1}")
        out.append(Edit(ev, fld, int(val) if fld == "tick" else float(val)))
    return out


def parse_sever(raw: list[str]) -> list[str]:
    bad = [t for t in raw if t not in EDGE_TYPES]
    if bad:
        raise ValueError(f"sever {bad}: tie types are {', '.join(EDGE_TYPES)}")
    return sorted(set(raw), key=EDGE_TYPES.index)


def apply_edits(data: dict, edits: list[Edit]) -> dict:
    """The scenario dict with the edits applied (a copy)."""
    new = copy.deepcopy(data)
    for e in edits:
        node = new["events"][e.event]
        *parents, leaf = EDIT_FIELDS[e.field]
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = e.value
    return new


def slug(edits: list[Edit], sever: list[str]) -> str:
    parts = [e.slug for e in edits] + ([f"sever-{'-'.join(sever)}"] if sever else [])
    s = "__".join(parts) or "same"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)[:150]


class Base:
    """A base rollout: what a what-if keeps of it."""

    def __init__(self, path: Path):
        from lsm.society.store import TraceFile, read_configs
        from lsm.documents import parse_document

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

    def check(self, edits: list[Edit]) -> None:
        """Raise the scenario checker's `ScenarioError` if the edited scenario is invalid (a
        credibility above 1, ...): the rules are the scenario's own, not repeated here."""
        from lsm.society.scenario import scenario_from_dict

        scenario_from_dict(apply_edits(self.scenario_data, edits), source=f"{self.path.name} (what-if)")

    def describe(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "agents": self.n, "edge_types": list(EDGE_TYPES), "fields": list(EDIT_FIELDS),
                "events": [{"index": k, "tick": e.get("tick"), "source": e.get("source", ""), "text": e.get("text", ""),
                            "credibility": e.get("credibility"), "valence": e.get("valence"),
                            "reach": (e.get("exposure") or {}).get("fraction", 1.0)} for k, e in enumerate(self.events)],
                "max_sweep_values": MAX_SWEEP_VALUES}


def _finished(out: Path, progress: Callable[[float, str], None], what: str) -> bool:
    """Whether `out` is a complete run (then reused: runs are deterministic); an incomplete one
    is run again, resuming from its journal."""
    from lsm.society.store import StoreError, TraceFile

    if not out.is_file():
        return False
    try:
        with TraceFile(out):
            progress(1.0, f"already run: the same {what}'s file is reused")
            return True
    except StoreError:
        return False


def _rollout(student, base: Base, scenario_data: dict, sever: list[str], world_out: Path | None):
    """(Rollout, the world file to copy into its output: `world_out`, written unless it exists)."""
    from lsm.society.embed import persona_tensor
    from lsm.society.scenario import scenario_from_dict
    from lsm.society.world import load_world, save_world
    from lsm.infer.rollout import Rollout, recorded_config

    sc = scenario_from_dict(scenario_data, source=f"{base.path.name} (what-if)")
    world = load_world(base.path)
    student.check_world(world.population, str(base.path))
    if sever:
        g = world.graph
        keep = ~np.isin(g.edge_type, [EDGE_TYPES.index(t) for t in sever])
        g.edge_index, g.edge_type, g.edge_weight = g.edge_index[:, keep], g.edge_type[keep], g.edge_weight[keep]
    if world_out is not None and not world_out.is_file():
        save_world(world, world_out)  # a rollout file copies its world from a world file
    return (Rollout(student, world, sc, recorded_config(base.rollout_cfg), persona_emb=persona_tensor(world.population)),
            world_out)


def run_whatif(student, base: Base, edits: list[Edit], sever: list[str], progress: Callable[[float, str], None]) -> Path:
    """Run (or find) the what-if rollout; returns its path."""
    out_dir = base.path.parent / "whatif"
    out_dir.mkdir(exist_ok=True)
    name = f"{base.path.stem}__{slug(edits, sever)}"
    out = out_dir / f"{name}.h5"
    if _finished(out, progress, "what-if"):
        return out
    progress(0.02, "loading the world and the scenario")
    data = apply_edits(base.scenario_data, edits)
    world_out = out_dir / f"{base.path.stem}{'__sever-' + '-'.join(sever) if sever else ''}_world.h5"  # the base's world, or it severed
    r, world_file = _rollout(student, base, data, sever, world_out)
    import yaml

    progress(0.05, f"rollout of {r.n:,} agents")
    r.run(out, world_file, f"# what-if of {base.path.name}: {slug(edits, sever)}\n" + yaml.safe_dump(data, sort_keys=False),
          quiet=True, progress=lambda t: progress(0.05 + 0.95 * (t + 1) / r.n_ticks, f"tick {t + 1}/{r.n_ticks}"))
    return out


def run_sweep(student, base: Base, event: int, field: str, values: list[float], sever: list[str],
              progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Final-tick decision shares at each value of one event parameter (in memory); written
    as `whatif/<base>__sweep-e<event>-<field>.sweep.json`."""
    if not 1 <= len(values) <= MAX_SWEEP_VALUES:
        raise ValueError(f"values: 1 to {MAX_SWEEP_VALUES} numbers")
    edits_at = [parse_edits([{"event": event, "field": field, "value": v}], len(base.events), base.ticks) for v in values]
    finals = []
    for k, edits in enumerate(edits_at):
        progress(k / len(values), f"point {k + 1}/{len(values)}: {edits[0].slug}")
        r, _ = _rollout(student, base, apply_edits(base.scenario_data, edits), sever, None)
        summary = r.run(None, quiet=True)
        finals.append(summary["decision_shares"][-1])
    result = {"event": event, "field": field, "values": [e[0].value for e in edits_at], "actions": summary["actions"],
              "final_shares": finals, "sever": sever}
    out_dir = base.path.parent / "whatif"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{base.path.stem}__sweep-e{event}-{field}{'__sever-' + '-'.join(sever) if sever else ''}.sweep.json"
    path.write_text(json.dumps(result, indent=1))
    result["written"] = path.name
    return result


def scenario_choices(catalog) -> dict[str, str]:
    """Scenarios a base rollout can use: the shipped ones by name, and the scenario files under
    the served folders by their served name (a YAML file with `actions` and `events`)."""
    from lsm.config import CONFIG_ROOT
    from lsm.documents import parse_document

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


def run_base(ckpt: Path, world: Path, scenario: Path, scenario_name: str, teacher: str, seed: int,
             progress: Callable[[float, str], None]) -> Path:
    """A base rollout of the checkpoint on a world and scenario (`lsm rollout`, with its report),
    written to `whatif/<world>__<scenario>.h5` beside the world; an existing one is reused."""
    from lsm.infer.run import run_rollout

    out_dir = world.parent / "whatif"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{world.stem}__{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(scenario_name).stem)}__s{seed}.h5"
    if _finished(out, progress, "base rollout"):
        return out
    progress(0.1, f"rollout of {world.name} with {Path(scenario_name).stem}")
    run_rollout(ckpt=ckpt, world=world, scenario=scenario, out=str(out), seed=seed, teacher=teacher, quiet=True)
    return out
