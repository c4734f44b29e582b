"""The society loop: one simulation tick by tick, whatever policy answers for the agents."""
