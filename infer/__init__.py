"""lsm.infer (see DESIGN.md; built by later issues)."""
