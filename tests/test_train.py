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


def test_sampled_subgraphs_cover_every_agent_once_and_keep_the_seeds_receptive_field():
    from dataclasses import replace

    from lsm.model.society import SocietyModel, StudentConfig
    from lsm.train.sampler import receptive_field, sample_subgraphs, subgraph_episode

    dm = TraceDataModule([TRAIN])
    dm.setup()
    _tag_agents(dm)
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


def _tag_agents(*dms) -> None:
    """Give every agent a unique persona input (templated personas have none: zeros), so that
    `_agent_ids` can tell which episode agent is behind each row of a subgraph item."""
    for dm in dms:
        for ep in dm.train_episodes:
            ep.persona_emb.copy_(torch.randn(ep.persona_emb.shape, generator=torch.Generator().manual_seed(0)))


def _agent_ids(item, ep) -> torch.Tensor:
    """(n,) the episode agent behind each row of a subgraph item (matched by the persona input `_tag_agents` made unique)."""
    match = (item.persona_emb[:, None] == ep.persona_emb[None]).all(-1)  # (n, N)
    assert (match.sum(1) == 1).all()
    return match.float().argmax(1)


def _check_subgraph_epoch(items, ep, max_agents: int) -> list[tuple[int, ...]]:
    """One epoch of 1-hop subgraph items of `ep`, checked against the episode by hand; returns the seed sets."""
    N, T = ep.n, ep.ticks
    in_edges = torch.cat([ei for ei, _ in ep.edges], 1)  # (2, ΣE) sender j -> receiver i, over all ticks
    assert len(items) == -(-N // max_agents)
    covered = torch.zeros(T, N, dtype=torch.long)
    seed_sets = []
    for it in items:
        ids = _agent_ids(it, ep)
        assert bool((ids[1:] > ids[:-1]).all())  # sorted node ids, no repeats
        is_seed = it.targets["valid"].any(0)  # losses on the seeds only
        seeds = ids[is_seed]
        assert 1 <= len(seeds) <= max_agents and f"[{len(seeds)} seeds/{it.n} agents]" in it.name
        # the kept nodes are exactly the seeds and their senders (in-neighbours, one hop, any tick)
        senders = in_edges[0][torch.isin(in_edges[1], seeds)]
        assert ids.tolist() == sorted(set(seeds.tolist()) | set(senders.tolist()))
        for t in range(T):  # every edge among the kept nodes, relabelled, and no other
            ei, et = ep.edges[t]
            keep = torch.isin(ei, ids).all(0)
            want = sorted(zip(ei[0, keep].tolist(), ei[1, keep].tolist(), et[keep].tolist()))
            sub_ei, sub_et = it.edges[t]
            assert sorted(zip(ids[sub_ei[0]].tolist(), ids[sub_ei[1]].tolist(), sub_et.tolist())) == want
        for k, v in ep.targets.items():  # the kept agents' own targets; valid only on the seeds
            want = v[:, ids] & is_seed[None] if k == "valid" else v[:, ids]
            assert torch.equal(it.targets[k], want), k
        covered[:, ids] += it.targets["valid"].long()
        seed_sets.append(tuple(seeds.tolist()))
    assert sorted(sum(seed_sets, ())) == list(range(N))  # the seed sets partition the agents
    assert torch.equal(covered, ep.targets["valid"].long())  # each valid agent-tick trained exactly once
    return sorted(seed_sets)


def test_datamodule_trains_on_subgraphs_of_large_episodes():
    dm = TraceDataModule([TRAIN], max_agents=8, hops=1, seed=3)
    dm.setup()
    _tag_agents(dm)
    ep = dm.train_episodes[0]
    assert ep.n == 20 and bool(ep.targets["valid"].any(0).all())  # every agent valid at some tick: its seed rows show
    loader = dm.train_dataloader()  # Lightning iterates the same loader every epoch
    epochs = [_check_subgraph_epoch([b[0] for b in loader], ep, 8) for _ in range(2)]
    assert epochs[0] != epochs[1]  # resampled each epoch
    # with DataLoader workers: each epoch still yields every subgraph once, resampled, the same as without
    workers = TraceDataModule([TRAIN], max_agents=8, hops=1, seed=3, num_workers=2)
    workers.setup()
    _tag_agents(workers)
    wl = workers.train_dataloader()
    assert [_check_subgraph_epoch([b[0] for b in wl], ep, 8) for _ in range(2)] == epochs
    # two seeds a subgraph: neighbourhoods small enough that senders and receivers differ (8 seeds reach most agents)
    small = TraceDataModule([TRAIN], max_agents=2, hops=1, seed=3)
    small.setup()
    _tag_agents(small)
    items = [b[0] for b in small.train_dataloader()]
    _check_subgraph_epoch(items, ep, 2)
    assert min(it.n for it in items) < ep.n  # a real subgraph, not the whole episode under another name
    whole = TraceDataModule([TRAIN])
    whole.setup()
    assert [b[0].n for b in whole.train_dataloader()] == [20]

    # a student trained on those subgraph batches learns: its loss on the whole episode falls, its weights move
    import lightning as L

    m = DistillModule(StudentConfig(dim=16, heads=2, layers=1, latent_dim=4, memory_dim=8, slots=2, slot_dim=8, expression_dim=8,
                                    expression_noise=0.0, agent_noise=0, categorical_sizes=dm.categorical_sizes,
                                    numeric_dim=dm.numeric_dim, channels=dm.channels),
                      bptt=8, teacher_forcing_epochs=0, lr=1e-2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    loss0 = m.unroll(ep, False)["loss"].item()
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(m, datamodule=dm)
    assert trainer.global_step == 4 * 3  # one optimiser step per subgraph item (bptt covers the 8 ticks)
    loss1 = m.unroll(ep, False)["loss"].item()
    assert loss1 < loss0 / 2, (loss0, loss1)
    moved = [k for k, v in m.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    graph = [k for k in before if ".graph." in k]
    assert graph and set(graph) <= set(moved), sorted(set(graph) - set(moved))  # the graph layers train on the subgraphs too
