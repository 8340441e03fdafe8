"""Objects the CLI tests inject through Hydra overrides."""

from __future__ import annotations

from lightning.pytorch.loggers.logger import Logger


class BrokenLogger(Logger):
    """A logger whose backend fails on first use, like a wandb server dropping out."""

    @property
    def name(self) -> str:
        return "broken"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        raise ConnectionError("logging backend unreachable")

    def log_metrics(self, metrics, step=None) -> None:
        raise ConnectionError("logging backend unreachable")
