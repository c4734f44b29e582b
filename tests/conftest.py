"""Shared fixtures: small worlds built once per test session (the `debug` sizes), and a debug
student trained on the reference corpus with a world it never saw."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # before numpy's and torch's thread pools start: see pytest_configure
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "1"

import pytest

from lsm.config import CONFIG_ROOT, shipped
from lsm.society.world import build_world, save_world


@pytest.fixture(scope="session")
def anes_world():
    return build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=3000, seed=0)


@pytest.fixture(scope="session")
def generic_world():
    return build_world(shipped("population", "generic.yaml"), shipped("graph", "default.yaml"), agents=3000, seed=1)


@pytest.fixture(scope="session")
def world_file(tmp_path_factory, anes_world):
    path = tmp_path_factory.mktemp("world") / "world.h5"
    save_world(anes_world, path)
    return path


ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data_gen/corpus/n20"


DEMO_ARGS = ["--agents", "6", "--ticks", "2", "--epochs", "2"]
"""`lsm demo` reduced for the tests: the whole pipeline with the real embedded teacher on 6 agents."""


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2 as the `debug` teacher preset builds it (float32, batches of 16),
    loaded once for the session: the tests that generate or score with it share it."""
    from lsm.data_gen.teacher.backends.embedded import EmbeddedBackend, EmbeddedConfig

    return EmbeddedBackend(EmbeddedConfig(batch_size=16))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A folder for the reduced demo, shared by the session: `test_demo` runs (kills and resumes)
    the demo there; later tests (the explorer in a browser) open its artefacts."""
    return tmp_path_factory.mktemp("demo") / "demo"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(folder, checkpoint folder, world file): a debug student (1 epoch on one corpus file) and a
    60-agent world it never saw."""
    from lsm.cli import main

    tmp = tmp_path_factory.mktemp("trained")
    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        assert main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"), "--trainer.max_epochs", "1",
                     "--data.train_files", f"[{CORPUS / 'vaccine_campaign_s0.h5'}]",
                     "--data.val_files", f"[{CORPUS / 'vaccine_campaign_s1.h5'}]"]) == 0
    finally:
        os.chdir(cwd)
    world = tmp / "w60.h5"
    save_world(build_world(CONFIG_ROOT / "population/anes96.yaml", CONFIG_ROOT / "graph/default.yaml", 60, 7), world)
    return tmp, tmp / "runs/debug/checkpoints", world


@pytest.fixture(scope="session")
def rollout_20k(trained, tmp_path_factory):
    """(args, reference): the `lsm rollout` arguments of the kill-and-resume tests (the debug
    student on a 20,000-agent world, seed 3; without `--out`) and the file an uninterrupted
    one-process run of them writes, which every interrupted run must equal."""
    _, ckpt, _ = trained
    tmp = tmp_path_factory.mktemp("rollout_20k")
    world = tmp / "w20k.h5"
    save_world(build_world(CONFIG_ROOT / "population/anes96.yaml", CONFIG_ROOT / "graph/default.yaml", 20000, 2), world)
    args = ["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign", "--seed", "3",
            "--quiet", "true", "--clusters", "2"]
    subprocess.run([sys.executable, "-m", "lsm", *args, "--out", str(tmp / "ref.h5")], check=True, capture_output=True)
    return args, tmp / "ref.h5"


