"""Training a NeRF on rays, and scoring it on rendered test views."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.image import PeakSignalNoiseRatio

from sinelr.io import atomic_write
from sinelr.optim import ExponentialDecay
from tasks.nerf.model import NeRF
from tasks.nerf.render import RenderSettings, render_chunked, render_rays

log = logging.getLogger(__name__)


def mse_to_psnr(mse: Tensor) -> Tensor:
    return -10.0 * torch.log10(mse)


def flat_psnr(image: Tensor) -> Tensor:
    """PSNR against ``image`` (``(1, 3, H, W)`` in [0, 1]) of that image's own mean colour,
    painted over every pixel: what a render with no structure at all would score.

    The mean is taken per view, not over all test views: the per-channel mean is the constant
    image of least squared error, so this is the best score *any* flat-colour render can get
    on that view. A NeRF can output one colour per view without learning any geometry (its
    colour depends on the view direction), so the floor a run must clear is this per-view one;
    the colour pooled over all test views gives a lower, weaker floor. Averaged over the views
    as ``test/psnr`` is (mean of per-view PSNRs), so the two compare directly.
    """
    flat = image.mean(dim=(-2, -1), keepdim=True).expand_as(image)
    return peak_signal_noise_ratio(flat, image, data_range=1.0)


class NerfModule(L.LightningModule):
    """Photometric MSE on the fine and coarse colours (as the NeRF code); PSNR and SSIM per test
    view, their means as ``test/psnr`` and ``test/ssim``, and the renders saved as PNG.
    ``test/psnr_flat`` is the same mean for each view's flat mean colour (:func:`flat_psnr`):
    a ``test/psnr`` not clearly above it means the network has learnt no more than a colour.

    ``schedule`` decays the rate exponentially per step over the whole run.
    """

    def __init__(
        self,
        model: NeRF,
        render: RenderSettings,
        schedule: ExponentialDecay,
        chunk: int,
        output_dir: Path | None = None,
        lpips: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.train_render = render
        self.eval_render = replace(render, perturb=False, noise_std=0.0)
        self.schedule = schedule
        self.chunk = chunk
        self.output_dir = output_dir
        self.use_lpips = lpips
        self.lpips: nn.Module | None = None
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = render_rays(self.model.coarse, self.model.fine, batch, self.train_render)
        mse = F.mse_loss(out["rgb"], batch["rgb"])
        loss = mse + F.mse_loss(out["coarse_rgb"], batch["rgb"]) if "coarse_rgb" in out else mse
        size = len(batch["rgb"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/psnr", mse_to_psnr(mse.detach()), prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = render_rays(self.model.coarse, self.model.fine, batch, self.eval_render)
        self.val_psnr.update(out["rgb"].clamp(0, 1), batch["rgb"])  # pooled over all val rays
        self.log("val/psnr", self.val_psnr, on_epoch=True, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.lpips = lpips_metric() if self.use_lpips else None

    def on_test_epoch_end(self) -> None:
        self.lpips = None  # never part of a checkpoint

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        rays = {key: batch[key] for key in ("origins", "directions", "viewdirs")}
        out = render_chunked(self.model.coarse, self.model.fine, rays, self.eval_render, self.chunk)
        image = batch["image"]
        height, width = image.shape[:2]
        rgb = out["rgb"].reshape(height, width, 3).clamp(0, 1)
        pred, target = rgb.permute(2, 0, 1)[None], image.permute(2, 0, 1)[None].float()
        view = int(batch["view"])
        scores = {
            "psnr": peak_signal_noise_ratio(pred, target, data_range=1.0),
            "ssim": structural_similarity_index_measure(pred, target, data_range=1.0),
            "psnr_flat": flat_psnr(target),
        }
        if self.lpips is not None:
            # LPIPS takes images in [-1, 1].
            scores["lpips"] = self.lpips.to(pred.device)(pred * 2 - 1, target * 2 - 1)
        for name, value in scores.items():
            self.log(f"test/{name}", value, on_epoch=True, batch_size=1)
            self.log(f"test/{name}/view_{view:03d}", value, on_epoch=True, batch_size=1)
        if self.output_dir is not None:
            depth = out["depth"].reshape(height, width)
            save_png(self.output_dir / f"render_{view:03d}_rgb.png", rgb)
            save_png(self.output_dir / f"render_{view:03d}_depth.png", depth.clamp(0, 1))

    def configure_optimizers(self):
        return self.schedule.configure(self.model, int(self.trainer.estimated_stepping_batches))


def save_png(path: Path, image: Tensor) -> None:
    """An image in [0, 1], ``(H, W, 3)`` colour or ``(H, W)`` grey, as an 8-bit PNG."""
    pixels = (image.detach().float().cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    atomic_write(path, lambda handle: Image.fromarray(pixels).save(handle, format="PNG"))


def lpips_metric():
    """torchmetrics' LPIPS (AlexNet) if its backbone's weights are already installed, else None.

    The weights download on first use; offline that would fail mid-run, so it is skipped here
    with one log line instead.
    """
    from torchvision.models import AlexNet_Weights

    url = AlexNet_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cached.is_file():
        log.info("LPIPS skipped: AlexNet weights not installed at %s (they download once)", cached)
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=False)
