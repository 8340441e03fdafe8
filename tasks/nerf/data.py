"""LLFF rays for training and evaluation.

Training rays of every training view are built once, in NDC, and served in random batches
across views (an "epoch" is one pass over all of them). Evaluation renders whole test views, at
``1/render_factor`` of the image size when asked (the NeRF code's quick-preview option); the
ground truth is then box-downsampled to match. Validation scores a fixed random subset of the
test views' rays, so it is cheap enough to run often.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sinelr.data import IndexDataModule, hold_out, own_generator
from sinelr.errors import InputError
from tasks.nerf.llff import Scene, load_scene
from tasks.nerf.rays import camera_rays, ndc_rays

#: The side of SSIM's Gaussian window: test views must be at least this large.
SSIM_WINDOW = 11
#: NDC maps depths beyond this plane (the scaled scene's unit distance) into [-1, 1).
NDC_NEAR = 1.0

Rays = dict[str, Tensor]


def view_rays(height: int, width: int, focal: float, c2w: Tensor) -> Rays:
    """A view's rays in NDC, with the unit world-space directions the network is given."""
    origins, directions = camera_rays(height, width, focal, c2w)
    viewdirs = F.normalize(directions, dim=-1)
    origins, directions = ndc_rays(height, width, focal, NDC_NEAR, origins, directions)
    return {"origins": origins, "directions": directions, "viewdirs": viewdirs}


class RayTable(Dataset):
    """``table[indices]`` → the rays (and target colours) at those flat indices."""

    def __init__(self, columns: dict[str, Tensor]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index: Tensor) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.columns.items()}


class TestViews(Dataset):
    """One item per test view: its index in the scene, its rays and its ground-truth image."""

    def __init__(self, scene: Scene, render_factor: int) -> None:
        self.scene = scene
        self.render_factor = render_factor

    def __len__(self) -> int:
        return len(self.scene.test)

    def size(self) -> tuple[int, int]:
        return self.scene.height // self.render_factor, self.scene.width // self.render_factor

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        view = int(self.scene.test[i])
        height, width = self.size()
        focal = self.scene.focal / self.render_factor
        rays = view_rays(height, width, focal, torch.from_numpy(self.scene.poses[view]))
        image = torch.from_numpy(self.scene.images[view]).permute(2, 0, 1)[None]
        if self.render_factor > 1:
            image = F.adaptive_avg_pool2d(image, (height, width))
        return {**rays, "view": torch.tensor(view), "image": image[0].permute(1, 2, 0)}


@dataclass(kw_only=True, eq=False)
class LLFFData:
    """The ``task.<key>`` settings :class:`LLFFDataModule` reads: which scene, how its views are
    split, how its rays are served. ``NerfTask`` inherits them, so the config's keys reach the
    data module without being handed on one by one."""

    scene: str
    factor: int
    llffhold: int
    batch_size: int
    val_rays: int
    val_views: int
    render_factor: int

    def __post_init__(self) -> None:
        if self.render_factor < 1:
            raise InputError(f"task.render_factor must be >= 1, got {self.render_factor}")


class LLFFDataModule(IndexDataModule):
    def __init__(self, settings: LLFFData, data_dir: Path, seed: int) -> None:
        super().__init__(seed)
        self.settings = settings
        self.data_dir = data_dir
        self.scene: Scene | None = None
        self.train_rays: RayTable | None = None
        self.val_table: RayTable | None = None
        self.views: dict[str, np.ndarray] = {}

    def setup(self, stage: str) -> None:
        if self.scene is not None:
            return
        settings = self.settings
        scene = load_scene(self.data_dir, settings.scene, settings.factor, settings.llffhold)
        height, width = TestViews(scene, settings.render_factor).size()
        if min(height, width) < SSIM_WINDOW:
            raise InputError(
                f"task.render_factor={settings.render_factor} renders the test views at "
                f"{height}x{width}, smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window: "
                "use a smaller task.render_factor"
            )
        self.scene = scene
        kept, held = hold_out(len(scene.train), settings.val_views, "task.val_views", "views")
        # Validation rays from training views held out of training, or (val_views=0, LLFF's
        # paper protocol) from the test views.
        self.views = {
            "train": scene.train[kept.numpy()],
            "val": scene.train[held.numpy()] if settings.val_views else scene.test,
            "test": scene.test,
        }
        self.train_rays = self._table(self.views["train"])
        val = self._table(self.views["val"])
        generator = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(len(val), generator=generator)[: settings.val_rays]
        self.val_table = RayTable(val[keep])

    def _table(self, views: np.ndarray) -> RayTable:
        scene = self.scene
        assert scene is not None
        parts = []
        for view in views:
            c2w = torch.from_numpy(scene.poses[view])
            rays = view_rays(scene.height, scene.width, scene.focal, c2w)
            rays["rgb"] = torch.from_numpy(scene.images[view]).reshape(-1, 3)
            parts.append(rays)
        return RayTable({key: torch.cat([p[key] for p in parts]) for key in parts[0]})

    def train_dataloader(self) -> DataLoader:
        assert self.train_rays is not None
        return self.train_loader(self.train_rays, self.settings.batch_size)

    def val_dataloader(self) -> DataLoader:
        assert self.val_table is not None
        return self.eval_loader(self.val_table, self.settings.batch_size)

    def test_dataloader(self) -> DataLoader:
        assert self.scene is not None
        views = TestViews(self.scene, self.settings.render_factor)
        return DataLoader(views, batch_size=None, generator=own_generator())
