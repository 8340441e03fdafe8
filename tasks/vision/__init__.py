"""Tasks ``vit_cifar``, ``vit_imagenet``, ``convnext_cifar``: image classifiers trained from
scratch with low-rank or sine low-rank MLPs (paper Figure 4, Tables 9-11).

One task class, three configs: the architecture is a timm model name (``task.model``) with
keyword overrides (``task.model_kwargs``), the factorised layers a regex (``task.targets``), the
data a registry name (``task.dataset``). ``rank=null`` trains the dense network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import timm
from torch import nn

from sinelr.apply import apply_lowrank
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.schedule import LearningSchedule
from sinelr.task import LightningTask, RunContext
from tasks.vision.data import Augment, VisionDataModule
from tasks.vision.datasets import count_class_folders, dataset_spec
from tasks.vision.module import Schedule, VisionModule


class VisionTask(LightningTask):
    metric = "test/acc"
    data_key = "dataset"

    def __init__(
        self,
        name: str,
        model: str,
        model_kwargs: Mapping[str, Any],
        targets: str | Sequence[str],
        dataset: str,
        data_path: str | None,
        val_fraction: float,
        num_classes: int | None,
        img_size: int,
        in_chans: int,
        crop_pct: float,
        augment: Mapping[str, Any],
        optimizer: str,
        lr: float,
        weight_decay: float,
        warmup_epochs: float,
        min_lr: float,
        warmup_lr: float,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        topk: Sequence[int],
    ) -> None:
        super().__init__(name)
        self.model_name = model
        self.model_kwargs = dict(model_kwargs)
        self.targets = targets
        self.dataset = dataset
        self.data_path = Path(data_path).expanduser() if data_path else None
        if not 0 <= val_fraction < 1:
            raise InputError(
                f"task.val_fraction must be in [0, 1) (0: validate on the test split, as the "
                f"paper), got {val_fraction}"
            )
        self.val_fraction = val_fraction
        self.num_classes = num_classes or self._count_classes()
        self.img_size = img_size
        if in_chans not in (1, 3):
            raise InputError(f"task.in_chans must be 1 or 3, got {in_chans}")
        self.in_chans = in_chans
        self.crop_pct = crop_pct
        known = {f.name for f in fields(Augment)}
        if unknown := sorted(set(augment) - known):
            raise InputError(f"task.augment has unknown keys {unknown}; known: {sorted(known)}")
        self.augment = Augment(**augment)
        self.schedule = Schedule(optimizer, lr, weight_decay, warmup_epochs, min_lr, warmup_lr)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.topk = list(topk)

    def _count_classes(self) -> int:
        known = dataset_spec(self.dataset).num_classes
        if known is not None:
            return known
        if self.data_path is None:
            raise InputError("task.dataset=imagefolder needs task.data_path (or task.num_classes)")
        return count_class_folders(self.data_path)

    @property
    def validates_apart(self) -> bool:
        return self.val_fraction > 0

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module:
        if not timm.is_model(self.model_name):
            raise InputError(
                f"task.model={self.model_name!r} is not a timm architecture; see "
                "timm.list_models(), e.g. vit_small_patch16_224, convnext_tiny"
            )
        model = timm.create_model(
            self.model_name,
            pretrained=False,  # from scratch, as the paper
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            **self.model_kwargs,
        )
        if lowrank is not None:
            apply_lowrank(model, self.targets, lowrank)
        return model

    def learning_schedule(self) -> LearningSchedule:
        # Steps per epoch follow from the data set's size, read only at setup; the rule needs
        # them only for adapters, which vision tasks do not take.
        return LearningSchedule(self.schedule.lr)

    def datamodule(self, ctx: RunContext) -> VisionDataModule:
        return VisionDataModule(
            dataset=self.dataset,
            data_dir=ctx.data_dir,
            data_path=self.data_path,
            val_fraction=self.val_fraction,
            img_size=self.img_size,
            in_chans=self.in_chans,
            augment=self.augment,
            crop_pct=self.crop_pct,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            seed=ctx.seed,
        )

    def lightning_module(self, model: nn.Module, ctx: RunContext) -> VisionModule:
        return VisionModule(
            model,
            num_classes=self.num_classes,
            augment=self.augment,
            schedule=self.schedule,
            topk=self.topk,
        )
