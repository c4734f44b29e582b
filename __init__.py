"""LSM, a Large Societal Model.

Subpackages (each a top-level folder of the repository):
  lsm.data_gen  worlds (population + typed social graph), scenarios, teacher traces, the HDF5 store
  lsm.model     the society transformer (student)
  lsm.train     Lightning distillation training
  lsm.infer     rollouts, validation, benchmarks
  lsm.probes    linear probes and readouts
  lsm.narrate   grounded narration and interviews
"""
__version__ = "0.1.0"
