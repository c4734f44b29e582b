"""A checkpoint that is not ours, or a world its student never saw, through the real
CLI: one paragraph naming the file and exit status 2, or a rollout with one warning line; never a
traceback, and no code in a checkpoint file runs."""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import h5py
import numpy as np
import pytest
import torch
from lsm.cli import main
from lsm.config import CONFIG_ROOT
from lsm.society.world import build_world, save_world
from lsm.society.world.population import UNKNOWN_CODE, UNKNOWN_NUMERIC
from lsm.model.checkpoint import load_checkpoint
from lsm.society.scenario import EVENT_FEATURES


class _Call:
    """Unpickles as `fn(*args)`: the classic pickle exploit (a GLOBAL, then REDUCE)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _crafted_checkpoint(path, payload) -> None:
    """A real torch zip (so it reaches the `weights_only` unpickler, not the 'not a zip' check)
    whose data.pkl is `payload`, a dict holding an object that runs code when unpickled."""
    buf = io.BytesIO()
    torch.save({"student_config": {}, "state_dict": {}}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps(payload, protocol=2)
            dst.writestr(item, data)


def _real(ckpt_dir) -> dict:
    return torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)


def _rollout(ckpt, world, out, *extra: str) -> int:
    return main(["rollout", "--ckpt", str(ckpt), "--world", str(world), "--scenario", "vaccine_campaign",
                 "--ticks", "2", "--out", str(out), "--quiet", "true", *extra])


def _small_world(tmp_path, population: str, agents: int = 40, seed: int = 1):
    path = tmp_path / f"{population}.h5"
    save_world(build_world(CONFIG_ROOT / f"population/{population}.yaml", CONFIG_ROOT / "graph/default.yaml", agents, seed), path)
    return path


# --------------------------------------------------------------------------- checkpoints not ours
def _case(name: str, tmp_path, trained):
    """(checkpoint path, words the refusal must contain) for one kind of bad checkpoint."""
    _, ckpt_dir, world = trained
    p = tmp_path / f"{name}.ckpt"
    if name == "random_bytes":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
        return p, "not a readable checkpoint"
    if name == "empty_file":
        p.write_bytes(b"")
        return p, "not a readable checkpoint"
    if name == "hdf5_world_file":
        return world, "not a readable checkpoint"
    if name == "missing_file":
        return tmp_path / "nowhere.ckpt", "no such file"
    if name == "folder_without_last_ckpt":
        p.mkdir()
        return p, "no last.ckpt"
    if name == "pickle_calling_os_system":
        _crafted_checkpoint(p, {"student_config": _Call(os.system, f"touch {tmp_path / 'MARKER_system'}")})
        return p, "refused to load safely"
    if name == "pickle_calling_open":  # a GLOBAL to a file-creating callable, no shell needed
        _crafted_checkpoint(p, {"student_config": _Call(open, str(tmp_path / "MARKER_open"), "w")})
        return p, "refused to load safely"
    real = _real(ckpt_dir)
    if name == "torch_file_without_student_config":
        torch.save({"weights": torch.zeros(3)}, p)
        return p, "not an LSM student checkpoint"
    if name == "student_config_with_unknown_field":
        torch.save({**real, "student_config": {**real["student_config"], "warp_drive": 9}}, p)
        return p, "student_config does not fit"
    if name == "student_config_heads_do_not_divide_dim":
        torch.save({**real, "student_config": {**real["student_config"], "dim": 10, "heads": 3}}, p)
        return p, "student_config does not fit"
    if name == "student_config_not_a_mapping":
        torch.save({**real, "student_config": [1, 2, 3]}, p)
        return p, "not a mapping of StudentConfig fields"
    if name == "student_config_of_a_huge_model":  # refused from the shapes alone, nothing allocated
        torch.save({**real, "student_config": {**real["student_config"], "dim": 2**20, "heads": 4}}, p)
        return p, "do not fit its student_config"
    if name == "weights_do_not_fit":
        torch.save({**real, "state_dict": {k: (v[..., :1] if v.ndim else v) for k, v in real["state_dict"].items()}}, p)
        return p, "do not fit its student_config"
    if name == "weights_missing":
        torch.save({**real, "state_dict": dict(list(real["state_dict"].items())[:3])}, p)
        return p, "do not fit its student_config"
    if name == "student_of_an_earlier_version":  # written before the pathways' switches existed
        old = {k: v for k, v in real["student_config"].items() if k not in ("social_sum", "event_sum", "stance_noise", "channel_effects")}
        torch.save({**real, "student_config": old}, p)
        return p, "earlier version of lsm"
    if name == "vocabulary_does_not_fit":
        torch.save({**real, "identity_vocab": '{"categorical": [], "numeric": []}'}, p)
        return p, "identity vocabulary"
    raise AssertionError(name)


BAD_CHECKPOINTS = ["random_bytes", "empty_file", "hdf5_world_file", "missing_file", "folder_without_last_ckpt",
                   "pickle_calling_os_system", "pickle_calling_open", "torch_file_without_student_config",
                   "student_config_with_unknown_field", "student_config_heads_do_not_divide_dim",
                   "student_config_not_a_mapping", "student_config_of_a_huge_model", "weights_do_not_fit",
                   "weights_missing", "student_of_an_earlier_version", "vocabulary_does_not_fit"]


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_a_checkpoint_that_is_not_ours_is_refused_in_one_paragraph(kind, trained, tmp_path, capsys):
    path, expected = _case(kind, tmp_path, trained)
    out = tmp_path / "r.h5"
    rc = _rollout(path, trained[2], out)
    err = capsys.readouterr().err
    assert rc == 2, f"{kind}: exit {rc}: {err[-800:]}"
    assert "Traceback" not in err, err[-800:]
    assert err.startswith("error: ") and str(path) in err and expected in err, err[-800:]
    assert not out.exists()
    assert not (tmp_path / "MARKER_system").exists() and not (tmp_path / "MARKER_open").exists(), "the crafted pickle ran code"


def test_the_crafted_pickles_do_run_code_without_weights_only(tmp_path):
    """The exploit is real: a plain `pickle.load` of the same payload creates the marker (so the
    refusal above is what kept it from running)."""
    marker = tmp_path / "MARKER_plain"
    pickle.loads(pickle.dumps({"student_config": _Call(open, str(marker), "w")}, protocol=2))
    assert marker.exists()


# --------------------------------------------------------------------------- a student of other event features
def _refused_in_one_paragraph(path, trained, tmp_path, capsys) -> str:
    out = tmp_path / "r.h5"
    rc = _rollout(path, trained[2], out)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err[-800:]
    assert err.startswith(f"error: {path}: this student was trained on the numeric event features ") and err.count("\n") == 1, err
    assert not out.exists()
    return err


def test_a_checkpoint_trained_on_other_event_features_is_refused_in_one_paragraph(trained, tmp_path, capsys):
    """The checkpoint records the numeric event features it was trained on; one the code does not
    build (here a third, `urgency`, and its wider input layer) is refused by name through the CLI."""
    real = _real(trained[1])
    assert real["student_config"]["event_features"] == list(EVENT_FEATURES)
    assert real["hyper_parameters"]["student"]["event_features"] == list(EVENT_FEATURES)
    wider = {k: (torch.cat([v, v[:, :1]], 1) if k.endswith("ev_num.weight") else v) for k, v in real["state_dict"].items()}
    p = tmp_path / "urgency.ckpt"
    torch.save({**real, "student_config": {**real["student_config"], "event_features": [*EVENT_FEATURES, "urgency"]},
                "state_dict": wider}, p)
    err = _refused_in_one_paragraph(p, trained, tmp_path, capsys)
    assert f"{', '.join(EVENT_FEATURES)}, urgency" in err and f"describes events by {', '.join(EVENT_FEATURES)} " in err, err


def test_code_with_a_new_event_feature_refuses_a_checkpoint_trained_before_it(trained, tmp_path, capsys, monkeypatch):
    """The other way round: the code gains a feature (monkeypatched), the checkpoint on disk lacks it."""
    import lsm.model.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "EVENT_FEATURES", (*EVENT_FEATURES, "urgency"))
    err = _refused_in_one_paragraph(trained[1] / "last.ckpt", trained, tmp_path, capsys)
    assert f"trained on the numeric event features {', '.join(EVENT_FEATURES)}, but" in err and "urgency" in err, err


def test_a_checkpoint_from_before_event_features_were_recorded_still_loads(trained, tmp_path):
    """Written before `student_config.event_features` existed (and before the student's fields
    moved under `hparams.student`): read as the two features every such version had."""
    from lsm.model.checkpoint import UNRECORDED_EVENT_FEATURES

    if tuple(EVENT_FEATURES) != UNRECORDED_EVENT_FEATURES:
        pytest.skip("the code reads other event features than those checkpoints had: they are refused (tested above)")
    real = _real(trained[1])
    old_cfg = {k: v for k, v in real["student_config"].items() if k != "event_features"}
    flat = {k: v for k, v in old_cfg.items() if k in ("dim", "heads", "layers", "latent_dim", "memory_dim", "slots")}
    p = tmp_path / "old.ckpt"
    torch.save({**real, "student_config": old_cfg, "hyper_parameters": {**flat, "graph_attention": True, "lr": 0.003}}, p)
    student = load_checkpoint(p)
    assert student.config.event_features == list(UNRECORDED_EVENT_FEATURES)
    assert torch.equal(student.model.ev_num.weight, real["state_dict"]["model.ev_num.weight"])


def _resume(ckpt, tmp_path) -> int:
    corpus = CONFIG_ROOT.parent / "data_gen/corpus/n20"
    return main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"), "--trainer.max_epochs", "2",
                 "--trainer.default_root_dir", str(tmp_path / "resumed"), "--ckpt_path", str(ckpt),
                 "--data.train_files", f"[{corpus / 'vaccine_campaign_s0.h5'}]",
                 "--data.val_files", f"[{corpus / 'vaccine_campaign_s1.h5'}]"])


def test_resuming_training_from_a_checkpoint_of_flat_hyperparameters(trained, tmp_path):
    """`lsm train fit --ckpt_path` re-reads the checkpoint's hyperparameters: those written before
    the student's fields moved under `model.student` (flat `dim`, `graph_attention`) still resume."""
    from lsm.train.module import upgrade_hparams

    real = _real(trained[1])
    h = real["hyper_parameters"]
    flat = {**{k: v for k, v in h.items() if k != "student"}, "graph_attention": h["student"]["graph"],
            **{k: v for k, v in h["student"].items() if k not in ("graph", "event_features", "event_vocab_sizes", "text_dim",
                                                                 "num_edge_types", "rating_levels", "dropout")}}
    assert upgrade_hparams(flat)["student"]["graph"] == h["student"]["graph"]
    p = tmp_path / "flat.ckpt"
    torch.save({**real, "hyper_parameters": flat}, p)
    assert _resume(p, tmp_path) == 0
    assert load_checkpoint(tmp_path / "resumed/checkpoints/last.ckpt").config.dim == h["student"]["dim"]


