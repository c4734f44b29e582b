"""Trace files → training / validation episodes (one episode = one trace file)."""
from __future__ import annotations

import glob
import json
from dataclasses import asdict

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lsm.config import UsageError
from lsm.society import seeds
from lsm.society.loop.neighbors import NeighborRule, recorded_rule
from lsm.society.store import TraceFile
from lsm.society.world.population import IdentityVocab
from lsm.train.data import AgentBatch, Episode, agent_batches, load_episode


def expand_patterns(patterns: list[str]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        hits = sorted(glob.glob(p))
        if not hits:
            raise FileNotFoundError(f"no trace file matches {p!r}")
        out += hits
    return out


def training_rule(paths: list[str]) -> NeighborRule | None:
    """The neighbour rule the training traces ran under (recorded in the checkpoint, so a rollout
    shows agents their neighbours as the teacher did). Traces that disagree are refused: one
    student learns one rule of who hears whom."""
    rules = {}
    for p in paths:
        with TraceFile(p) as tf:
            rules[p] = recorded_rule(tf.f.attrs, p)
    distinct = {json.dumps(asdict(r), sort_keys=True) if r else "none" for r in rules.values()}
    if len(distinct) > 1:
        shown = "; ".join(f"{p}: {asdict(r) if r else 'none recorded'}" for p, r in rules.items())
        raise UsageError(f"the training traces ran under different neighbour rules ({shown}); "
                         "train on traces of one rule (the teacher config's `neighbors:`)")
    return next(iter(rules.values()), None)


class EpisodeStream(IterableDataset):
    """Training batches in a fresh random order each epoch: every episode's agents in random
    batches of at most `max_agents` (`train.data.agent_batches`; None: whole episodes)."""

    def __init__(self, episodes: list[Episode], max_agents: int | None, seed: int):
        self.episodes, self.max_agents, self.seed, self.epoch = episodes, max_agents, seed, 0
        """`epoch` is set by `EpochLoader` in the main process: DataLoader workers iterate copies."""

    def __iter__(self):
        g = seeds.torch_generator(self.seed, seeds.Stream.EPOCH_ORDER, self.epoch)
        items: list[AgentBatch] = []
        for ep in self.episodes:
            items += agent_batches(ep, self.max_agents, g)
        order = torch.randperm(len(items), generator=g).tolist()
        worker = get_worker_info()  # with workers, each yields its share of the one epoch-wide order
        for k in order if worker is None else order[worker.id :: worker.num_workers]:
            yield items[k]


class EpochLoader(DataLoader):
    """A DataLoader that advances its `EpisodeStream`'s epoch in the main process before each pass,
    so every pass draws new subgraphs with or without workers (workers get a copy of the stream)."""

    passes = 0

    def __iter__(self):
        self.dataset.epoch = self.passes  # type: ignore[attr-defined]
        self.passes += 1
        return super().__iter__()


class TraceDataModule(L.LightningDataModule):
    """Teacher traces as training and validation episodes.

    Args:
        train_files: trace files or glob patterns for training.
        val_files: trace files or globs for validation (e.g. the second LLM seed).
        num_workers: DataLoader workers (episodes are loaded once in `setup`).
        max_agents: train on random batches of at most this many of an episode's agents (each
            hearing the teacher's messages of the whole population: exact, not a truncated
            subgraph); None: whole episodes. Smaller batches: more optimiser steps per epoch.
        seed: seed of the episode order and the subgraph samples.
    """

    def __init__(self, train_files: list[str], val_files: list[str] | None = None, num_workers: int = 0,
                 max_agents: int | None = None, seed: int = 0):
        super().__init__()
        self.train_files, self.val_files, self.num_workers = list(train_files), list(val_files or []), num_workers
        self.max_agents, self.seed = max_agents, seed
        self.train_paths = expand_patterns(self.train_files)
        self.val_paths = expand_patterns(self.val_files) if self.val_files else []
        with TraceFile(self.train_paths[0]) as tf:
            pop, _ = tf.world()
            self.vocab = IdentityVocab.of(pop)
            self.channels = int(tf.dims["C"])
        self.neighbor_rule = training_rule(self.train_paths)
        self.categorical_sizes = self.vocab.cardinalities
        self.numeric_dim = len(self.vocab.numeric)
        self.train_episodes: list[Episode] = []
        self.val_episodes: list[Episode] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.train_episodes:
            self.train_episodes = [load_episode(p, self.vocab) for p in self.train_paths]
            self.val_episodes = [load_episode(p, self.vocab) for p in self.val_paths]

    def train_dataloader(self) -> DataLoader:
        stream = EpisodeStream(self.train_episodes, self.max_agents, self.seed)
        return EpochLoader(stream, batch_size=1, collate_fn=list, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_episodes, batch_size=1, shuffle=False, collate_fn=list, num_workers=self.num_workers)
