"""A checkpoint that is not ours, or a world its student never saw (issue 14): one paragraph, exit
status 2, or a rollout with a one-line warning — never a traceback, and no code in a file runs."""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import h5py
import numpy as np
import torch

from lsm.cli import main
from lsm.config import CONFIG_ROOT
from lsm.data_gen.world import build_world, save_world


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_checkpoint(path, marker):
    """A real torch zip whose data.pkl calls os.system when unpickled without weights_only."""
    buf = io.BytesIO()
    torch.save({"student_config": {}, "state_dict": {}}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps({"student_config": _Exploit(marker)}, protocol=2)
            dst.writestr(item, data)
    assert not os.path.exists(marker)


def _rollout(ckpt, world, out):
    return main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign",
                 "--ticks", "2", "--out", str(out), "--quiet", "true"])


def test_a_checkpoint_that_is_not_ours_is_refused_in_one_paragraph(trained, tmp_path, capsys):
    _, ckpt_dir, world = trained
    real = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    marker = tmp_path / "PWNED"
    cases = {}
    cases["random_bytes"] = tmp_path / "random.ckpt"
    cases["random_bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
    cases["empty"] = tmp_path / "empty.ckpt"
    cases["empty"].write_bytes(b"")
    cases["world_h5"] = world
    cases["crafted_pickle"] = tmp_path / "crafted.ckpt"
    _crafted_checkpoint(cases["crafted_pickle"], marker)
    cases["no_student_config"] = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(3)}, cases["no_student_config"])
    cases["weights_do_not_fit"] = tmp_path / "mismatch.ckpt"
    bad = dict(real)
    bad["state_dict"] = {k: (v[..., :1] if v.ndim else v) for k, v in real["state_dict"].items()}
    torch.save(bad, cases["weights_do_not_fit"])
    cases["empty_folder"] = tmp_path / "nothing_here"
    cases["empty_folder"].mkdir()
    expected = {"random_bytes": "not a readable checkpoint", "empty": "not a readable checkpoint",
                "world_h5": "not a readable checkpoint", "crafted_pickle": "refused to load safely",
                "no_student_config": "not an LSM student checkpoint", "weights_do_not_fit": "do not fit",
                "empty_folder": "no last.ckpt"}
    for name, path in cases.items():
        rc = _rollout(path, world, tmp_path / f"{name}.h5")
        err = capsys.readouterr().err
        assert rc == 2, f"{name}: exit {rc}: {err[-500:]}"
        assert "Traceback" not in err and str(path) in err and expected[name] in err, f"{name}: {err[-500:]}"
    assert not marker.exists(), "the crafted pickle ran code"


def test_a_world_from_another_population_rolls_out_with_unknown_identities(trained, tmp_path, capsys):
    _, ckpt_dir, _ = trained
    generic = tmp_path / "generic.h5"
    save_world(build_world(CONFIG_ROOT / "population/generic.yaml", CONFIG_ROOT / "graph/default.yaml", 40, 1), generic)
    out = tmp_path / "r.h5"
    assert _rollout(ckpt_dir, generic, out) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: this world")]
    assert len(warnings) == 1 and "lacks" in warnings[0] and "party_id" in warnings[0], err[-800:]
    with h5py.File(out) as f:
        d = f["decision"][:]
        assert d.shape == (2, 40) and (d >= 0).all()


def test_a_world_with_nothing_in_common_is_refused(trained, tmp_path, capsys):
    _, ckpt_dir, _ = trained
    pop = tmp_path / "alien.yaml"
    pop.write_text("name: alien\nattributes:\n  shoe_size: {type: categorical, categories: {small: 1, large: 1}}\n")
    graph = tmp_path / "flat.yaml"
    graph.write_text("name: flat\n")
    alien = tmp_path / "alien.h5"
    save_world(build_world(pop, graph, 30, 0), alien)
    assert _rollout(ckpt_dir, alien, tmp_path / "r.h5") == 2
    err = capsys.readouterr().err
    assert "this world has none of them" in err and "shoe_size" in err and "Traceback" not in err, err[-600:]
