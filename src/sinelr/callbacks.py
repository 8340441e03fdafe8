"""Training guards: a run that diverges stops at once and says why."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from sinelr.errors import InputError


class NonFiniteError(InputError, FloatingPointError):
    """The loss, a gradient or the run's metric became NaN or infinite: the settings' doing
    (ω, gain, learning rate), reported as one line."""


class NonFiniteGuard(L.Callback):
    """Stops training at the first NaN/inf loss or gradient, naming the likely causes.

    A sine layer's gradient carries a factor ``ω/g``: a high ω with a small gain, or a learning
    rate tuned for plain layers, is the usual culprit. ``hint`` describes this run's settings.
    """

    def __init__(self, hint: str) -> None:
        self.hint = hint

    def _fail(self, what: str, trainer: L.Trainer) -> None:
        raise NonFiniteError(
            f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch}). Likely causes: "
            f"ω too high for the gain, or the learning rate too high ({self.hint}). Try a lower "
            "omega, a larger lowrank.gain, or a lower learning rate."
        )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            self._fail(f"the loss is {float(loss)}", trainer)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads and not torch.stack(torch._foreach_norm(grads)).isfinite().all():
            bad = next(
                n
                for n, p in pl_module.named_parameters()
                if p.grad is not None and not p.grad.isfinite().all()
            )
            self._fail(f"the gradient of {bad} is not finite", trainer)
