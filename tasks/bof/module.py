"""Training and scoring the occupancy network."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import mcubes
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor, nn
from torchmetrics.classification import BinaryJaccardIndex

from sinelr.io import atomic_write
from sinelr.optim import ExponentialDecay

log = logging.getLogger(__name__)

THRESHOLD = 0.5


class OccupancyModule(L.LightningModule):
    """Regresses 0/1 occupancy with an MSE (as WIRE, which the paper follows); scores the IoU of
    ``prediction > 0.5`` over the whole grid and exports that surface by marching cubes, and the
    middle slices of the predicted and true occupancy as a figure.

    ``schedule`` decays the rate exponentially per step. The authors' occupancy code decays over
    its first 200 steps (``preset=paper``); the CPU mini decays over the whole run, as it was
    measured.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: ExponentialDecay,
        resolution: int,
        surface_path: Path | None = None,
        slices_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.resolution = resolution
        self.surface_path = surface_path
        self.slices_path = slices_path
        self.val_iou = BinaryJaccardIndex(threshold=THRESHOLD)
        self.test_iou = BinaryJaccardIndex(threshold=THRESHOLD)
        self._volume: Tensor | None = None
        self._truth: Tensor | None = None
        self._scored: Tensor | None = None

    def forward(self, xyz: Tensor) -> Tensor:
        return self.model(xyz)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        _, xyz, occupancy = batch
        loss = F.mse_loss(self(xyz), occupancy)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _score(self, batch: tuple[Tensor, Tensor, Tensor], metric: BinaryJaccardIndex) -> Tensor:
        _, xyz, occupancy = batch
        prediction = self(xyz)
        # Thresholded here: torchmetrics would read values outside [0, 1] as logits.
        metric.update((prediction > THRESHOLD).int(), occupancy.int())
        return prediction

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._score(batch, self.val_iou)
        self.log("val/iou", self.val_iou, on_epoch=True, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._volume = torch.zeros(self.resolution**3)
        self._truth = torch.zeros(self.resolution**3)
        self._scored = torch.zeros(self.resolution**3, dtype=torch.bool)

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        prediction = self._score(batch, self.test_iou)
        assert self._volume is not None and self._truth is not None and self._scored is not None
        index = batch[0].cpu()
        self._volume[index] = prediction.squeeze(1).float().cpu()
        self._truth[index] = batch[2].squeeze(1).float().cpu()
        self._scored[index] = True
        self.log("test/iou", self.test_iou, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        if self._volume is not None and self._truth is not None and self._scored is not None:
            if not self._scored.all():  # e.g. a sampler that shards the test set across devices
                raise RuntimeError(
                    f"bof: only {int(self._scored.sum())} of {self._scored.numel()} grid points "
                    "were tested; the surface needs the whole grid in every process"
                )
            shape = (self.resolution,) * 3
            write = self.trainer.is_global_zero  # under DDP every process holds the whole grid
            if write and self.surface_path is not None:
                export_surface(self._volume.reshape(shape), self.surface_path)
            if write and self.slices_path is not None:
                plot_slices(
                    self._truth.reshape(shape), self._volume.reshape(shape), self.slices_path
                )
        self._volume = self._truth = self._scored = None

    def configure_optimizers(self):
        return self.schedule.configure(self.model, int(self.trainer.estimated_stepping_batches))


def export_surface(volume: Tensor, path: Path) -> None:
    """Marching cubes at the IoU threshold, vertices mapped back to ``[-1, 1]³``."""
    vertices, faces = mcubes.marching_cubes(volume.numpy(), THRESHOLD)
    if len(faces) == 0:
        log.warning("predicted occupancy never crosses %.1f: no surface to export", THRESHOLD)
        return
    resolution = volume.shape[0]
    mesh = trimesh.Trimesh((2 * vertices + 1) / resolution - 1, faces, process=False)
    data = mesh.export(file_type="ply")
    atomic_write(path, lambda handle: handle.write(data))
    log.info("predicted surface: %s (%d triangles)", path, len(faces))


def plot_slices(truth: Tensor, prediction: Tensor, path: Path) -> None:
    """The middle x, y and z slices of the true and the predicted occupancy, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    middle = truth.shape[0] // 2
    fig, axes = plt.subplots(2, 3, figsize=(9, 6), layout="constrained")
    for row, (label, volume) in enumerate([("true", truth), ("predicted", prediction)]):
        for axis, ax in enumerate(axes[row]):
            plane = volume.select(axis, middle).T.numpy()  # matplotlib's own conversion warns
            ax.imshow(plane, origin="lower", cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{label}, {'xyz'[axis]} = {middle}")
            ax.set_axis_off()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    log.info("occupancy slices: %s", path)
