"""`lsm train {fit,validate,test}`: LightningCLI over the distillation module and trace data.

    lsm train fit --config configs/train/debug.yaml
    lsm train fit --config configs/train/small.yaml --trainer.strategy ddp --trainer.devices 4

The full resolved config is written next to the logs and into every checkpoint folder, so a
checkpoint folder is self-contained: weights, student config, identity vocabulary (inside the
`.ckpt`) and `config.yaml`.

Every output follows `--trainer.default_root_dir` (ROOT): a ModelCheckpoint without a `dirpath`
(the presets') writes to `ROOT/checkpoints`, and without a logger (the presets') TensorBoard logs
go to `ROOT/tensorboard`. The presets' ModelCheckpoint has no version counter, so a second fit
into the same folder overwrites `last.ckpt` instead of writing `last-v1.ckpt` beside it.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lsm.documents import read_document
from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule, refuse_flat_student_keys, resumable_hparams


class SaveConfigEverywhere(SaveConfigCallback):
    """Also writes `config.yaml` into each ModelCheckpoint's folder."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                Path(cb.dirpath).mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, str(Path(cb.dirpath) / self.config_filename), overwrite=True, multifile=False)


def _is_class(spec, cls: type) -> bool:
    """Whether a parsed `class_path`/`init_args` entry names `cls` or a subclass of it."""
    path = getattr(spec, "class_path", None)
    if not isinstance(path, str) or "." not in path:
        return False
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type) and issubclass(found, cls)


class TrainCLI(LightningCLI):
    """LightningCLI whose checkpoints and logs follow `trainer.default_root_dir` (see the module doc)."""

    def _parse_ckpt_path(self) -> None:
        """Lightning re-parses a `--ckpt_path` checkpoint's hyperparameters as `model:` arguments;
        those of a checkpoint written before the student's fields moved under `model.student`
        are upgraded first, so such a checkpoint still resumes; one of other event features is
        refused in one paragraph (`resumable_hparams`)."""
        parse = self.parser.parse_object
        path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None

        def upgraded(cfg, *args, **kwargs):
            for sub in cfg.values() if isinstance(cfg, dict) else ():
                if isinstance(sub, dict) and isinstance(sub.get("model"), dict):
                    sub["model"] = resumable_hparams(sub["model"], path)
            return parse(cfg, *args, **kwargs)

        self.parser.parse_object = upgraded  # type: ignore[method-assign]
        try:
            super()._parse_ckpt_path()
        finally:
            del self.parser.parse_object

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is None:
            return
        root = str(trainer.get("default_root_dir") or os.getcwd())
        if trainer.get("logger") in (None, True):  # Lightning's default logger, named as the presets' logs
            trainer.logger = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                       init_args=Namespace(save_dir=root, name="tensorboard"))
        for cb in trainer.get("callbacks") or []:
            if _is_class(cb, ModelCheckpoint) and cb.init_args.get("dirpath") is None:
                cb.init_args.dirpath = str(Path(root) / "checkpoints")


def config_files(args: list[str]) -> list[str]:
    """The files given to `--config` (`--config F` or `--config=F`)."""
    out = []
    for i, a in enumerate(args):
        if a == "--config" and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith("--config="):
            out.append(a.split("=", 1)[1])
    return out


def main(args: list[str] | None = None) -> None:

    for path in config_files(list(args or [])):  # size, encoding, nesting and aliases bounded before jsonargparse reads it
        refuse_flat_student_keys(read_document(path, kind="training config"), path)
    refuse_flat_student_keys(args=list(args or []))  # `model: {dim: 64}` / `--model.dim`: now under model.student
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # the help of StudentConfig's fields
    argv = sys.argv
    if args is not None:  # the arguments are `args`; LightningCLI warns when sys.argv holds others too
        sys.argv = sys.argv[:1]
    try:
        TrainCLI(DistillModule, TraceDataModule, args=args, save_config_callback=SaveConfigEverywhere,
                 save_config_kwargs={"overwrite": True}, parser_kwargs={"default_env": False})
    finally:
        sys.argv = argv


if __name__ == "__main__":  # pragma: no cover
    main()
