"""Student rollouts, counterfactuals and sweeps, their reports, validation against the teacher and
`lsm bench` (docs/design.md §8)."""
