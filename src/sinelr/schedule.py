"""What a run's optimiser will do, known before training: the task's learning rate and the
steps Lightning will take, counted beside the trainer as the trainer will count them.

``omega=auto`` reads both (docs/omega.md, "What the rule needs, and what it does without"): a
task says what it knows through ``Task.learning_schedule`` (a :class:`LearningSchedule`), the
trainer's settings complete the count, and :func:`auto_request` hands the rule what is known.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.accelerators import CUDAAccelerator

from sinelr.layers.config import AutoOmega

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearningSchedule:
    """What a task knows of its optimiser before training (``Task.learning_schedule``): the
    peak learning rate, optimiser steps per epoch and the epochs it fixes itself (None where
    unknown, or left to ``trainer.max_epochs``)."""

    lr: float
    steps_per_epoch: int | None = None
    epochs: int | None = None


def planned_steps(
    steps_per_epoch: int | None, max_epochs: int | None, max_steps: int | None
) -> int | None:
    """Optimiser steps a Lightning run with these limits takes, or an upper bound; None if
    neither limit can be evaluated (``-1`` or None is no limit, as in Lightning)."""
    limits = []
    if max_steps is not None and max_steps >= 0:
        limits.append(max_steps)
    if max_epochs is not None and max_epochs >= 0 and steps_per_epoch is not None:
        limits.append(max_epochs * steps_per_epoch)
    return min(limits) if limits else None


def batches_per_step(trainer: Mapping[str, Any]) -> int:
    """How many of a task's batches one optimiser step consumes: one per data-parallel process
    (``devices × num_nodes``; ``devices=auto`` or ``-1`` on a GPU trainer is every visible GPU)
    times ``accumulate_grad_batches``. A task counts its batches for one process."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, list | tuple):
        processes = len(devices)
    elif devices in ("auto", -1, "-1"):
        gpu = str(trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
        processes = max(CUDAAccelerator.auto_device_count(), 1) if gpu else 1
    else:
        processes = int(devices)
    return (
        processes
        * int(trainer.get("num_nodes", 1))
        * int(trainer.get("accumulate_grad_batches", 1))
    )


def auto_request(
    schedule: LearningSchedule | None, trainer: Mapping[str, Any], task: str
) -> AutoOmega:
    """``omega=auto`` with the task's learning rate and the run's planned steps, each None
    (and said in the log) where the task cannot tell before training. Under data parallelism
    an epoch takes fewer steps (:func:`batches_per_step`): an adapter's ω grows as ``1/steps``."""
    if schedule is None:
        log.info("omega=auto: task %s does not say its learning rate or step count", task)
        return AutoOmega()
    epochs = schedule.epochs if schedule.epochs is not None else trainer.get("max_epochs")
    per_epoch = schedule.steps_per_epoch
    if per_epoch is not None:
        per_epoch = math.ceil(per_epoch / batches_per_step(trainer))
    steps = planned_steps(per_epoch, epochs, trainer.get("max_steps"))
    if steps is None:
        log.info("omega=auto: task %s cannot count this run's steps before training", task)
    return AutoOmega(lr=schedule.lr, steps=steps)
