"""A trained student as a rollout, probe or narration needs it: read from a checkpoint alone.

The checkpoint (written by `lsm train`) holds the weights, the `StudentConfig`, the identity
vocabulary (unseen worlds are encoded by category name) and the training files; it is read with
`torch.load(weights_only=True)`, so no code in the file runs.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile
from pathlib import Path

import torch
from lsm.data_gen.store import StoreError
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
            raise StoreError(f"{p}: no last.ckpt in it or in {p / 'checkpoints'} (give a checkpoint file or a run folder)")
        p = hits[0]
    if not p.is_file():
        raise StoreError(f"checkpoint {p}: no such file")
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; anything else is not one of ours
        raise StoreError(f"{p}: not a readable checkpoint (not a torch zip archive: empty, truncated or another kind of file)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln), lines[0] if lines else type(err).__name__)
        raise StoreError(f"{p}: refused to load safely (weights_only=True; no code in it ran): it holds objects that are not "
                         f"plain tensors and containers ({first[:200]}). It is not an LSM student checkpoint "
                         "(`lsm train` writes them) or was written by untrusted code") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise StoreError(f"{p}: not a readable checkpoint (not a torch file, or truncated): "
                         f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__}") from None
    if not isinstance(ckpt, dict) or "student_config" not in ckpt or "state_dict" not in ckpt:
        raise StoreError(f"{p}: a torch file but not an LSM student checkpoint (no student_config / state_dict)")
    try:
        cfg = StudentConfig(**ckpt["student_config"])
        model = SocietyModel(cfg)
    except (TypeError, ValueError) as err:
        raise StoreError(f"{p}: its student_config does not fit this version of lsm ({err})") from None
    try:
        model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    except (RuntimeError, AttributeError) as err:
        detail = " ".join(str(err).split())[:300]
        raise StoreError(f"{p}: its weights do not fit its student_config (keys or shapes differ: {detail})") from None
    try:
        vocab = IdentityVocab.from_dict(json.loads(ckpt["identity_vocab"])) if "identity_vocab" in ckpt else None
    except (TypeError, ValueError, KeyError) as err:
        raise StoreError(f"{p}: its identity vocabulary is malformed ({err})") from None
    return Student(model.eval(), cfg, vocab, list(ckpt.get("train_paths", [])), str(p))