def test_resuming_a_student_of_other_event_features_is_refused_in_one_paragraph(trained, tmp_path, capsys):
    real = _real(trained[1])
    features = [*EVENT_FEATURES, "urgency"]
    p = tmp_path / "urgency.ckpt"
    torch.save({**real, "hyper_parameters": {**real["hyper_parameters"], "student": {
        **real["hyper_parameters"]["student"], "event_features": features}}}, p)
    assert _resume(p, tmp_path) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"error: Invalid checkpoint to resume {p}: 1 problem.") and "urgency" in err, err


# --------------------------------------------------------------------------- a world from another population
def test_identities_of_another_population_are_encoded_by_name_with_unknown_where_it_differs(trained, tmp_path, capsys):
    _, ckpt_dir, _ = trained
    student = load_checkpoint(ckpt_dir)
    generic = build_world(CONFIG_ROOT / "population/generic.yaml", CONFIG_ROOT / "graph/default.yaml", 40, 1).population
    cat, num = student.identity(generic, "generic.h5")  # (N, n_cat), (N, n_num)
    vocab = student.vocab
    assert cat.shape == (40, len(vocab.categorical)) and num.shape == (40, len(vocab.numeric))
    for k, (attr, cats) in enumerate(vocab.categorical):
        if attr not in generic.categorical:  # party_id, vote_1996
            assert (cat[:, k] == UNKNOWN_CODE).all(), attr
            continue
        labels = generic.labels(attr)
        want = np.array([cats.index(x) if x in cats else UNKNOWN_CODE for x in labels])  # by name, unknown if unseen
        assert cat[:, k].tolist() == want.tolist(), attr
    ideology = [a for a, _ in vocab.categorical].index("ideology")
    assert (cat[:, ideology] == UNKNOWN_CODE).any() and (cat[:, ideology] >= 0).any()  # very_liberal: unseen; liberal: seen
    tv = [a for a, _, _ in vocab.numeric].index("tv_news_days")
    assert (num[:, tv] == UNKNOWN_NUMERIC).all()
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "generic.h5 lacks party_id" in err, err
    student.identity(generic, "generic.h5")  # the same mismatch again: no second warning
    assert "warning" not in capsys.readouterr().err


