"""Distillation training on the shipped reference corpus (debug preset: seconds on a CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from lsm.config import CONFIG_ROOT
from lsm.society.store import StoreError
from lsm.train.datamodule import TraceDataModule
from lsm.model.society import StudentConfig
from lsm.train.module import DistillModule, load_student

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "data_gen/corpus/n20/vaccine_campaign_s0.h5")
VAL = str(ROOT / "data_gen/corpus/n20/vaccine_campaign_s1.h5")
PRESETS = sorted((CONFIG_ROOT / "train").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_training_preset_parses(preset, monkeypatch):
    monkeypatch.chdir(ROOT)  # presets name the corpus relative to the repository
    cli = LightningCLI(DistillModule, TraceDataModule, args=["--config", str(preset)], run=False)
    assert cli.model.hparams.student["dim"] > 0 and cli.datamodule.train_paths
    assert {"debug", "small", "base"} <= {p.stem for p in PRESETS}


def test_overfitting_one_episode_drives_the_loss_down():
    dm = TraceDataModule([TRAIN])
    dm.setup()
    m = DistillModule(StudentConfig(dim=32, heads=2, layers=1, expression_noise=0.0, categorical_sizes=dm.categorical_sizes,
                                    numeric_dim=dm.numeric_dim, channels=dm.channels), bptt=8, teacher_forcing_epochs=0)
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
    _tag_agents(dm)
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
    with pytest.raises(StoreError, match="no last.ckpt"):
        load_checkpoint(tmp_path)


def _tag_agents(*dms) -> None:
    """Give every agent a distinct persona input (templated personas have none: zeros)."""
    for dm in dms:
        for ep in dm.train_episodes:
            ep.persona_emb.copy_(torch.randn(ep.persona_emb.shape, generator=torch.Generator().manual_seed(0)))


def _student(dm, **kw) -> StudentConfig:
    base = dict(dim=16, heads=2, layers=1, latent_dim=4, memory_dim=8, slots=2, slot_dim=8, expression_dim=8, expression_noise=0.0,
                agent_noise=0, categorical_sizes=dm.categorical_sizes, numeric_dim=dm.numeric_dim, channels=dm.channels)
    return StudentConfig(**{**base, **kw})


def test_one_tick_function_gives_the_same_answer_to_training_batches_replay_and_rollout_chunks():
    """`model.tick.advance` along a trace: a batch of agents hearing the teacher's broadcasts of the
    whole population gets exactly the whole episode's outputs for those agents at every tick; the
    replay (`train.replay`) gives the same distributions; and a rollout's chunked pass equals one pass."""
    from lsm.model.society import Draws, SocietyModel
    from lsm.model.tick import advance, trace_senders
    from lsm.train.replay import replay, trace_inputs

    dm = TraceDataModule([TRAIN])
    dm.setup()
    ep = dm.train_episodes[0]
    torch.manual_seed(0)
    model = SocietyModel(_student(dm, layers=2)).eval()
    rows = torch.tensor([1, 4, 5, 11, 17])
    whole = model.initial_state(ep.n, ep.action_emb.shape[0])
    part = model.initial_state(len(rows), ep.action_emb.shape[0])
    probs = []
    with torch.no_grad():
        for t in range(ep.ticks):
            inp = trace_inputs(model, ep, t)
            heard = trace_senders(model, ep.targets, t)
            if t == 3:  # a batch that does not hear the population is not the same: the check can fail
                cut = advance(model, part, inp.rows(rows), senders=torch.zeros_like(heard), receivers=rows)[1]
            whole, out_w = advance(model, whole, inp, senders=heard)
            part, out_p = advance(model, part, inp.rows(rows), senders=heard, receivers=rows)
            if t == 3:
                assert not torch.allclose(cut.decision_logits, out_p.decision_logits)
            torch.testing.assert_close(out_p.decision_logits, out_w.decision_logits[rows])
            torch.testing.assert_close(out_p.channels, out_w.channels[rows])
            probs.append(torch.softmax(out_w.decision_logits, -1))
            # the recorded decision is the teacher's, where valid
            v = ep.targets["valid"][t]
            assert torch.equal(whole.drawn.argmax(1)[v], ep.targets["decision"][t][v].long())
    rep = replay(model, ep, samples=1)["factual"]["probs"][0]  # (T, N, A); agent_noise 0: no latent draw
    torch.testing.assert_close(rep, torch.stack(probs))
    # a rollout's inputs, in chunks of 7 receivers and in one pass, draw the same decisions
    inp = trace_inputs(model, ep, 2)
    inp = inp.__class__(**{**inp.__dict__, "draws": Draws(uniform=torch.rand(ep.n, generator=torch.Generator().manual_seed(0)),
                                                           stance_eps=torch.randn(ep.n))})
    one_state, one = advance(model, whole, inp)
    with torch.inference_mode():
        chunk_state, chunked = advance(model, whole, inp, chunk=7)
    torch.testing.assert_close(chunked.decision_logits, one.decision_logits)
    assert torch.equal(chunked.drawn, one.drawn) and torch.equal(chunk_state.drawn, one_state.drawn)
    torch.testing.assert_close(chunk_state.stance, one_state.stance)


