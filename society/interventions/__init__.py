"""Interventions: every edit of a scenario, a world or what agents hear, in one language.

- `edits`: the typed edits (one frozen dataclass per kind), their YAML and compact forms, and
  `Interventions` (edits applied in order); `apply` edits a scenario, a world and a perception
  through one entry point; `SweepAxis` is one edit over a list of values (`--sweep`).
- `tables`: the edits of a tick's shown-neighbour table (`no_messages`, `shuffled_senders`,
  `opposite_stance`, `strong_neighbor`) that the `messages` edit names, applied to the student
  (`as_edit`, through `train.replay`) and to the planted process (`recovery.truth`).

Used by `lsm rollout --counterfactual/--sweep`, the explorer's what-ifs and sweeps, and `lsm recovery`.
"""
from lsm.society.interventions.tables import (TableEdit, as_edit, no_messages, opposite_stance, rows_with_type,
                                              shuffled_senders, strong_neighbor)
from lsm.society.interventions.edits import (EVENT_FIELDS, KINDS, NUMERIC_EVENT_FIELDS, SCENARIO_KINDS, WORLD_KINDS, Edit, EditMessages,
                                             Interventions, MoveEvent, RemoveEvent, ScaleEvent, SetAttributes, SetEvent,
                                             SetExposure, SeverTies, edit_to_dict, edit_to_string)
from lsm.society.interventions.parse import from_data, from_yaml, load, parse
from lsm.society.interventions.apply import Edited, apply
from lsm.society.interventions.sweep import SweepAxis, sweep_points

__all__ = ["TableEdit", "as_edit", "no_messages", "opposite_stance", "rows_with_type", "shuffled_senders", "strong_neighbor",
           "EVENT_FIELDS", "KINDS", "NUMERIC_EVENT_FIELDS", "SCENARIO_KINDS", "WORLD_KINDS", "Edit", "Edited", "EditMessages", "Interventions", "MoveEvent",
           "RemoveEvent", "ScaleEvent", "SetAttributes", "SetEvent", "SetExposure", "SeverTies", "SweepAxis", "apply",
           "edit_to_dict", "edit_to_string", "from_data", "from_yaml", "load", "parse", "sweep_points"]
