"""Trace files → training / validation episodes (one episode = one trace file)."""
from __future__ import annotations

import glob

import lightning as L
from torch.utils.data import DataLoader

from lsm.data_gen.population import IdentityVocab
from lsm.data_gen.store import TraceFile
from lsm.train.data import Episode, load_episode


def _expand(patterns: list[str]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        hits = sorted(glob.glob(p))
        if not hits:
            raise FileNotFoundError(f"no trace file matches {p!r}")
        out += hits
    return out


class TraceDataModule(L.LightningDataModule):
    """Args:
        train_files: trace files or glob patterns for training.
        val_files: trace files or globs for validation (e.g. the second LLM seed).
        num_workers: DataLoader workers (episodes are loaded once in `setup`).
    """

    def __init__(self, train_files: list[str], val_files: list[str] | None = None, num_workers: int = 0):
        super().__init__()
        self.train_files, self.val_files, self.num_workers = list(train_files), list(val_files or []), num_workers
        self.train_paths = _expand(self.train_files)
        self.val_paths = _expand(self.val_files) if self.val_files else []
        with TraceFile(self.train_paths[0]) as tf:
            pop, _ = tf.world()
            self.vocab = IdentityVocab.of(pop)
            self.channels = int(tf.dims["C"])
        self.categorical_sizes = self.vocab.cardinalities
        self.numeric_dim = len(self.vocab.numeric)
        self.train_episodes: list[Episode] = []
        self.val_episodes: list[Episode] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.train_episodes:
            self.train_episodes = [load_episode(p, self.vocab) for p in self.train_paths]
            self.val_episodes = [load_episode(p, self.vocab) for p in self.val_paths]

    def _loader(self, episodes: list[Episode], shuffle: bool) -> DataLoader:
        return DataLoader(episodes, batch_size=1, shuffle=shuffle, collate_fn=list, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_episodes, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_episodes, shuffle=False)
