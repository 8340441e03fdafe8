"""Scoring the best validation epoch, as SoRA's GLUE runs do (``load_best_model_at_end``).

Hugging Face's Trainer keeps a checkpoint per evaluation and reloads the best one before the
final evaluation. Only the trained parameters can differ between checkpoints (the rest of the
network is frozen), so a copy of those, taken whenever the validation metric improves, is
restored when training ends; ``Trainer.test`` then scores the best epoch. The copy and its
score are part of the Lightning checkpoint, so a resumed run selects among all its epochs.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor


class KeepBest(L.Callback):
    """Restore the trainable parameters of the epoch with the highest ``monitor`` at fit end."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.params: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(f"{self.monitor} was not logged during validation")
        value = float(value)
        if self.best is None or value > self.best:  # every GLUE metric: higher is better
            self.best, self.best_epoch = value, trainer.current_epoch
            self.params = {
                name: p.detach().to("cpu", copy=True)
                for name, p in pl_module.named_parameters()
                if p.requires_grad
            }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.params is not None:
            # Only the trained parameters: strict=False for the frozen rest, nothing unknown.
            loaded = pl_module.load_state_dict(self.params, strict=False)
            assert not loaded.unexpected_keys, loaded.unexpected_keys

    def metrics(self) -> dict[str, float]:
        """``val/best_epoch`` (0-based) and the best ``monitor`` value, for results.json."""
        if self.best is None or self.best_epoch is None:
            return {}
        return {"val/best_epoch": float(self.best_epoch), f"{self.monitor}_best": self.best}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "params": self.params}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict["best"]
        self.best_epoch = state_dict["best_epoch"]
        self.params = state_dict["params"]
