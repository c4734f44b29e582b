"""Linear probes of the student's state, the axis-recovery report and one agent's readout
(`lsm probe`; docs/design.md §9)."""
