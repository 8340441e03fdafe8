"""Points of the occupancy grid, served in shuffled batches without materialising coordinates.

An epoch visits every voxel once (the paper's "epoch", as in WIRE's occupancy code). A batch is
a tensor of flat voxel indices; coordinates are computed from them, so a 512³ grid costs its
134 MB of labels and nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

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


class IndexBatches(Sampler[Tensor]):
    """Batches of indices over ``range(n)``: reshuffled each epoch from ``(seed, epoch)``.

    Lightning calls ``set_epoch``; deriving the order from the epoch rather than from a running
    generator makes an epoch's batches the same whether or not the run was resumed. A resumed
    run starts mid-epoch: ``done(epoch, batches_per_epoch)`` says how many batches of the epoch
    were already trained on, and those are skipped.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        done: Callable[[int, int], int] | None = None,
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.done = done
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        skip = self.done(self.epoch, len(self)) if self.done else 0
        yield from order.split(self.batch_size)[skip:]


class ResumableLoader(DataLoader):
    """A DataLoader whose position is a function of the trainer's step (see ``IndexBatches``).

    The ``state_dict`` interface tells Lightning it may resume mid-epoch; the state itself
    lives in the restored global step, so there is nothing else to save.
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class OccupancyDataModule(L.LightningDataModule):
    def __init__(
        self,
        mesh_path: Path,
        resolution: int,
        batch_size: int,
        eval_batch_size: int,
        cache_dir: Path,
        seed: int,
    ) -> None:
        super().__init__()
        self.mesh_path = mesh_path
        self.resolution = resolution
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.cache_dir = cache_dir
        self.seed = seed
        self.points: OccupancyPoints | None = None

    def setup(self, stage: str) -> None:
        if self.points is None:
            grid = load_occupancy(self.mesh_path, self.resolution, self.cache_dir)
            self.points = OccupancyPoints(torch.from_numpy(grid).reshape(-1), self.resolution)

    def _loader(
        self, batch_size: int, shuffle: bool, done: Callable[[int, int], int] | None = None
    ) -> DataLoader:
        assert self.points is not None
        sampler = IndexBatches(len(self.points), batch_size, shuffle, self.seed, done)
        return ResumableLoader(self.points, sampler=sampler, batch_size=None)

    def _batches_done(self, epoch: int, per_epoch: int) -> int:
        """Batches of ``epoch`` already trained on: one optimiser step per batch."""
        step = self.trainer.global_step if self.trainer is not None else 0
        return min(per_epoch, max(0, step - epoch * per_epoch))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.batch_size, shuffle=True, done=self._batches_done)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_batch_size, shuffle=False)
