"""The student: the graph-masked society transformer, its agent state and checkpoints (docs/design.md §6)."""
