"""`lsm train {fit,validate,test}`: LightningCLI over the distillation module and trace data.

    lsm train fit --config configs/train/debug.yaml
    lsm train fit --config configs/train/small.yaml --trainer.strategy ddp --trainer.devices 4
"""
from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule


def main(args: list[str] | None = None) -> None:
    LightningCLI(DistillModule, TraceDataModule, args=args, save_config_kwargs={"overwrite": True},
                 parser_kwargs={"default_env": False})


if __name__ == "__main__":  # pragma: no cover
    main()
