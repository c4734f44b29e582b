"""The society itself, the ground floor every other package builds on.

  lsm.society.world          population, typed social graph, personas (`lsm world` builds one)
  lsm.society.scenario       the scenario file: actions, channels, events, triggers
  lsm.society.loop           one loop: events and exposure, who hears whom, journal, resume
  lsm.society.store          the HDF5 trace store (schema, writer, reader)
  lsm.society.embed          the sentence encoder (all-MiniLM-L6-v2)
  lsm.society.interventions  one language of edits to a scenario, a world or a perception
  lsm.society.seeds          the one seed scheme: named streams spawned from a run's seed

Nothing here imports another `lsm` package except the base modules at the root
(`lsm.config`, `lsm.documents`, `lsm.limits`, `lsm.paths`, `lsm.transcript`).
"""
