"""A trained student as a rollout, probe or narration needs it: read from a checkpoint alone.

The checkpoint (written by `lsm train`) holds the weights, the `StudentConfig`, the identity
vocabulary (unseen worlds are encoded by category name) and the training files; it is read with
`torch.load(weights_only=True)`, so no code in the file runs, and its config's parameter shapes
are compared with the stored weights on the meta device before a network is built. Anything
that is not such a checkpoint is refused with one `StoreError` naming the file, and so is a
student trained on other numeric event features than the code's `EVENT_FEATURES` (recorded in
its `student_config.event_features`; a checkpoint from before they were recorded read
`UNRECORDED_EVENT_FEATURES`).
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import warnings
import zipfile
from pathlib import Path

import torch

from lsm.config import ConfigError
from lsm.model.society import SocietyModel, StudentConfig
from lsm.society.loop.neighbors import NeighborRule
from lsm.society.scenario import EVENT_FEATURES
from lsm.society.store import StoreError
from lsm.society.world.population import (
    IdentityMismatch,
    IdentityVocab,
    Population,
    encode_identity,
    identity_mismatch,
)


@dataclasses.dataclass
class Student:
    """A trained student as loaded from a checkpoint."""

    model: SocietyModel
    config: StudentConfig
    vocab: IdentityVocab | None
    train_paths: list[str]
    path: str
    neighbor_rule: NeighborRule | None = None
    """Who heard whom in the training traces (None: a checkpoint written before it was recorded)."""
    _warned: set[tuple] = dataclasses.field(default_factory=set, init=False, repr=False, compare=False)

    def check_world(self, pop: Population, source: str = "this world") -> IdentityMismatch | None:
        """Compare `pop` with the training vocabulary (`identity_mismatch`, the one rule).

        Refused (`StoreError`) when they share no attribute at all; otherwise the attributes `pop`
        lacks and the categories the checkpoint never saw are encoded as unknown (`identity`), and
        one warning line goes to stderr the first time this student meets that mismatch (a
        counterfactual or a sweep on the same world does not repeat it). `source` names the
        world (its file) in both messages. None for a checkpoint without a vocabulary."""
        if self.vocab is None:
            return None
        gap = identity_mismatch(pop, self.vocab)
        if gap.disjoint:
            raise StoreError(f"{source} shares no identity attribute with the student {self.path}: it was trained on "
                             f"{', '.join(gap.attributes)}, and this world has {', '.join(pop.attributes) or 'none'}. "
                             "Build the world from the checkpoint's population config (`lsm info` on one of its "
                             "training traces names it)")
        if gap and gap.key not in self._warned:
            self._warned.add(gap.key)
            print(f"warning: {gap.describe(source)}", file=sys.stderr, flush=True)
        return gap

    def identity(self, pop: Population, source: str = "this world") -> tuple[torch.Tensor, torch.Tensor]:
        """`pop`'s identity in this checkpoint's vocabulary, by attribute and category name:
        codes (N, n_cat) long and numeric (N, n_num) in [0, 1]. A missing attribute or an unseen
        category gets `UNKNOWN_CODE` (the student's embedding adds nothing for it, as the model
        masks it) and a missing numeric attribute `UNKNOWN_NUMERIC`, the middle of its training
        range; `check_world` refuses a world with nothing in common and warns once otherwise."""
        self.check_world(pop, source)
        return encode_identity(pop, self.vocab, unknown=True)


UNRECORDED_EVENT_FEATURES = ("valence", "credibility")
"""What a checkpoint written before `StudentConfig.event_features` was recorded was trained on
(the two numeric event features of every version of lsm until then)."""


def check_event_features(have: object, path: str | Path) -> None:
    """Refuse (`StoreError`, one paragraph) a checkpoint whose student reads other numeric event
    features than this code stores and builds (`EVENT_FEATURES`): its input layer would not fit."""
    want = list(EVENT_FEATURES)
    if not isinstance(have, list) or not all(isinstance(k, str) for k in have):
        raise StoreError(f"{path}: its student_config.event_features is {type(have).__name__} {str(have)[:100]}, "
                         "not a list of event feature names")
    if have != want:
        raise StoreError(f"{path}: this student was trained on the numeric event features {', '.join(have) or 'none'}, "
                         f"but this version of lsm describes events by {', '.join(want)} (EVENT_FEATURES in "
                         "society/scenario.py), so its event input does not fit what rollouts and training now build. "
                         "Retrain it on traces written by this version (lsm gen, then lsm train), or use it with the "
                         "version of lsm it was trained with")


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
    raw_cfg, raw_sd = ckpt["student_config"], ckpt["state_dict"]
    if not isinstance(raw_cfg, dict) or not all(isinstance(k, str) for k in raw_cfg):
        raise StoreError(f"{p}: its student_config is a {type(raw_cfg).__name__}, not a mapping of StudentConfig fields")
    if not isinstance(raw_sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw_sd.items()):
        raise StoreError(f"{p}: its state_dict is not a mapping of parameter names to tensors")
    check_event_features(raw_cfg.get("event_features", list(UNRECORDED_EVENT_FEATURES)), p)
    weights = {k.removeprefix("model."): v for k, v in raw_sd.items()}
    if "social_sum" not in raw_cfg:  # its config predates the pathways' switches
        raise StoreError(f"{p}: a student of an earlier version of lsm (its stance and message are not read given the decision "
                         "drawn, and it has none of the additive pathways): this version cannot run it; train a new one with lsm train")
    layers = raw_cfg.get("layers")
    if isinstance(layers, int) and layers > len(weights):  # each layer holds weights: refused before building a million
        raise StoreError(f"{p}: its weights do not fit its student_config (layers={layers}, but {len(weights)} tensors stored)")
    try:
        cfg = StudentConfig(**raw_cfg)
        with warnings.catch_warnings(), torch.device("meta"):  # shapes only, nothing allocated: a huge `dim` costs nothing
            warnings.simplefilter("ignore")
            expected = {k: tuple(v.shape) for k, v in SocietyModel(cfg).state_dict().items()}
    except (TypeError, ValueError, AssertionError, RuntimeError, OverflowError) as err:
        raise StoreError(f"{p}: its student_config does not fit this version of lsm "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [f"{k} is {tuple(v.shape)}, the config makes it {expected[k]}" for k, v in weights.items()
                if k in expected and tuple(v.shape) != expected[k]]
    problems = [f"{len(ks)} {what} ({sep.join(ks[:3])}{sep + '...' if len(ks) > 3 else ''})"
                for ks, what, sep in ((missing, "missing", ", "), (unexpected, "not in the model", ", "),
                                      (reshaped, "of another shape", "; ")) if ks]
    if problems:
        raise StoreError(f"{p}: its weights do not fit its student_config (keys or shapes differ: {'; '.join(problems)})")
    model = SocietyModel(cfg)  # as large as the weights already read: the shapes match
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise StoreError(f"{p}: its weights do not fit its student_config ({' '.join(str(err).split())[:300]})") from None
    try:
        vocab = IdentityVocab.from_dict(json.loads(ckpt["identity_vocab"])) if "identity_vocab" in ckpt else None
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise StoreError(f"{p}: its identity vocabulary is malformed ({type(err).__name__}: {err})") from None
    if vocab is not None:
        if vocab.cardinalities != list(cfg.categorical_sizes) or len(vocab.numeric) != cfg.numeric_dim:
            raise StoreError(f"{p}: its identity vocabulary ({vocab.cardinalities} categories, {len(vocab.numeric)} numeric) "
                             f"does not fit its student_config ({list(cfg.categorical_sizes)}, {cfg.numeric_dim})")
        flat = [(a, lo, hi) for a, lo, hi in vocab.numeric if not lo < hi]  # also NaN
        if flat:
            raise StoreError(f"{p}: its identity vocabulary has numeric ranges that are empty: {flat[:3]}")
    try:
        rule = NeighborRule.from_json(str(ckpt["neighbor_rule"]), f"{p}:neighbor_rule") if "neighbor_rule" in ckpt else None
    except ConfigError as err:
        raise StoreError(str(err)) from None
    return Student(model.eval(), cfg, vocab, list(ckpt.get("train_paths", [])), str(p), rule)
