"""`lsm train {fit,validate,test}`: LightningCLI over the distillation module and trace data.

    lsm train fit --config configs/train/debug.yaml
    lsm train fit --config configs/train/small.yaml --trainer.strategy ddp --trainer.devices 4

The full resolved config is written next to the logs and into every checkpoint folder, so a
checkpoint folder is self-contained: weights, student config, identity vocabulary (inside the
`.ckpt`) and `config.yaml`.
"""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule


class SaveConfigEverywhere(SaveConfigCallback):
    """Also writes `config.yaml` into each ModelCheckpoint's folder."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                Path(cb.dirpath).mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, str(Path(cb.dirpath) / self.config_filename), overwrite=True, multifile=False)


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
    from lsm.documents import read_document

    for path in config_files(list(args or [])):  # size, encoding, nesting and aliases bounded before jsonargparse reads it
        read_document(path, kind="training config")
    LightningCLI(DistillModule, TraceDataModule, args=args, save_config_callback=SaveConfigEverywhere,
                 save_config_kwargs={"overwrite": True}, parser_kwargs={"default_env": False})


if __name__ == "__main__":  # pragma: no cover
    main()