def test_a_world_from_another_population_rolls_out_with_one_warning(trained, tmp_path, capsys):
    """The new user's case: a student trained on the ANES world rolled out on a generic world
    (with a counterfactual, so the student meets the world twice) warns once and decides for everyone."""
    _, ckpt_dir, _ = trained
    generic = _small_world(tmp_path, "generic")
    out = tmp_path / "r.h5"
    rc = _rollout(ckpt_dir, generic, out, "--counterfactual", "vaccine_campaign")
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err[-1500:]
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1, err[-1500:]
    w = warnings[0]
    assert w.startswith(f"warning: {generic} lacks ")
    for missing in ("party_id", "vote_1996", "tv_news_days"):
        assert missing in w
    assert "ideology: very_liberal" in w and "media_diet: social_media" in w and "encoded as unknown" in w
    for path in (out, tmp_path / "r_cf.h5"):
        with h5py.File(path) as f:
            d = f["decision"][()]
            assert d.shape == (2, 40) and (d >= 0).all() and f["valid"][()].all()


def test_a_world_with_nothing_in_common_is_refused(trained, tmp_path, capsys):
    _, ckpt_dir, _ = trained
    pop = tmp_path / "alien.yaml"
    pop.write_text("name: alien\nattributes:\n  shoe_size: {type: categorical, categories: {small: 1, large: 1}}\n")
    graph = tmp_path / "flat.yaml"
    graph.write_text("name: flat\n")
    alien = tmp_path / "alien.h5"
    save_world(build_world(pop, graph, 30, 0), alien)
    out = tmp_path / "r.h5"
    assert _rollout(ckpt_dir, alien, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "warning" not in err, err[-800:]
    assert err.startswith(f"error: {alien} shares no identity attribute") and "shoe_size" in err and "party_id" in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def generic_trace(tmp_path_factory):
    """A planted-teacher trace (no LLM, 8 ticks) of a 40-agent generic-population world."""
    tmp = tmp_path_factory.mktemp("generic_trace")
    world = _small_world(tmp, "generic")
    assert main(["gen", "--world", str(world), "--scenario", "vaccine_campaign", "--teacher", "planted",
                 "--out", str(tmp / "t.h5"), "--quiet", "true"]) == 0
    return tmp / "t.h5"


def test_evaluating_on_a_trace_of_another_population_uses_the_same_rule(trained, generic_trace, capsys):
    """`lsm evaluate` (and `lsm probe --reference`, through the same `load_episode(identity=...)`)
    encodes a held-out trace of another population as the rollout does: unknown, one warning."""
    _, ckpt_dir, _ = trained
    capsys.readouterr()
    rc = main(["evaluate", "--ckpt", str(ckpt_dir), "--held_out", str(generic_trace)])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err[-1500:]
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {generic_trace} lacks party_id"), err[-1500:]


def test_training_files_of_different_populations_are_refused_by_name(trained, generic_trace):
    """Without a checkpoint (training), the vocabulary is the first training file's and a trace
    it does not fit is a `StoreError` naming that trace, not a KeyError."""
    from lsm.society.store import StoreError
    from lsm.train.data import load_episode

    vocab = load_checkpoint(trained[1]).vocab
    with pytest.raises(StoreError, match=f"{generic_trace}: its population does not fit.*party_id"):
        load_episode(generic_trace, vocab)
