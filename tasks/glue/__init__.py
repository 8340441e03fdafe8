"""Task ``glue``: adapters on a pretrained encoder, fine-tuned on a GLUE task (paper Table 1).

``task.name`` picks the GLUE task; the encoder is ``task.model`` (DeBERTaV3-base for the paper,
RoBERTa-base the other reading of its text, ``minilm`` offline). Adapters from the factory go on
``task.targets`` (the query and value projections of every layer), the head trains with them,
everything else stays frozen; ``rank=null`` fine-tunes the whole network. Scores are on the dev
split (GLUE's test labels are not public): the whole of it after the last epoch
(``task.protocol=dev``), or SoRA's held-out protocol (``sora``, :mod:`tasks.glue.selection`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import Literal

from torch import nn

from sinelr.layers import LowRankConfig
from sinelr.optim import LinearWarmup
from sinelr.pretrained import attach_adapters
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext, TaskOutput, check_epochs
from tasks.glue.data import GlueData, GlueDataModule, held_out_of_train
from tasks.glue.model import load_classifier, model_path, resolve_layout
from tasks.glue.module import GlueModule
from tasks.glue.selection import KeepBest
from tasks.glue.specs import GlueSpec, glue_spec

PAPER = "paper"


@dataclass(kw_only=True, eq=False)
class GlueTask(LightningTask, GlueData):
    """``conf/task/glue.yaml``'s keys: the data module's (:class:`GlueData`) and these.
    ``name`` is the GLUE data set; the task itself is ``glue`` (the paper's ω table, the
    report's rows), the data set its :attr:`spec`."""

    #: Accuracy for most tasks; an instance carries its own task's paper metric.
    metric = "test/acc"
    fine_tunes = True
    data_key = "name"
    without_validation = "task.protocol=dev"

    name: InitVar[str]
    model: str
    targets: str | Sequence[str]
    head: str | Sequence[str]
    lr: float | Literal["paper"]
    # field(): required, not defaulted to LightningTask.epochs; resolved in __post_init__.
    epochs: int | Literal["paper"] | None = field()
    warmup_ratio: float
    weight_decay: float

    def __post_init__(self, name: str) -> None:
        self.spec: GlueSpec = glue_spec(name)
        self.name = "glue"
        self.metric = f"test/{self.spec.headline}"
        self.schedule = LinearWarmup(
            lr=self.spec.lr if self.lr == PAPER else self.lr,
            weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio,
        )
        self.epochs = check_epochs(
            self.spec.epochs if self.epochs == PAPER else self.epochs, allowed=f", {PAPER!r},"
        )
        super().__post_init__()
        self._keep_best: KeepBest | None = None

    @property
    def selection_metric(self) -> str:
        # The metric SoRA picks the epoch by (MRPC: F1), on the held-out validation examples.
        return f"val/{self.spec.selection}"

    @property
    def validates_apart(self) -> bool:
        # ``dev`` validates on the dev set it scores; ``sora`` holds validation out of it.
        return self.protocol == "sora"

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        model = load_classifier(model_path(self.model), self.spec.num_labels)
        if lowrank is not None:
            targets, head = resolve_layout(model, self.targets, self.head)
            attach_adapters(model, targets, lowrank, "glue", trainable=head)
        return model

    def learning_schedule(self) -> LearningSchedule:
        # GLUE's training-set size, less SoRA's held-out validation, capped by the subsample.
        available = self.spec.train_size
        if available is not None:
            available -= held_out_of_train(self.spec, self.protocol)
        limits = [n for n in (available, self.max_train_examples) if n is not None]
        per_epoch = math.ceil(min(limits) / self.batch_size) if limits else None
        return LearningSchedule(self.schedule.lr, per_epoch, self.epochs)

    def datamodule(self, ctx: RunContext) -> GlueDataModule:
        return GlueDataModule(self, self.spec, model_path(self.model), ctx.data_dir, ctx.seed)

    def callbacks(self, ctx: RunContext) -> list[KeepBest]:
        if self.protocol != "sora":
            return []
        self._keep_best = KeepBest(self.selection_metric)
        return [self._keep_best]

    def run(self, model: nn.Module | None, ctx: RunContext) -> TaskOutput:
        output = super().run(model, ctx)
        if self._keep_best is not None:
            output.metrics.update(self._keep_best.metrics())
        return output

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> GlueModule:
        return GlueModule(model, self.spec, self.schedule)
