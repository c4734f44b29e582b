"""Distillation of teacher traces into the student with Lightning (`lsm train`) and held-out
evaluation (`lsm evaluate`; docs/design.md §7)."""
