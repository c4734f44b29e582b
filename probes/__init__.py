"""lsm.probes (see DESIGN.md; built by later issues)."""
