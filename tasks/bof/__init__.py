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

from torch import nn

from sinelr.apply import apply_lowrank
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.optim import ExponentialDecay
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext
from tasks.bof.data import OccupancyDataModule
from tasks.bof.model import OccupancyMLP
from tasks.bof.module import OccupancyModule
from tasks.bof.shapes import find_mesh


class BofTask(LightningTask):
    metric = "test/iou"
    data_key = "shape"

    def __init__(
        self,
        name: str,
        shape: str,
        resolution: int,
        width: int,
        depth: int,
        sigma: float,
        targets: str | Sequence[str],
        lr: float,
        lr_final_factor: float,
        lr_decay_steps: int | None,
        batch_size: int,
        eval_batch_size: int,
    ) -> None:
        super().__init__(name)
        if resolution < 8:
            raise InputError(f"task.resolution must be at least 8, got {resolution}")
        self.shape = shape
        self.resolution = resolution
        self.width = width
        self.depth = depth
        self.sigma = sigma
        self.targets = targets
        self.schedule = ExponentialDecay(lr, lr_final_factor, lr_decay_steps)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        model = OccupancyMLP(self.width, self.depth, self.sigma)
        if lowrank is not None:
            apply_lowrank(model, self.targets, lowrank)
        return model

    def learning_schedule(self) -> LearningSchedule:
        # One step per batch of grid points, the last batch short.
        return LearningSchedule(self.schedule.lr, math.ceil(self.resolution**3 / self.batch_size))

    def datamodule(self, ctx: RunContext) -> OccupancyDataModule:
        return OccupancyDataModule(
            mesh_path=find_mesh(self.shape, ctx.data_dir, ctx.cache_dir),
            resolution=self.resolution,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            cache_dir=ctx.cache_dir,
            seed=ctx.seed,
        )

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> OccupancyModule:
        return OccupancyModule(
            model,
            self.schedule,
            resolution=self.resolution,
            surface_path=ctx.output_dir / "surface.ply",
            slices_path=ctx.output_dir / "slices.png",
        )
