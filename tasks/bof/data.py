"""Points of the occupancy grid, served in shuffled batches without materialising coordinates.

An epoch visits every voxel once (the paper's "epoch", as in WIRE's occupancy code). A batch is
a tensor of flat voxel indices; coordinates are computed from them, so a 512³ grid costs its
134 MB of labels and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sinelr.data import IndexDataModule
from sinelr.errors import InputError
from tasks.bof.shapes import find_mesh
from tasks.bof.voxelize import load_occupancy


def voxel_centres(index: Tensor, resolution: int) -> Tensor:
    """Flat indices of an ``[x, y, z]`` grid → voxel centres in ``[-1, 1]³``."""
    ijk = torch.stack(
        [index // resolution**2, (index // resolution) % resolution, index % resolution], dim=1
    )
    return (2 * ijk + 1).float() / resolution - 1


class OccupancyPoints(Dataset):
    """``dataset[indices]`` → ``(indices, xyz, occupancy)`` for a batch of flat indices."""

    def __init__(self, occupancy: Tensor, resolution: int) -> None:
        self.occupancy = occupancy
        self.resolution = resolution

    def __len__(self) -> int:
        return self.occupancy.numel()

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return index, voxel_centres(index, self.resolution), self.occupancy[index].float()[:, None]


@dataclass(kw_only=True, eq=False)
class OccupancyData:
    """The ``task.<key>`` settings :class:`OccupancyDataModule` reads: which mesh, at what grid
    size, in what batches. ``BofTask`` inherits them, so the config's keys reach the data module
    without being handed on one by one."""

    shape: str
    resolution: int
    batch_size: int
    eval_batch_size: int

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise InputError(f"task.resolution must be at least 8, got {self.resolution}")


class OccupancyDataModule(IndexDataModule):
    def __init__(self, settings: OccupancyData, data_dir: Path, cache_dir: Path, seed: int) -> None:
        super().__init__(seed)
        self.settings = settings
        self.mesh_path = find_mesh(settings.shape, data_dir, cache_dir)
        self.cache_dir = cache_dir
        self.points: OccupancyPoints | None = None

    def setup(self, stage: str) -> None:
        if self.points is None:
            resolution = self.settings.resolution
            grid = load_occupancy(self.mesh_path, resolution, self.cache_dir)
            self.points = OccupancyPoints(torch.from_numpy(grid).reshape(-1), resolution)

    def train_dataloader(self) -> DataLoader:
        assert self.points is not None
        return self.train_loader(self.points, self.settings.batch_size)

    def val_dataloader(self) -> DataLoader:
        assert self.points is not None
        return self.eval_loader(self.points, self.settings.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
