"""Distillation training on the shipped reference corpus (debug preset: seconds on a CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from lsm.config import CONFIG_ROOT
from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule, load_student

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "data_gen/corpus/n20/vaccine_campaign_s0.h5")
VAL = str(ROOT / "data_gen/corpus/n20/vaccine_campaign_s1.h5")
PRESETS = sorted((CONFIG_ROOT / "train").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_training_preset_parses(preset, monkeypatch):
    monkeypatch.chdir(ROOT)  # presets name the corpus relative to the repository
    cli = LightningCLI(DistillModule, TraceDataModule, args=["--config", str(preset)], run=False)
    assert cli.model.hparams.dim > 0 and cli.datamodule.train_paths
    assert {"debug", "small", "base"} <= {p.stem for p in PRESETS}


def test_overfitting_one_episode_drives_the_loss_down():
    dm = TraceDataModule([TRAIN])
    dm.setup()
    m = DistillModule(dim=32, heads=2, layers=1, bptt=8, teacher_forcing_epochs=0, expression_noise=0.0,
                      categorical_sizes=dm.categorical_sizes, numeric_dim=dm.numeric_dim, channels=dm.channels)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    ep = dm.train_episodes[0]

    def step(loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    first = m.unroll(ep, False)["loss"].item()
    for _ in range(120):
        m.unroll(ep, False, step)
    last = m.unroll(ep, False)["loss"].item()
    assert last < first / 5, (first, last)


def test_lsm_train_fit_debug_writes_a_checkpoint_that_reloads(tmp_path, monkeypatch):
    from lsm.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"),
               "--data.train_files", f"[{TRAIN}]", "--data.val_files", f"[{VAL}]"])
    assert rc == 0
    ckpt = tmp_path / "runs/debug/checkpoints/last.ckpt"
    assert ckpt.is_file() and (tmp_path / "runs/debug/tensorboard").is_dir()
    student, cfg = load_student(ckpt)  # weights_only=True
    full = torch.load(ckpt, map_location="cpu", weights_only=True)
    module = DistillModule(**{k: v for k, v in full["hyper_parameters"].items() if not k.startswith("_")})
    module.load_state_dict(full["state_dict"])
    dm = TraceDataModule([TRAIN])
    dm.setup()
    ep = dm.train_episodes[0]
    state = student.initial_state(ep.n, ep.action_emb.shape[0])
    _, a = student(ep.inputs(0), state)
    _, b = module.model.eval()(ep.inputs(0), state)
    assert torch.equal(a.decision_logits, b.decision_logits)
