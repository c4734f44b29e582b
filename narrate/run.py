"""`lsm narrate`: choose agents of a rollout or teacher trace, narrate (or interview) each from its
record, or put the question battery to many (`--battery N`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsm.config import UsageError, load_config, resolve_config
from lsm.data_gen.teacher.config import TeacherConfig, make_backend
from lsm.model.checkpoint import load_checkpoint
from lsm.narrate.battery import BatteryResult, battery_agents, run_battery
from lsm.narrate.narrator import Narration, narrate
from lsm.probes.readout import readouts
from lsm.society.store import TraceFile, read_configs
from lsm.transcript import Echo, Transcript


@dataclass
class NarrateRun:
    agents: list[int]
    narrations: list[Narration] = field(default_factory=list)
    text: str = ""
    """The markdown of every narration (what `lsm narrate` prints), or why no agent was chosen."""


def parse_ids(agent: str | int) -> list[int]:
    """`"3,7"` -> `[3, 7]`."""
    try:
        return [int(a) for a in str(agent).split(",") if a.strip() != ""]
    except ValueError:
        raise UsageError(f"--agent {agent!r}: expected agent ids such as 3 or 3,7") from None


def parse_span(ticks: str | None, n_ticks: int) -> range:
    """`"A:B"` (inclusive) -> `range(A, B + 1)`, checked against a rollout of `n_ticks`; None: all."""
    if not ticks:
        return range(n_ticks)
    try:
        a, b = (int(x) for x in ticks.split(":"))
    except ValueError:
        raise UsageError(f"--ticks {ticks!r}: expected A:B, e.g. 0:2") from None
    if not (0 <= a <= b < n_ticks):
        raise UsageError(f"--ticks {ticks}: the rollout has ticks 0..{n_ticks - 1}")
    return range(a, b + 1)


def choose_agents(rollout: str | Path, agent: str | int | None = None, cluster: int | None = None,
                  report: str | Path | None = None, flipped: str | Path | None = None, limit: int = 3) -> list[int]:
    """Agent ids of a rollout: given (`"3,7"`), or up to `limit` of one reasoning-profile cluster
    (from the report folder, default `<rollout without .h5>_report`), or up to `limit` whose
    final decision differs in the counterfactual rollout `flipped` (possibly none)."""

    rollout = str(rollout)
    with TraceFile(rollout) as tf:
        n = tf.n_agents
        final = tf.array("decision")[-1]
    if agent is not None:
        ids = parse_ids(agent)
    elif cluster is not None:
        labels_path = Path(report or (rollout[:-3] if rollout.endswith(".h5") else rollout) + "_report") / "cluster_labels.npy"
        if not labels_path.exists():
            raise UsageError(f"--cluster needs the rollout's report folder; {labels_path} does not exist (pass --report)")
        ids = [int(i) for i in np.nonzero(np.load(labels_path) == cluster)[0][:limit]]
    elif flipped is not None:
        with TraceFile(flipped) as tf:
            other = tf.array("decision")[-1]
        ids = [int(i) for i in np.nonzero(other != final)[0][:limit]]
    else:
        raise UsageError("choose agents: --agent ID, --cluster K or --flipped CF.h5")
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise UsageError(f"--agent {bad}: {rollout} has agents 0..{n - 1}")
    return ids


def run_narrate(rollout: str | Path, agent: str | int | None = None, ticks: str | None = None, teacher: str | Path = "embedded",
                ask: str | None = None, ckpt: str | Path | None = None, cluster: int | None = None,
                report: str | Path | None = None, flipped: str | Path | None = None, limit: int = 3, attempts: int = 3,
                seed: int = 0, out: str | Path | None = None, echo: Echo = None) -> NarrateRun:
    """Narratives (or, with `ask`, interview answers) of the chosen agents (`choose_agents`) over
    the tick span `ticks` (`"A:B"`), each checked against the agent's record; with `out`, the
    markdown is also written there. `echo` receives each narration as soon as it is written."""

    say = Transcript(echo)
    ids = choose_agents(rollout, agent, cluster, report, flipped, limit)
    if not ids and agent is None and cluster is None:  # chosen by flip, and none flipped
        say(f"No agent's final decision differs between {rollout} and {flipped}.")
        return NarrateRun([], text=str(say))
    span, student = _source(rollout, ckpt, ticks)
    backend = _backend(teacher)
    result = NarrateRun(ids)
    for record in readouts(rollout, ids, span, student):  # one replay of a rollout for all of them
        nar = narrate(record, backend, question=ask, attempts=attempts, seed=seed)
        result.narrations.append(nar)
        say(nar.markdown() + f"\n*{nar.seconds:.1f} s*\n")
    if out:
        Path(out).write_text("\n".join(say.parts))
        say(f"Written: {out}")
    result.text = str(say)
    return result


def _source(rollout: str | Path, ckpt: str | Path | None, ticks: str | None):
    """(the tick span `ticks` of the file, the student that wrote it: its readouts replay it; None
    for a teacher trace, read as written)."""
    with TraceFile(rollout) as tf:
        n_ticks, kind = tf.n_ticks, tf.kind
        recorded = read_configs(tf.f).get("student", {})
    span = parse_span(ticks, n_ticks)
    if kind == "teacher_trace":
        return span, None
    ckpt = ckpt or recorded.get("checkpoint")
    if not ckpt or not Path(ckpt).exists():
        raise UsageError(f"the rollout's checkpoint {ckpt!r} is not here; pass --ckpt")
    return span, load_checkpoint(ckpt)


def _backend(teacher: str | Path):
    return make_backend(load_config(TeacherConfig, resolve_config(teacher, "teacher"), kind="teacher config"))


def run_battery_on(rollout: str | Path, n: int, teacher: str | Path = "embedded", ckpt: str | Path | None = None,
                   ticks: str | None = None, attempts: int = 3, seed: int = 0, out: str | Path | None = None,
                   echo: Echo = None) -> BatteryResult:
    """The question battery (`narrate.battery`) over `n` agents of a rollout or teacher trace: each
    answer as it comes, then the table of check rates and the failures; with `out`, the answers
    as JSON there."""
    if n < 1:
        raise UsageError(f"--battery {n}: the number of agents to question, at least 1")
    say = Transcript(echo)
    span, student = _source(rollout, ckpt, ticks)
    backend = _backend(teacher)
    ids = battery_agents(rollout, n, seed)
    result = run_battery(rollout, readouts(rollout, ids, span, student), backend, attempts, seed, echo=say)
    say("")
    say(result.table())
    say("")
    say(result.failures())
    if out:
        Path(out).write_text(result.to_json())
        say(f"Written: {out}")
    return result