def test_datamodule_trains_on_agent_batches_of_large_episodes():
    dm = TraceDataModule([TRAIN], max_agents=8, seed=3)
    dm.setup()
    ep = dm.train_episodes[0]
    assert ep.n == 20

    def epoch(loader) -> list[tuple[int, ...]]:
        items = [b[0] for b in loader]
        assert len(items) == 3 and all(it.episode is ep or it.episode.name == ep.name for it in items)
        sets = [tuple(it.rows.tolist()) for it in items]
        assert all(1 <= len(r) <= 8 and list(r) == sorted(r) for r in sets)
        assert sorted(sum(sets, ())) == list(range(20))  # the batches partition the agents
        return sorted(sets)

    loader = dm.train_dataloader()  # Lightning iterates the same loader every epoch
    epochs = [epoch(loader) for _ in range(2)]
    assert epochs[0] != epochs[1]  # redrawn each epoch
    workers = TraceDataModule([TRAIN], max_agents=8, seed=3, num_workers=2)
    workers.setup()
    wl = workers.train_dataloader()
    assert [epoch(wl) for _ in range(2)] == epochs  # with DataLoader workers: the same batches
    whole = TraceDataModule([TRAIN])
    whole.setup()
    assert [b[0].rows for b in whole.train_dataloader()] == [None]

    # a student trained on those batches learns: its loss on the whole episode falls, its weights move
    import lightning as L

    m = DistillModule(_student(dm), bptt=8, teacher_forcing_epochs=0, lr=1e-2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    loss0 = m.unroll(ep, False)["loss"].item()
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(m, datamodule=dm)
    assert trainer.global_step == 4 * 3  # one optimiser step per batch (bptt covers the 8 ticks)
    loss1 = m.unroll(ep, False)["loss"].item()
    assert loss1 < loss0 / 2, (loss0, loss1)
    moved = [k for k, v in m.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    graph = [k for k in before if ".graph." in k or "social_sum" in k]
    assert graph and set(graph) <= set(moved), sorted(set(graph) - set(moved))  # the graph layers train on the batches too


def test_a_step_budget_trains_that_many_steps_and_stops_early_on_a_held_out_episode(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    dm = TraceDataModule([TRAIN], [VAL], max_agents=10, seed=0)
    m = DistillModule(_student(dm), bptt=4, teacher_forcing_epochs=0, lr=3e-3)
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(m, datamodule=dm)
    assert trainer.global_step == 10  # 4 steps an epoch (2 batches x 2 BPTT windows): stopped mid-epoch, at the budget
    assert m.progress() == 1.0
    # early stopping: a patience of 0 on a validation loss that cannot improve when the learning rate is 0
    frozen = DistillModule(_student(dm), bptt=4, teacher_forcing_epochs=0, lr=0.0)
    stop = EarlyStopping(monitor="val_loss", patience=0, min_delta=1e-9)
    t2 = L.Trainer(max_steps=1000, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, callbacks=[stop])
    t2.fit(frozen, datamodule=dm)
    assert 0 < t2.global_step < 1000 and stop.stopped_epoch > 0
