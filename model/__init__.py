"""lsm.model (see DESIGN.md; built by later issues)."""
