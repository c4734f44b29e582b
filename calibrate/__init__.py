"""`lsm calibrate`: fitting a scenario's unknowns to observed aggregates through the student (docs/calibrate.md)."""
