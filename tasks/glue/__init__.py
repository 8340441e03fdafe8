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
from typing import Literal

from torch import nn

from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.optim import LinearWarmup
from sinelr.pretrained import attach_adapters
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext, TaskOutput, check_epochs
from sinelr.text import TextBatching
from tasks.glue.data import PROTOCOLS, GlueDataModule, held_out_of_train
from tasks.glue.model import load_classifier, model_path, resolve_layout
from tasks.glue.module import GlueModule
from tasks.glue.selection import KeepBest
from tasks.glue.specs import GlueSpec, glue_spec

PAPER = "paper"


class GlueTask(LightningTask):
    #: Accuracy for most tasks; an instance carries its own task's paper metric.
    metric = "test/acc"
    fine_tunes = True
    data_key = "name"

    def __init__(
        self,
        name: str,
        model: str,
        targets: str | Sequence[str],
        head: str | Sequence[str],
        max_length: int,
        batch_size: int,
        eval_batch_size: int,
        lr: float | Literal["paper"],
        epochs: int | Literal["paper"] | None,
        warmup_ratio: float,
        weight_decay: float,
        max_train_examples: int | None,
        max_eval_examples: int | None,
        protocol: str,
    ) -> None:
        # The task is "glue" (the paper's ω table, the report's rows); ``name`` is its data set.
        super().__init__("glue")
        self.spec: GlueSpec = glue_spec(name)
        self.metric = f"test/{self.spec.headline}"
        self.model = model
        self.targets = targets
        self.head = head
        self.batching = TextBatching(
            max_length, batch_size, eval_batch_size, max_train_examples, max_eval_examples
        )
        self.schedule = LinearWarmup(
            lr=self.spec.lr if lr == PAPER else lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
        )
        self.epochs = check_epochs(
            self.spec.epochs if epochs == PAPER else epochs, allowed=f", {PAPER!r},"
        )
        if protocol not in PROTOCOLS:
            raise InputError(f"task.protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
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
        limits = [n for n in (available, self.batching.max_train_examples) if n is not None]
        per_epoch = math.ceil(min(limits) / self.batching.batch_size) if limits else None
        return LearningSchedule(self.schedule.lr, per_epoch, self.epochs)

    def datamodule(self, ctx: RunContext) -> GlueDataModule:
        return GlueDataModule(
            spec=self.spec,
            data_dir=ctx.data_dir,
            tokenizer_path=model_path(self.model),
            batching=self.batching,
            seed=ctx.seed,
            protocol=self.protocol,
        )

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
