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


def test_checkpoint_folder_is_self_contained(tmp_path, monkeypatch):
    from lsm.cli import main
    from lsm.model.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    assert main(["train", "fit", "--config", str(CONFIG_ROOT / "train/debug.yaml"), "--trainer.max_epochs", "1",
                 "--data.train_files", f"[{TRAIN}]", "--data.val_files", f"[{VAL}]"]) == 0
    folder = tmp_path / "runs/debug/checkpoints"
    assert "model:" in (folder / "config.yaml").read_text()
    s = load_checkpoint(folder)
    assert s.train_paths == [TRAIN] and s.vocab is not None and s.vocab.cardinalities == s.config.categorical_sizes
    with pytest.raises(FileNotFoundError, match="no last.ckpt"):
        load_checkpoint(tmp_path)


def test_sampled_subgraphs_cover_every_agent_once_and_keep_the_seeds_receptive_field():
    from dataclasses import replace

    from lsm.model.society import SocietyModel, StudentConfig
    from lsm.train.sampler import receptive_field, sample_subgraphs, subgraph_episode

    dm = TraceDataModule([TRAIN])
    dm.setup()
    ep = dm.train_episodes[0]
    subs = sample_subgraphs(ep, 6, hops=2, generator=torch.Generator().manual_seed(0))
    assert len(subs) == -(-ep.n // 6)  # every agent is a seed exactly once per epoch
    assert sum(int(s.targets["valid"].any(0).sum()) for s in subs) == int(ep.targets["valid"].any(0).sum())
    # one tick, given the states, a 1-hop subgraph: the seeds' outputs equal the full graph's
    one = replace(ep, edges=ep.edges[1:2], events=ep.events[1:2], targets={k: v[1:2] for k, v in ep.targets.items()})
    torch.manual_seed(0)
    model = SocietyModel(StudentConfig(dim=16, heads=2, layers=2, categorical_sizes=dm.categorical_sizes,
                                       numeric_dim=dm.numeric_dim)).eval()
    A = ep.action_emb.shape[0]
    state = model.initial_state(ep.n, A)
    state.expression = torch.randn(state.expression.shape, generator=torch.Generator().manual_seed(2))  # distinct messages
    _, full = model(one.inputs(0), state)
    seeds = torch.randperm(ep.n, generator=torch.Generator().manual_seed(1))[:3].sort().values
    nodes = receptive_field(one.edges, seeds, ep.n, hops=1)
    assert len(seeds) < len(nodes) < ep.n
    sub = subgraph_episode(one, nodes, seeds)
    _, part = model(sub.inputs(0), state.index(nodes))
    torch.testing.assert_close(part.decision_logits[torch.searchsorted(nodes, seeds)], full.decision_logits[seeds])
    assert int(sub.targets["valid"].sum()) <= len(seeds)
    # without the neighbours (0 hops) the seeds' outputs change: the check can fail
    _, cut = model(subgraph_episode(one, seeds, seeds).inputs(0), state.index(seeds))
    assert not torch.allclose(cut.decision_logits, full.decision_logits[seeds])


def test_datamodule_trains_on_subgraphs_of_large_episodes():
    dm = TraceDataModule([TRAIN], max_agents=8, hops=1, seed=3)
    dm.setup()
    full_valid = int(dm.train_episodes[0].targets["valid"].sum())
    loader = dm.train_dataloader()  # Lightning iterates the same loader every epoch
    epochs = [[b[0] for b in loader] for _ in range(2)]
    for items in epochs:
        assert len(items) == 3 and all(it.n < 20 or it.n == 20 for it in items)
        assert sum(int(it.targets["valid"].sum()) for it in items) == full_valid  # each agent-tick trained once
    assert [it.name for it in epochs[0]] != [it.name for it in epochs[1]] or any(
        not torch.equal(a.persona_emb, b.persona_emb) for a, b in zip(*epochs))  # resampled each epoch
    whole = TraceDataModule([TRAIN])
    whole.setup()
    assert [b[0].n for b in whole.train_dataloader()] == [20]
