"""Fine-tuning on a GLUE task and scoring it with the task's own metrics.

The recipe is that of SoRA's and the LoRA paper's GLUE scripts, which the sine paper follows:
AdamW, a linear decay after a warm-up over the first 6 % of steps, cross-entropy (mean squared
error for the STS-B regression head); one learning rate for the adapters and the head, as both
(docs/method.md, "GLUE (Table 1) settings").
"""

from __future__ import annotations

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
    MulticlassAccuracy,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from sinelr.optim import LinearWarmup
from tasks.glue.specs import GlueSpec


def _metric(name: str, spec: GlueSpec) -> Metric:
    # F1 and Matthews are of the positive class ("equivalent", "duplicate", "acceptable").
    factories = {
        "acc": lambda: MulticlassAccuracy(spec.num_labels, average="micro"),
        "f1": BinaryF1Score,
        "matthews": BinaryMatthewsCorrCoef,
        "pearson": PearsonCorrCoef,
        "spearman": SpearmanCorrCoef,
    }
    return factories[name]()


def glue_metrics(spec: GlueSpec, prefix: str) -> MetricCollection:
    """``spec``'s metrics, logged as ``<prefix><name>`` (``test/matthews``, ``val/acc``, ...)."""
    return MetricCollection({name: _metric(name, spec) for name in spec.metrics}, prefix=prefix)


def predictions(logits: Tensor, spec: GlueSpec) -> Tensor:
    """What the metrics score: the predicted class, or the predicted score for a regression."""
    return logits.squeeze(-1).float() if spec.is_regression else logits.argmax(-1)


def glue_loss(logits: Tensor, labels: Tensor, spec: GlueSpec) -> Tensor:
    if spec.is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels)
    return F.cross_entropy(logits.float(), labels)


class GlueModule(L.LightningModule):
    """Trains whatever in ``model`` requires a gradient (adapters and head, or everything)."""

    def __init__(
        self,
        model: nn.Module,
        spec: GlueSpec,
        schedule: LinearWarmup,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.schedule = schedule
        self.val_metrics = glue_metrics(spec, "val/")
        self.test_metrics = glue_metrics(spec, "test/")

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return self.model(**inputs).logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = glue_loss(self(batch), batch["labels"], self.spec)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _score(self, batch: dict[str, Tensor], metrics: MetricCollection) -> None:
        metrics.update(predictions(self(batch), self.spec), batch["labels"])
        self.log_dict(metrics, on_step=False, on_epoch=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._score(batch, self.val_metrics)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._score(batch, self.test_metrics)

    def configure_optimizers(self):
        return self.schedule.configure(self.model, int(self.trainer.estimated_stepping_batches))
