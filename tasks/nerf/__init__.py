"""Task ``nerf``: low-rank and sine low-rank NeRFs on LLFF (paper Table 3).

A coarse and a fine Gaussian-activated MLP on raw coordinates are trained on the rays of a
forward-facing scene; the score is the mean PSNR of the held-out views, rendered whole and saved
as PNG (colour and depth) beside results.json.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sinelr.apply import apply_lowrank
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.optim import ExponentialDecay
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext
from tasks.nerf.data import LLFFDataModule
from tasks.nerf.model import NeRF
from tasks.nerf.module import NerfModule
from tasks.nerf.render import RenderSettings


class NerfTask(LightningTask):
    metric = "test/psnr"
    data_key = "scene"

    def __init__(
        self,
        name: str,
        scene: str,
        factor: int,
        llffhold: int,
        depth: int,
        width: int,
        skips: Sequence[int],
        sigma: float,
        targets: str | Sequence[str],
        n_samples: int,
        n_importance: int,
        noise_std: float,
        lr: float,
        lr_final_factor: float,
        batch_size: int,
        chunk: int,
        val_rays: int,
        val_views: int,
        render_factor: int,
        lpips: bool,
    ) -> None:
        super().__init__(name)
        if n_samples < 2 or n_importance < 0:
            raise InputError(
                f"task.n_samples must be >= 2 and task.n_importance >= 0, "
                f"got {n_samples}, {n_importance}"
            )
        self.scene = scene
        self.factor = factor
        self.llffhold = llffhold
        self.depth = depth
        self.width = width
        self.skips = skips
        self.sigma = sigma
        self.targets = targets
        self.render = RenderSettings(
            n_samples=n_samples, n_importance=n_importance, perturb=True, noise_std=noise_std
        )
        self.schedule = ExponentialDecay(lr, lr_final_factor)
        self.batch_size = batch_size
        self.chunk = chunk
        self.val_rays = val_rays
        self.val_views = val_views
        self.render_factor = render_factor
        self.lpips = lpips

    @property
    def validates_apart(self) -> bool:
        # LLFF's protocol holds out only test views; validation rays then come from them.
        return self.val_views > 0

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        model = NeRF(
            self.depth, self.width, self.skips, self.sigma, fine=self.render.n_importance > 0
        )
        if lowrank is not None:
            apply_lowrank(model, self.targets, lowrank)
        return model

    def learning_schedule(self) -> LearningSchedule:
        # The rays per epoch are known only once the scene is read; runs are set in steps.
        return LearningSchedule(self.schedule.lr)

    def datamodule(self, ctx: RunContext) -> LLFFDataModule:
        return LLFFDataModule(
            data_dir=ctx.data_dir,
            scene=self.scene,
            factor=self.factor,
            llffhold=self.llffhold,
            batch_size=self.batch_size,
            val_rays=self.val_rays,
            val_views=self.val_views,
            render_factor=self.render_factor,
            seed=ctx.seed,
        )

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
