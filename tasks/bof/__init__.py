"""Task ``bof``: binary occupancy fields (paper Table 13).

A mesh becomes a solid occupancy grid at ``R³``; a Gaussian-activated MLP learns it; the score
is the IoU of the thresholded prediction over the whole grid, and the predicted surface is
saved as ``surface.ply`` beside results.json.

The task is to fit one shape, so the fit is the score: the grid it validates on is the grid it
is scored on, and the task does not claim to validate apart (``Task.validates_apart``): a
setting chosen on it is chosen on the reported number, which results.json's ``selection`` and
the report say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from sinelr.apply import apply_lowrank
from sinelr.layers import LowRankConfig
from sinelr.optim import ExponentialDecay
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext
from tasks.bof.data import OccupancyData, OccupancyDataModule
from tasks.bof.model import OccupancyMLP
from tasks.bof.module import OccupancyModule


@dataclass(kw_only=True, eq=False)
class BofTask(LightningTask, OccupancyData):
    """``conf/task/bof.yaml``'s keys: the data module's (:class:`OccupancyData`) and these."""

    metric = "test/iou"
    data_key = "shape"

    name: str
    width: int
    depth: int
    sigma: float
    targets: str | Sequence[str]
    lr: float
    lr_final_factor: float
    lr_decay_steps: int | None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.schedule = ExponentialDecay(self.lr, self.lr_final_factor, self.lr_decay_steps)

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        model = OccupancyMLP(self.width, self.depth, self.sigma)
        if lowrank is not None:
            apply_lowrank(model, self.targets, lowrank)
        return model

    def learning_schedule(self) -> LearningSchedule:
        # One step per batch of grid points, the last batch short.
        return LearningSchedule(self.schedule.lr, math.ceil(self.resolution**3 / self.batch_size))

    def datamodule(self, ctx: RunContext) -> OccupancyDataModule:
        return OccupancyDataModule(self, ctx.data_dir, ctx.cache_dir, ctx.seed)

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> OccupancyModule:
        return OccupancyModule(
            model,
            self.schedule,
            resolution=self.resolution,
            surface_path=ctx.output_dir / "surface.ply",
            slices_path=ctx.output_dir / "slices.png",
        )
