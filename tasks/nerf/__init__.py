"""Task ``nerf``: low-rank and sine low-rank NeRFs on LLFF (paper Table 3).

A coarse and a fine Gaussian-activated MLP on raw coordinates are trained on the rays of a
forward-facing scene; the score is the mean PSNR of the held-out views, rendered whole and saved
as PNG (colour and depth) beside results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from sinelr.apply import apply_lowrank
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.optim import ExponentialDecay
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext
from tasks.nerf.data import LLFFData, LLFFDataModule
from tasks.nerf.model import NeRF
from tasks.nerf.module import NerfModule
from tasks.nerf.render import RenderSettings


@dataclass(kw_only=True, eq=False)
class NerfTask(LightningTask, LLFFData):
    """``conf/task/nerf.yaml``'s keys: the data module's (:class:`LLFFData`) and these."""

    metric = "test/psnr"
    data_key = "scene"

    name: str
    depth: int
    width: int
    skips: Sequence[int]
    sigma: float
    targets: str | Sequence[str]
    n_samples: int
    n_importance: int
    noise_std: float
    lr: float
    lr_final_factor: float
    chunk: int
    lpips: bool

    def __post_init__(self) -> None:
        if self.n_samples < 2 or self.n_importance < 0:
            raise InputError(
                f"task.n_samples must be >= 2 and task.n_importance >= 0, "
                f"got {self.n_samples}, {self.n_importance}"
            )
        self.render = RenderSettings(
            n_samples=self.n_samples,
            n_importance=self.n_importance,
            perturb=True,
            noise_std=self.noise_std,
        )
        self.schedule = ExponentialDecay(self.lr, self.lr_final_factor)
        super().__post_init__()

    @property
    def validates_apart(self) -> bool:
        # LLFF's protocol holds out only test views; validation rays then come from them.
        return self.val_views > 0

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        model = NeRF(
            fine=self.n_importance > 0,
            depth=self.depth,
            width=self.width,
            skips=self.skips,
            sigma=self.sigma,
        )
        if lowrank is not None:
            apply_lowrank(model, self.targets, lowrank)
        return model

    def learning_schedule(self) -> LearningSchedule:
        # The rays per epoch are known only once the scene is read; runs are set in steps.
        return LearningSchedule(self.schedule.lr)

    def datamodule(self, ctx: RunContext) -> LLFFDataModule:
        return LLFFDataModule(self, ctx.data_dir, ctx.seed)

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> NerfModule:
        assert isinstance(model, NeRF)
        return NerfModule(
            model,
            self.render,
            self.schedule,
            chunk=self.chunk,
            output_dir=ctx.output_dir,
            lpips=self.lpips,
        )
