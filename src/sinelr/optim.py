"""The optimisers and learning-rate schedules of the paper's two families of tasks.

Coordinate networks trained from scratch (bof, NeRF) use Adam with a per-step exponential
decay; fine-tuning (GLUE, commonsense) uses AdamW with a linear warm-up and a linear decay, as
Hugging Face's ``Trainer``. A task's module holds one of these settings and returns its
``configure(model, total_steps)`` from ``configure_optimizers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sinelr.errors import InputError
from sinelr.layers.config import is_positive_number
from sinelr.layers.sine import SineActivated


def check_rate(lr: object) -> None:
    """One error for every task's ``task.lr``: a bad rate would otherwise surface steps later,
    as a TypeError inside the optimiser or as an ``inf`` that results.json cannot hold."""
    if not is_positive_number(lr):
        raise InputError(f"task.lr must be a finite number above 0, got {lr!r}")


def exponential_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, final_factor: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step decay from ``lr`` to ``lr · final_factor`` over ``total_steps``, then flat.

    NeRF's ``lr · 0.1^(step / decay_steps)`` is this with ``final_factor = 0.1^(total/decay)``.
    """
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: final_factor ** min(step / total, 1.0)
    )


@dataclass(frozen=True)
class ExponentialDecay:
    """Adam on every parameter, the rate decaying per step from ``lr`` to ``lr · final_factor``
    over ``decay_steps`` (None: the whole run), then flat: the coordinate networks' recipe."""

    lr: float
    final_factor: float
    decay_steps: int | None = None

    def __post_init__(self) -> None:
        check_rate(self.lr)

    def configure(self, model: nn.Module, total_steps: int) -> dict[str, Any]:
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        separate_learnt_omega(optimizer, model)
        decay = exponential_decay(optimizer, self.decay_steps or total_steps, self.final_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


@dataclass(frozen=True)
class LinearWarmup:
    """AdamW on the parameters that train, a linear warm-up then a linear decay to 0: the
    fine-tuning recipe of Hugging Face's ``Trainer``.

    The warm-up is the larger of ``warmup_steps`` and ``warmup_ratio`` of the run's steps (GLUE
    recipes give a ratio, DoRA's a step count), never longer than the run. As the ``Trainer``,
    vectors (biases, LayerNorm weights, DoRA's magnitudes) get no weight decay.
    """

    lr: float
    weight_decay: float
    warmup_steps: int = 0
    warmup_ratio: float = 0.0

    def __post_init__(self) -> None:
        check_rate(self.lr)

    def configure(self, model: nn.Module, total_steps: int) -> dict[str, Any]:
        from transformers import get_linear_schedule_with_warmup

        trainable = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        separate_learnt_omega(optimizer, model)
        warmup = max(self.warmup_steps, math.ceil(self.warmup_ratio * total_steps))
        schedule = get_linear_schedule_with_warmup(optimizer, min(warmup, total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def separate_learnt_omega(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Move each learnt log ω (``lowrank.learn_omega=true``) out of whatever group the
    optimiser put it in, into a group of its own at its layer's ``omega_lr`` with no weight
    decay (decay would pull log ω to 0, that is ω to 1; docs/omega.md). Nothing changes in a
    model without learnt ω.

    Done on the built optimiser, so it serves every recipe alike (timm's optimiser factory
    included) and must come before the schedule, which reads each group's rate: the schedule
    then scales ω's rate with the run's warm-up and decay.
    """
    by_lr: dict[float, list[nn.Parameter]] = {}
    for module in model.modules():
        learns = isinstance(module, SineActivated) and module.log_omega is not None
        if learns and module.log_omega.requires_grad:
            by_lr.setdefault(module.omega_lr, []).append(module.log_omega)
    if not by_lr:
        return
    learnt = {id(p) for params in by_lr.values() for p in params}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in learnt]
    optimizer.param_groups = [group for group in optimizer.param_groups if group["params"]]
    for lr, params in by_lr.items():
        optimizer.add_param_group({"params": params, "lr": lr, "weight_decay": 0.0})
