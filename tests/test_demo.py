"""`lsm demo` in a reduced form: the whole pipeline with the real embedded teacher on 6 agents;
then the probe notebooks run end to end on its artefacts."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


from lsm.cli import main

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "probes").glob("*.ipynb"))


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--agents", "6", "--ticks", "2", "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    for name in ("world.h5", "scenario.yaml", "teacher_llm_seed0.h5", "teacher_llm_seed1.h5", "runs/checkpoints/last.ckpt",
                 "rollout.h5", "rollout_report/summary.md", "rollout_report/decision_shares.png",
                 "rollout_report/counterfactual/summary.md", "validate.json", "evaluate.txt",
                 "probe_report/report.md", "probe_report/axis_recovery.png", "narration.md", "interview.md"):
        assert (out / name).exists(), name
        assert name.split("/")[-1] in printed
    assert set(json.loads((out / "validate.json").read_text())) >= {"decision_jsd_mean", "channel_mae", "cluster_ari"}
    # a second run keeps every finished step
    assert main(["demo", "--out", str(out), "--agents", "6", "--ticks", "2", "--epochs", "2"]) == 0
    assert capsys.readouterr().out.count("exists, kept") >= 10
    assert "Grounding:" in (out / "narration.md").read_text()
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
