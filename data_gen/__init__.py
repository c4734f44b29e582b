"""Worlds, scenarios, teacher traces and the HDF5 trace store (DESIGN §3-§5)."""
