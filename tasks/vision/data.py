"""Batches of transformed images for any data set of :mod:`tasks.vision.datasets`.

The transforms are timm's ``create_transform`` (random resized crop, RandAugment, random
erasing for training; resize and centre crop for evaluation), so every data set arrives at the
model's input size whatever its own. Batches come from the shared resumable sampler: a run
resumed after a kill sees the batches and augmentations the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from timm.data import auto_augment, create_transform
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sinelr.data import IndexDataModule, hold_out
from sinelr.errors import InputError
from tasks.vision.datasets import ImageSource, dataset_spec


def _posterize(image: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    """timm's posterize, with 0 bits giving the black image older Pillow gave.

    RandAugment's increasing posterize keeps ``4 - int(4·m/10)`` bits, 0 at magnitude 10 (which
    ``mstd`` noise reaches: ~2 % of draws at m9 mstd0.5). Pillow ≥ 12 refuses 0 bits, so timm's
    own recipe would crash a run at a random step; every bit masked off is black.
    """
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return auto_augment.posterize(image, bits_to_keep, **kwargs)


def with_safe_posterize(transform: Any) -> Any:
    """``transform`` with its RandAugment's posterize ops calling :func:`_posterize`.

    Set on this transform's own ops, so that timm itself is left as it is for everyone else.
    """
    for step in getattr(transform, "transforms", ()):
        if isinstance(step, auto_augment.RandAugment):
            for op in step.ops:
                if op.aug_fn is auto_augment.posterize:
                    op.aug_fn = _posterize
    return transform


@dataclass(frozen=True)
class Augment:
    """Training augmentations, timm's names (``create_transform``, ``Mixup``)."""

    auto_augment: str | None = None  # e.g. "rand-m9-mstd0.5-inc1": RandAugment
    re_prob: float = 0.0  # random erasing
    hflip: float = 0.5
    scale: tuple[float, float] = (0.08, 1.0)  # random resized crop's area range
    color_jitter: float | None = None
    mixup: float = 0.0  # Mixup's alpha; 0 = off
    cutmix: float = 0.0  # CutMix's alpha; 0 = off
    smoothing: float = 0.0  # label smoothing

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


@dataclass
class Subset:
    """The images of ``source`` at ``indices``, an :class:`ImageSource` itself."""

    source: ImageSource
    indices: Tensor

    def __post_init__(self) -> None:
        self.labels = self.source.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, index: int) -> Image.Image:
        return self.source.image(int(self.indices[index]))


class TransformedImages(Dataset):
    """``dataset[indices]`` → ``(images, labels)``: one batch, transformed image by image."""

    def __init__(self, source: ImageSource, transform: Callable[[Image.Image], Tensor], mode: str):
        self.source = source
        self.transform = transform
        self.mode = mode  # "RGB" or "L": what the model's input channels need

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        images = [self.transform(self.source.image(int(i)).convert(self.mode)) for i in indices]
        return torch.stack(images), self.source.labels[indices]


@dataclass(kw_only=True, eq=False)
class VisionData:
    """The ``task.<key>`` settings :class:`VisionDataModule` reads: which images, how they are
    split, transformed and batched. ``VisionTask`` inherits them, so the config's keys reach the
    data module without being handed on one by one; ``data_root`` and ``augmentation`` are
    ``data_path`` and ``augment`` as the code uses them."""

    dataset: str
    data_path: str | None
    val_fraction: float
    img_size: int
    in_chans: int
    crop_pct: float
    augment: Mapping[str, Any]
    batch_size: int
    eval_batch_size: int
    num_workers: int

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise InputError(
                f"task.val_fraction must be in [0, 1) (0: validate on the test split, as the "
                f"paper), got {self.val_fraction}"
            )
        if self.in_chans not in (1, 3):
            raise InputError(f"task.in_chans must be 1 or 3, got {self.in_chans}")
        known = {f.name for f in fields(Augment)}
        if unknown := sorted(set(self.augment) - known):
            raise InputError(f"task.augment has unknown keys {unknown}; known: {sorted(known)}")
        self.augmentation = Augment(**self.augment)
        self.data_root = Path(self.data_path).expanduser() if self.data_path else None


class VisionDataModule(IndexDataModule):
    def __init__(self, settings: VisionData, data_dir: Path, seed: int) -> None:
        super().__init__(seed)
        self.settings = settings
        self.spec = dataset_spec(settings.dataset)
        self.data_dir = data_dir
        self.mode = {1: "L", 3: "RGB"}[settings.in_chans]
        self.splits: dict[str, TransformedImages] = {}

    def _transform(self, training: bool) -> Callable[[Image.Image], Tensor]:
        settings = self.settings
        channels = settings.in_chans
        common: dict[str, Any] = {
            "input_size": (channels, settings.img_size, settings.img_size),
            "mean": self.spec.mean[:channels],
            "std": self.spec.std[:channels],
        }
        if not training:
            return create_transform(**common, is_training=False, crop_pct=settings.crop_pct)
        a = settings.augmentation
        transform = create_transform(
            **common,
            is_training=True,
            scale=tuple(a.scale),
            hflip=a.hflip,
            color_jitter=a.color_jitter or 0.0,
            auto_augment=a.auto_augment,
            re_prob=a.re_prob,
            interpolation="bicubic",
        )
        return with_safe_posterize(transform)

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        train, test = self.spec.read(self.data_dir, self.settings.data_root)
        held_out = round(self.settings.val_fraction * len(train))
        kept, held = hold_out(len(train), held_out, "task.val_fraction", "images")
        evaluate = self._transform(training=False)
        self.splits = {
            "train": TransformedImages(
                Subset(train, kept), self._transform(training=True), self.mode
            ),
            "test": TransformedImages(test, evaluate, self.mode),
        }
        if len(held):
            self.splits["val"] = TransformedImages(Subset(train, held), evaluate, self.mode)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(
            self.splits["train"],
            self.settings.batch_size,
            drop_last=self.settings.augmentation.mixes,  # mixup pairs a batch with its reverse
            num_workers=self.settings.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        # task.val_fraction=0: the paper's protocol, which reports test accuracy over training.
        if "val" not in self.splits:
            return self.test_dataloader()
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        settings = self.settings
        return self.eval_loader(
            self.splits[split], settings.eval_batch_size, num_workers=settings.num_workers
        )
