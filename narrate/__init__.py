"""Grounded first-person narratives and interviews of one agent from its record
(`lsm narrate`; docs/design.md §9)."""