@pytest.fixture(scope="session")
def recovered(tmp_path_factory):
    """(folder, printed text): a small known-answer recovery (`lsm recovery`, 1500 training agents,
    400 held out, 2 scenario variants, 240 steps of 256-agent batches, ~3 min): its students
    respond to the planted influence and events. The run is killed (-9) once the student is
    trained, and the same command resumes it (`RECOVERY_KILLED`: the student's checkpoint then)."""
    import contextlib
    import hashlib
    import io

    from lsm.cli import main

    out = tmp_path_factory.mktemp("recovery")
    args = ["recovery", "--out", str(out / "rec"), "--agents", "1500", "--held_out_agents", "400", "--steps", "240",
            "--train_variants", "2", "--json", str(out / "r.json")]
    proc = subprocess.Popen([sys.executable, "-m", "lsm", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    student = out / "rec/students/student_n1500/last.ckpt"
    deadline = time.time() + 900
    while not student.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the recovery finished (or failed) before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (out / RECOVERY_KILLED).write_text(hashlib.sha256(student.read_bytes()).hexdigest())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return out, printed.getvalue()


RECOVERY_KILLED = "killed_student.sha256"
"""The `recovered` folder's record of the student checkpoint as the killed run left it."""


def like_a_terminal() -> None:
    """`preexec_fn` of a process a test will Ctrl-C: SIGINT handled by default and not blocked, as
    in a shell, whatever the test runner's process (a pytest-xdist worker) set for itself."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_until_journaled(args: list[str], out: Path, tick: int, timeout: float = 600) -> subprocess.Popen:
    """`lsm ARGS --out OUT` started and returned, still running, once it has journaled `tick`
    (stderr piped, as text)."""
    proc = subprocess.Popen([sys.executable, "-m", "lsm", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal = Path(str(out) + ".journal")
    deadline = time.time() + timeout
    while not (journal / f"state_{tick:04d}.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    return proc


@pytest.fixture
def kill_after_tick():
    """`kill(args, out, tick, timeout)`: start `lsm ARGS --out OUT`, kill -9 it as soon as it has
    journaled `tick`, and return the journal folder (the run must still have been going)."""

    def kill(args: list[str], out: Path, tick: int, timeout: float = 600) -> Path:
        proc = start_until_journaled(args, out, tick, timeout)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Path(str(out) + ".journal")

    return kill


SLOW_FIXTURES = {"recovered", "demo_dir", "embedded", "backend", "server", "kill_after_tick", "client", "browser"}
"""Fixtures that load the embedded LLM, train a recovery student, run the demo, serve the explorer
or kill and resume a run: a test that uses one is in the full lane (`make test`) only."""
SLOW_MODULES = {"test_demo", "test_explore_browser", "test_backend_embedded", "test_backend_openai", "test_teacher",
                "test_scoring", "test_gpu_smoke", "test_fuzz", "test_explore_api", "test_report_scale"}
"""Modules whose every test is in the full lane (real LLM, browser, property fuzzing, large populations)."""
SLOW_TESTS = {"test_world_backstories_from_the_cli", "test_lsm_train_default_root_dir_moves_checkpoints_and_logs",
              "test_narration_and_interview_with_the_embedded_llm", "test_every_baseline_is_reported",
              "test_the_real_data_notebook_runs_from_a_clone",
              "test_a_rank_killed_mid_run_stops_the_others_and_the_same_command_resumes_to_the_same_file",
              "test_bench_figures_agree_without_a_checkpoint"}
"""Single tests of the full lane (the embedded LLM, two training runs, the calibration notebook's training,
`lsm bench`'s subprocess and matmul timing: 10-14 s on 2 busy cores)."""


SHARED_GROUPS = {"test_demo": "demo", "test_explore_browser": "demo", "test_recovery": "recovered", "test_rollout": "recovered",
                 "test_loop": "rollout_20k", "test_sharded": "rollout_20k"}
"""Modules run by one worker together under `pytest -n` (see `pytest_xdist_make_scheduler`), named
by the session fixture they share, which another worker would build again: the browser test
opens the demo folder that `test_demo` leaves; two modules use the recovery, two the 20,000-agent
reference rollout."""


def pytest_configure(config):
    """Under pytest-xdist, each worker (and each process it starts) uses one CPU thread: two torch
    processes with a thread per core each would fight over the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`pytest -n N`: a module's tests run on one worker, one after the other (its module and
    session fixtures, an LLM, a recovery or the demo, are built once); the workers take whole
    modules as they come free, the modules of a `SHARED_GROUPS` group as one."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the collection's order (LONGEST_FIRST), not the number of tests

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = Path(nodeid.split("::")[0]).stem
            return SHARED_GROUPS.get(module, module)

    return ModuleScheduling(config, log)


LONGEST_FIRST = ["test_teacher", "test_loop", "test_sharded", "test_recovery", "test_rollout", "test_demo", "test_explore_browser",
                 "test_backend_openai", "test_fuzz", "test_probes_narrate", "test_scoring", "test_calibrate", "test_embedded_precision"]
"""The modules that take longest (a minute or more on one core), run first, longest first (a
shared group's modules side by side), so that two workers end together: the rest follow in name
order (`tests/test_suite_groups.py` checks both lists against the files)."""


def pytest_collection_modifyitems(config, items):
    """Mark the full lane's tests `slow`: `make check` runs the rest (`-m "not slow"`), `make test`
    all; put the longest modules first (`LONGEST_FIRST`; a module's own order is kept)."""
    rank = {m: k for k, m in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))
    for item in items:
        module = Path(str(item.fspath)).stem
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
