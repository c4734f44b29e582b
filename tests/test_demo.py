"""`lsm demo` in a reduced form: the whole pipeline with the real embedded teacher on 6 agents;
then the probe notebooks run end to end on its artefacts."""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lsm.society.store import TraceFile

from lsm.cli import main

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "probes").glob("*.ipynb"))


from tests.conftest import DEMO_ARGS as ARGS


def _jsd(p, q):
    m = (p + q) / 2
    kl = lambda a, b: float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0.0)))  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _shares(path):
    with TraceFile(path) as tf:
        d, v, A = tf.array("decision"), tf.array("valid"), len(tf.scenario.actions.labels)
    return np.stack([np.bincount(d[t][v[t]], minlength=A) / max(int(v[t].sum()), 1) for t in range(len(d))])


def test_demo_runs_end_to_end_and_resumes(demo_dir, tmp_path, capsys):
    """Killed (-9) while the second teacher runs, `lsm demo` resumes: finished artefacts are kept
    byte for byte, the rest is computed, and the figures it writes are the files' own. (It runs in
    the session's demo folder, which the explorer's browser test opens after it.)"""
    out = demo_dir if not demo_dir.exists() else tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "lsm", "demo", "--out", str(out), *ARGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "teacher_llm_seed1.h5.journal"
    deadline = time.time() + 900
    while not (journal / "state_0000.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the demo finished (or failed) before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
                for name in ("world.h5", "scenario.yaml", "teacher_llm_seed0.h5")}
    assert not (out / "teacher_llm_seed1.h5").exists() and not (out / "rollout.h5").exists()
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    for step, name in (("world", "world.h5"), ("scenario", "scenario.yaml"), ("teacher (LLM seed 0)", "teacher_llm_seed0.h5")):
        assert f"[demo] {step}: {out / name} exists, kept" in printed, step
    assert printed.count("exists, kept") == 3 and "[demo] teacher (LLM seed 1) ..." in printed
    assert {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in finished} == finished
    for name in ("world.h5", "scenario.yaml", "teacher_llm_seed0.h5", "teacher_llm_seed1.h5", "runs/checkpoints/last.ckpt",
                 "rollout.h5", "rollout_report/summary.md", "rollout_report/decision_shares.png",
                 "rollout_report/counterfactual/summary.md", "validate.json", "evaluate.txt",
                 "probe_report/report.md", "probe_report/axis_recovery.png", "narration.md", "interview.md"):
        assert (out / name).exists(), name
        assert name.split("/")[-1] in printed
    with TraceFile(out / "teacher_llm_seed1.h5") as tf:
        assert tf.n_agents == 6 and tf.n_ticks == 2 and tf.seeds["llm"] == 1
    # validate.json holds the files' own figures: JSD of decision shares per tick, recomputed here
    res = json.loads((out / "validate.json").read_text())
    a, b, s = (_shares(out / n) for n in ("teacher_llm_seed0.h5", "teacher_llm_seed1.h5", "rollout.h5"))
    floor = np.mean([_jsd(a[t], b[t]) for t in range(2)])
    student = np.mean([_jsd(a[t], s[t]) for t in range(2)])
    assert res["decision_jsd_mean"]["floor"] == pytest.approx(floor, abs=1e-9)
    assert res["decision_jsd_mean"]["student"] == pytest.approx(student, abs=1e-9)
    ratio = res["decision_jsd_mean"]["ratio"]  # student / floor; undefined (NaN in JSON) where the floor is 0
    assert ratio == pytest.approx(student / floor) if floor > 0 else (ratio is None or math.isnan(ratio)), (ratio, floor)
    # the narrated agent is one the counterfactual flipped (agent 0 when none did), and its story passed the check
    with TraceFile(out / "rollout.h5") as r, TraceFile(out / "rollout_cf.h5") as cf:
        flipped = np.nonzero(r.array("decision")[-1] != cf.array("decision")[-1])[0]
    narration = (out / "narration.md").read_text()
    assert f"(agent {int(flipped[0]) if len(flipped) else 0})" in narration
    assert "*Checks: grounded ✓, relevant ✓, attributed ✓, complete ✓" in narration
    interview = (out / "interview.md").read_text()
    assert "*Checks: grounded ✓, relevant ✓, attributed ✓, complete ✓" in interview
    assert "You decided as you did" not in interview
    assert f"lsm explore {out}" in printed  # the demo ends by saying how to explore it
    # a second run keeps every finished step
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    assert capsys.readouterr().out.count("exists, kept") == 10  # every step
    # the notebooks, executed on these artefacts (a failing cell fails the test)
    import nbclient
    import nbformat

    assert {p.name for p in NOTEBOOKS} >= {"axis_recovery.ipynb", "agent_readout.ipynb"}
    os.environ["LSM_DEMO"] = str(out)
    path_before = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + path_before  # the kernel runs this venv's python
    try:
        for path in NOTEBOOKS:
            nb = nbformat.read(path, as_version=4)
            nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                    resources={"metadata": {"path": str(path.parent)}}).execute()
            assert any(o.get("output_type") in ("display_data", "execute_result") for c in nb.cells for o in c.get("outputs", []))
    finally:
        del os.environ["LSM_DEMO"]
        os.environ["PATH"] = path_before
