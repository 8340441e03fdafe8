"""Tasks ``vit_cifar``, ``vit_imagenet``, ``convnext_cifar``: image classifiers trained from
scratch with low-rank or sine low-rank MLPs (paper Figure 4, Tables 9-11).

One task class, three configs: the architecture is a timm model name (``task.model``) with
keyword overrides (``task.model_kwargs``), the factorised layers a regex (``task.targets``), the
data a registry name (``task.dataset``). ``rank=null`` trains the dense network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import timm
from torch import nn

from sinelr.apply import apply_lowrank
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext
from tasks.vision.data import VisionData, VisionDataModule
from tasks.vision.datasets import count_class_folders, dataset_spec
from tasks.vision.module import Schedule, VisionModule


@dataclass(kw_only=True, eq=False)
class VisionTask(LightningTask, VisionData, Schedule):
    """``conf/task/vit_cifar.yaml``'s keys (and its two siblings'): the data module's
    (:class:`VisionData`), the optimiser's (:class:`Schedule`) and these."""

    metric = "test/acc"
    data_key = "dataset"

    name: str
    model: str
    model_kwargs: Mapping[str, Any]
    targets: str | Sequence[str]
    num_classes: int | None
    topk: Sequence[int]

    def __post_init__(self) -> None:
        # Each base checks its own keys; neither chains to the other, so both are called here.
        VisionData.__post_init__(self)
        self.class_count = self.num_classes or self._count_classes()
        Schedule.__post_init__(self)

    def _count_classes(self) -> int:
        known = dataset_spec(self.dataset).num_classes
        if known is not None:
            return known
        if self.data_root is None:
            raise InputError("task.dataset=imagefolder needs task.data_path (or task.num_classes)")
        return count_class_folders(self.data_root)

    @property
    def validates_apart(self) -> bool:
        return self.val_fraction > 0

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        if not timm.is_model(self.model):
            raise InputError(
                f"task.model={self.model!r} is not a timm architecture; see "
                "timm.list_models(), e.g. vit_small_patch16_224, convnext_tiny"
            )
        model = timm.create_model(
            self.model,
            pretrained=False,  # from scratch, as the paper
            num_classes=self.class_count,
            in_chans=self.in_chans,
            **self.model_kwargs,
        )
        if lowrank is not None:
            apply_lowrank(model, self.targets, lowrank)
        return model

    def learning_schedule(self) -> LearningSchedule:
        # Steps per epoch follow from the data set's size, read only at setup; the rule needs
        # them only for adapters, which vision tasks do not take.
        return LearningSchedule(self.lr)

    def datamodule(self, ctx: RunContext) -> VisionDataModule:
        return VisionDataModule(self, ctx.data_dir, ctx.seed)

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> VisionModule:
        return VisionModule(
            model,
            num_classes=self.class_count,
            augment=self.augmentation,
            schedule=self,
            topk=self.topk,
        )
