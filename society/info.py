"""`lsm info`: what an LSM HDF5 file is and holds (world, teacher trace or student rollout)."""
from __future__ import annotations

import json
from pathlib import Path

from lsm.society.interventions import from_yaml
from lsm.society.store import TRACE_FIELDS, TraceFile, check_header, open_h5


def describe(file: str | Path) -> list[str]:
    """The lines `lsm info FILE` prints: kind, schema, completeness, seeds, configs and package
    versions; then agents and edges of a world, or agents, ticks, dims, the scenario and every field
    of a trace.
    A file that is not an LSM file raises `StoreError`."""
    with open_h5(file) as f:
        kind = check_header(f)
        lines = [f"{file}: {kind}, schema {f.attrs['schema_version']}, complete: {bool(f.attrs.get('complete', False))}",
                 f"  seeds: {f.attrs.get('seeds', '{}')}",
                 f"  configs: {', '.join(k.split('.', 1)[1] for k in f.attrs if k.startswith('config.'))}",
                 f"  packages: {f.attrs.get('package_versions', '{}')}"]
        if "config.interventions" in f.attrs:  # a what-if / counterfactual: the edits that made its scenario and world
            edits = from_yaml(str(f.attrs["config.interventions"]), f"{file}:config.interventions")
            lines.append(f"  interventions: {edits.describe()}")
        if kind == "world":
            lines.append(f"  agents: {int(f['population'].attrs['n']):,}, edges: {f['graph/edge_index'].shape[1]:,}")
            return lines
    with TraceFile(file, allow_partial=True) as tf:
        lines.append(f"  agents: {tf.n_agents:,}, ticks: {tf.n_ticks}, dims: {json.dumps(tf.dims)}")
        lines.append(f"  scenario: {tf.scenario.name}, actions: {', '.join(tf.scenario.actions.labels)}")
        for name in tf.fields:
            lines.append(f"  {name:<18} {str(tf.f[name].shape):<22} {TRACE_FIELDS[name].doc}")
    return lines
