"""Training a classifier from scratch with timm's recipe pieces, scoring top-k accuracy.

Everything of the recipe that timm has is timm's: Mixup/CutMix with soft-target cross-entropy,
label smoothing, ``create_optimizer_v2`` (AdamW without weight decay on biases and norms),
``create_scheduler_v2`` (cosine with linear warm-up, stepped per optimiser update).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from sinelr.optim import check_rate, separate_learnt_omega
from tasks.vision.data import Augment


def accuracy_metrics(num_classes: int, topk: Sequence[int], prefix: str) -> MetricCollection:
    """``<prefix>acc`` (top-1) and ``<prefix>acc<k>`` for every other ``k`` in ``topk``."""
    return MetricCollection(
        {
            "acc" if k == 1 else f"acc{k}": MulticlassAccuracy(
                num_classes, top_k=k, average="micro"
            )
            for k in topk
        },
        prefix=prefix,
    )


@dataclass(kw_only=True, eq=False)
class Schedule:
    """The optimiser (a ``create_optimizer_v2`` name) and its cosine learning-rate schedule:
    ``task.<key>`` settings that ``VisionTask`` inherits, as it does its data module's."""

    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: float
    min_lr: float
    warmup_lr: float

    def __post_init__(self) -> None:
        check_rate(self.lr)


class VisionModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        augment: Augment,
        schedule: Schedule,
        topk: Sequence[int],
    ) -> None:
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.mixup = (
            Mixup(
                mixup_alpha=augment.mixup,
                cutmix_alpha=augment.cutmix,
                label_smoothing=augment.smoothing,
                num_classes=num_classes,
            )
            if augment.mixes
            else None
        )
        # Mixup's targets are soft (and already smoothed); otherwise smoothing is the loss's.
        if self.mixup is not None:
            self.train_loss: nn.Module = SoftTargetCrossEntropy()
        elif augment.smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(augment.smoothing)
        else:
            self.train_loss = nn.CrossEntropyLoss()
        self.val_metrics = accuracy_metrics(num_classes, topk, "val/")
        self.test_metrics = accuracy_metrics(num_classes, topk, "test/")

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self.mixup is not None:
            images, labels = self.mixup(images, labels)
        loss = self.train_loss(self(images).float(), labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _score(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection) -> None:
        images, labels = batch
        logits = self(images).float()
        metrics.update(logits, labels)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._score(batch, self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._score(batch, self.test_metrics)

    def configure_optimizers(self):
        s = self.schedule
        optimizer = create_optimizer_v2(
            self.model, s.optimizer, lr=s.lr, weight_decay=s.weight_decay
        )
        separate_learnt_omega(optimizer, self.model)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, min(total, int(self.trainer.num_training_batches)))
        schedule, _ = create_scheduler_v2(
            optimizer,
            sched="cosine",
            num_epochs=math.ceil(total / per_epoch),
            warmup_epochs=s.warmup_epochs,
            min_lr=s.min_lr,
            warmup_lr=s.warmup_lr,
            step_on_epochs=False,
            updates_per_epoch=per_epoch,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm's schedulers are functions of the update count: passing it keeps a resumed
        # run's learning rate exact without any scheduler state.
        scheduler.step_update(num_updates=self.global_step)
