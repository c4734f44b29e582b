"""lsm.narrate (see DESIGN.md; built by later issues)."""
