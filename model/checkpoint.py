"""A trained student as a rollout, probe or narration needs it: read from a checkpoint alone.

The checkpoint (written by `lsm train`) holds the weights, the `StudentConfig`, the identity
vocabulary (unseen worlds are encoded by category name) and the training files; it is read with
`torch.load(weights_only=True)`, so no code in the file runs.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from lsm.data_gen.world.population import IdentityVocab
from lsm.model.society import SocietyModel, StudentConfig


@dataclasses.dataclass
class Student:
    """A trained student as loaded from a checkpoint."""

    model: SocietyModel
    config: StudentConfig
    vocab: IdentityVocab | None
    train_paths: list[str]
    path: str


def load_checkpoint(path: str | Path) -> Student:
    """Model, config, identity vocabulary and training files of a checkpoint (`weights_only=True`).

    `path` may be a checkpoint file or a folder: `DIR/last.ckpt`, then `DIR/checkpoints/last.ckpt`.
    """
    p = Path(path)
    if p.is_dir():
        hits = [c for c in (p / "last.ckpt", p / "checkpoints" / "last.ckpt") if c.exists()]
        if not hits:
            raise FileNotFoundError(f"no last.ckpt in {p} or {p / 'checkpoints'}")
        p = hits[0]
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    if "student_config" not in ckpt:
        raise ValueError(f"{p} is not an LSM student checkpoint (no student_config)")
    cfg = StudentConfig(**ckpt["student_config"])
    model = SocietyModel(cfg)
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    vocab = IdentityVocab.from_dict(json.loads(ckpt["identity_vocab"])) if "identity_vocab" in ckpt else None
    return Student(model.eval(), cfg, vocab, list(ckpt.get("train_paths", [])), str(p))
