"""Every command that reads an HDF5 file or writes one refuses a wrong one in one paragraph
(exit status 2, no traceback), naming the path: missing, a directory, a text file, a truncated
file, a file of the wrong kind, an output path that cannot be written."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lsm.cli import main
from lsm.config import CONFIG_ROOT

TRACE2 = CONFIG_ROOT.parent / "data_gen" / "corpus" / "n20" / "vaccine_campaign_s1.h5"


@pytest.fixture(scope="module")
def bad(tmp_path_factory, world_file):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.txt").write_text("hello\n")
    (d / "adir").mkdir()
    (d / "trunc.h5").write_bytes(world_file.read_bytes()[:5000])
    shutil.copy(world_file, d / "w.h5")
    return {"missing": (d / "nope.h5", "no such file"), "directory": (d / "adir", "is a directory"),
            "text": (d / "notes.txt", "not an HDF5 file"), "truncated": (d / "trunc.h5", "truncated"),
            "world": (d / "w.h5", "is a 'world' file")}


TRACE_READERS = {
    "sensitivity": lambda p: ["sensitivity", str(p)],
    "validate": lambda p: ["validate", "--reference", str(p), "--repeat", str(TRACE2), "--student", str(TRACE2)],
    "narrate": lambda p: ["narrate", "--rollout", str(p), "--agent", "0"],
    "info": lambda p: ["info", str(p)],
    "scenario --world": lambda p: ["scenario", "vaccine_campaign", "--world", str(p)],
}


@pytest.mark.parametrize("command", list(TRACE_READERS))
def test_a_wrong_input_file_is_one_paragraph(command, bad, capsys):
    for case, (path, expected) in bad.items():
        if case == "world" and command in ("info", "scenario --world"):
            continue  # a world is a right input there
        rc = main(TRACE_READERS[command](path))
        err = capsys.readouterr().err
        assert rc == 2, f"{command} on {case}: exit {rc}: {err[:300]}"
        assert "Traceback" not in err and err.count("\n") == 1 and str(path) in err, f"{command} on {case}: {err[:300]}"
        assert expected in err, f"{command} on {case}: expected {expected!r} in {err[:300]}"


@pytest.mark.parametrize("out, expected", [("adir", "is a directory"), ("notes.txt/w.h5", "is a file, so the folder")])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(out, expected, bad, capsys):
    folder = bad["text"][0].parent
    rc = main(["world", "--agents", "10", "--out", str(folder / out)])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err, err
    rc = main(["gen", "--world", str(bad["world"][0]), "--scenario", "guessing_game", "--teacher", "debug",
               "--out", str(folder / out)])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err, err


def test_too_many_agents_is_refused_with_the_constant(capsys, tmp_path):
    assert main(["world", "--agents", "100000000000", "--out", str(tmp_path / "w.h5")]) == 2
    assert "MAX_AGENTS" in capsys.readouterr().err


def test_a_trace_given_as_the_world_of_a_run_is_refused(tmp_path, capsys):
    """A trace embeds its world, but a run is written from a world file: before, `lsm gen` ran the
    whole teacher and then failed writing (`name already exists`)."""
    trace = TRACE2.with_name("vaccine_campaign_s0.h5")
    rc = main(["gen", "--world", str(trace), "--scenario", "vaccine_campaign", "--teacher", "planted",
               "--out", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a 'teacher_trace' file; --world needs a world file" in err and "Traceback" not in err, err
    assert not (tmp_path / "o.h5.journal").exists()


def test_a_hostile_config_inside_an_hdf5_file_is_refused(bad, tmp_path, capsys):
    """The YAML copies inside a file go through the same bounded loader as a config file."""
    import h5py

    from tests.hostile import syntax_cases

    world = tmp_path / "w.h5"
    shutil.copy(bad["world"][0], world)
    with h5py.File(world, "a") as f:
        f.attrs["config.population"] = syntax_cases(tmp_path)["billion_laughs"]
    rc = main(["scenario", "vaccine_campaign", "--world", str(world)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{world}:config.population" in err and "after expanding aliases" in err, err


NOBODY = 65534
"""The unprivileged user the read-only check runs as when the tests run as root (root writes
through a read-only folder's permissions, so chmod alone would prove nothing there)."""


def _read_only_folder() -> Path:
    """A folder with mode 0555 inside a world-traversable one (pytest's tmp_path is 0700, which
    the unprivileged user could not even enter). The caller removes it."""
    top = Path(tempfile.mkdtemp(prefix="lsm-ro-"))
    top.chmod(0o755)
    (top / "ro").mkdir(mode=0o555)
    (top / "ro").chmod(0o555)
    return top / "ro"


_AS_NOBODY = f"""
import os, sys
from lsm.cli import main
import jsonargparse, lsm.data_gen.make_world  # the imports of `lsm world`, while the interpreter's files are readable
if os.geteuid() == 0:
    os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
sys.exit(main(sys.argv[1:]))
"""
"""`python -c` body: `lsm ARGS`, as `NOBODY` if started as root. It drops privileges itself after
importing: the interpreter may live where `nobody` cannot read (here under /root)."""


def _lsm_as_unprivileged_user(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`lsm ARGS` in a fresh process that is not root."""
    return subprocess.run([sys.executable, "-c", _AS_NOBODY, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


def test_an_unwritable_output_folder_is_one_paragraph_and_exit_2():
    """README/limits.md: an output folder that cannot be written is refused before any work in one
    paragraph naming the path and the folder, exit status 2, no traceback, nothing written. The
    folder is chmod 0555 and the command runs as an unprivileged user (as root, as `nobody`), so
    the refusal comes from the real permission, not from a mocked check."""
    ro = _read_only_folder()
    try:
        out = ro / "w.h5"
        proc = _lsm_as_unprivileged_user("world", "--agents", "20", "--out", str(out), cwd=ro.parent)
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        assert proc.stderr == f"error: --out {out}: the folder {ro} is not writable\n", proc.stderr[-2000:]
        assert proc.stdout == "" and os.listdir(ro) == []
    finally:
        ro.chmod(0o755)
        shutil.rmtree(ro.parent)


def test_a_file_in_place_of_the_output_folder_is_one_paragraph_and_exit_2(tmp_path):
    """The same refusal where no permission is involved (so it holds as root too): the folder of
    `--out` is a regular file; one line, exit 2, and the file is left as it was."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("hello\n")
    out = blocker / "sub" / "w.h5"
    proc = subprocess.run([sys.executable, "-m", "lsm", "world", "--agents", "20", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == f"error: --out {out}: {blocker} is a file, so the folder {out.parent} cannot be created\n"
    assert blocker.read_text() == "hello\n"
