"""`lsm probe`: axis recovery and one agent's readout of a student rollout, as a report folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lsm.config import UsageError
from lsm.model.checkpoint import load_checkpoint
from lsm.probes.linear import ProbeResult
from lsm.probes.readout import AgentReadout, agent_readout
from lsm.probes.report import axis_recovery, write_probe_report
from lsm.society.store import TraceFile


@dataclass
class ProbeRun:
    results: list[ProbeResult]
    readout: AgentReadout
    out: Path
    text: str
    """The report's markdown and the files written (what `lsm probe` prints)."""


def most_changing_agent(rollout: str | Path) -> int:
    """The first agent whose decision changed most often over the rollout (0 for one tick)."""
    import numpy as np

    with TraceFile(rollout) as tf:
        d = tf.array("decision")
    return int(np.argmax((np.diff(d, axis=0) != 0).sum(0))) if len(d) > 1 else 0


def run_probe(ckpt: str | Path, rollout: str | Path, out: str | Path = "probe_report", teacher: str | Path | None = None,
              agent: int | None = None, seed: int = 0) -> ProbeRun:
    """Probe the student's state for identities over the rollout's ticks (and, with a teacher
    trace of the same world, the teacher's channels, decisions and reasoning features); read out
    `agent` (default: `most_changing_agent`); write `report.md`, `axis_recovery.png` and
    `probes.json` to `out`. An agent the rollout cannot replay raises `UsageError`."""

    student = load_checkpoint(ckpt)
    results = axis_recovery(student, rollout, teacher, seed)
    if agent is None:
        agent = most_changing_agent(rollout)
    try:
        readout = agent_readout(student, rollout, agent)
    except ValueError as err:
        raise UsageError(str(err)) from None
    text = write_probe_report(results, out, f"Probe report: {rollout}", readout.markdown())
    text += f"\nWritten: {out}/report.md, {out}/axis_recovery.png, {out}/probes.json"
    return ProbeRun(results, readout, Path(out), text)
