"""Image classification data sets behind ``task.dataset``, each read from its original format.

Every reader returns an :class:`ImageSource` per split: something that gives the ``i``-th image
as a PIL image and all labels as a tensor. Transforms, batching and the model's input size are
the data module's concern, so a new data set is one reader and one registry entry.
"""

from __future__ import annotations

import gzip
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.datasets import ImageFolder

from sinelr.errors import InputError
from sinelr.loggers import network_reachable

log = logging.getLogger(__name__)

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
MNIST_TEST_FRACTION = 0.2  # of the 10,000-image set, when it is the only MNIST split present
MNIST_SPLIT_SEED = 0  # fixed: the held-out images must not change with the run's seed


class ImageSource(Protocol):
    labels: Tensor

    def __len__(self) -> int: ...

    def image(self, index: int) -> Image.Image: ...


@dataclass
class ArrayImages:
    """Images held in memory as ``uint8`` ``(N, H, W)`` or ``(N, H, W, C)`` (CIFAR, MNIST)."""

    pixels: np.ndarray
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.pixels[index])


class FolderImages:
    """``root/<class>/<image>`` read by torchvision's ``ImageFolder``; an unreadable image is
    named in the error, not left to a PIL traceback in the middle of an epoch."""

    def __init__(self, root: Path) -> None:
        self.folder = ImageFolder(str(root), loader=_open_image)
        self.labels = torch.tensor(self.folder.targets)

    def __len__(self) -> int:
        return len(self.folder)

    def image(self, index: int) -> Image.Image:
        return self.folder[index][0]

    @property
    def classes(self) -> list[str]:
        return self.folder.classes


def _open_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise InputError(
            f"cannot read image {path} ({error}): replace or delete the file"
        ) from error


Splits = tuple[ImageSource, ImageSource]


@dataclass(frozen=True)
class DatasetSpec:
    """``num_classes`` None: counted from the data (``imagefolder``)."""

    read: Callable[[Path, Path | None], Splits]
    num_classes: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]


# ----------------------------------------------------------------------------- CIFAR-100


def read_cifar100(data_dir: Path, data_path: Path | None) -> Splits:
    """The python version of CIFAR-100 (``cifar-100-python/{train,test}`` pickles)."""
    root = (data_path or data_dir) / "cifar-100-python"
    if not (root / "train").is_file() or not (root / "test").is_file():
        _download_cifar100(root)
    return _read_cifar_pickle(root / "train"), _read_cifar_pickle(root / "test")


def _download_cifar100(root: Path) -> None:
    where = (
        f"CIFAR-100 not found: expected {root}/train and {root}/test (the python version, "
        f"{CIFAR100_URL}, unpacked into {root.parent}). Set paths.data_dir (or SINELR_DATA) to "
        "the directory holding cifar-100-python/ (or task.data_path, which takes precedence)."
    )
    if not network_reachable(CIFAR100_URL):
        raise FileNotFoundError(where + " No network to download it from.")
    from torchvision.datasets.utils import download_and_extract_archive

    log.info("downloading CIFAR-100 into %s", root.parent)
    try:
        download_and_extract_archive(CIFAR100_URL, str(root.parent), md5=CIFAR100_MD5)
    except Exception as error:
        raise FileNotFoundError(f"{where} The download failed: {error}") from error


def _read_cifar_pickle(path: Path) -> ArrayImages:
    try:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = torch.tensor(batch["fine_labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as error:
        raise InputError(
            f"{path} is not a CIFAR-100 pickle ({type(error).__name__}: {error}): "
            f"download it again from {CIFAR100_URL}"
        ) from error
    if len(labels) != len(pixels):
        raise InputError(f"{path}: {len(pixels)} images but {len(labels)} labels")
    return ArrayImages(pixels.transpose(0, 2, 3, 1), labels)


# ----------------------------------------------------------------------------- MNIST


def read_mnist(data_dir: Path, data_path: Path | None) -> Splits:
    """The official idx files (``.gz`` or not) in ``mnist/``.

    With the 60,000-image training set present, the usual train/test split; with only the
    10,000-image test set (as ../shared/data), a fixed 80/20 split of it.
    """
    root = (data_path or data_dir) / "mnist"
    test = _read_mnist_pair(root, "t10k")
    if _find_idx(root, "train-images-idx3-ubyte") is not None:
        return _read_mnist_pair(root, "train"), test
    log.info("%s has no MNIST training set: splitting the 10,000 test images 80/20", root)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(MNIST_SPLIT_SEED))
    n_test = int(len(test) * MNIST_TEST_FRACTION)
    held_out, train = order[:n_test].numpy(), order[n_test:].numpy()
    return (
        ArrayImages(test.pixels[train], test.labels[train]),
        ArrayImages(test.pixels[held_out], test.labels[held_out]),
    )


def _find_idx(root: Path, stem: str) -> Path | None:
    return next((p for p in (root / f"{stem}.gz", root / stem) if p.is_file()), None)


def _read_mnist_pair(root: Path, prefix: str) -> ArrayImages:
    paths = {
        kind: _find_idx(root, f"{prefix}-{kind}")
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    }
    missing = [f"{prefix}-{kind}[.gz]" for kind, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST not found: {root} lacks {', '.join(missing)} (the official idx files from "
            "http://yann.lecun.com/exdb/mnist/). Set paths.data_dir (or SINELR_DATA) to the "
            "directory holding mnist/ (or task.data_path, which takes precedence)."
        )
    pixels = _read_idx(paths["images-idx3-ubyte"], ndim=3)
    labels = _read_idx(paths["labels-idx1-ubyte"], ndim=1)
    if len(pixels) != len(labels):
        raise InputError(f"{root}: {len(pixels)} {prefix} images but {len(labels)} labels")
    return ArrayImages(pixels, torch.from_numpy(labels.astype(np.int64)))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes: magic ``0x0000 08 <ndim>``, big-endian dims, data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise InputError(f"{path} is corrupt ({error}): download it again") from error
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 8, ndim]):
        raise InputError(f"{path} is not an idx file of {ndim}-d unsigned bytes: download it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise InputError(f"{path} is truncated: header says {shape}, download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


# ----------------------------------------------------------------------------- image folders


def read_imagenet(data_dir: Path, data_path: Path | None) -> Splits:
    """ImageNet-1k as class folders: ``imagenet/{train,val}/<wnid>/*.JPEG``."""
    return _read_folders((data_path or data_dir) / "imagenet", "ImageNet")


def read_imagefolder(data_dir: Path, data_path: Path | None) -> Splits:
    if data_path is None:
        raise InputError(
            "task.dataset=imagefolder needs task.data_path: a directory with train/ and val/, "
            "each holding one sub-directory of images per class"
        )
    return _read_folders(data_path, "image folder")


def _read_folders(root: Path, what: str) -> Splits:
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"{what} not found: {root / split} does not exist. Expected {root}/train/ and "
                f"{root}/val/, each with one sub-directory of images per class."
            )
    train, val = FolderImages(root / "train"), FolderImages(root / "val")
    if train.classes != val.classes:
        raise InputError(
            f"{root}: train/ and val/ have different class folders "
            f"({len(train.classes)} against {len(val.classes)}); they must match"
        )
    return train, val


def count_class_folders(root: Path) -> int:
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(
            f"{train} does not exist: task.dataset=imagefolder counts its classes there "
            "(or set task.num_classes)"
        )
    return sum(1 for p in train.iterdir() if p.is_dir())


DATASETS: dict[str, DatasetSpec] = {
    "cifar100": DatasetSpec(read_cifar100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": DatasetSpec(read_imagenet, 1000, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "mnist": DatasetSpec(read_mnist, 10, (0.1307,) * 3, (0.3081,) * 3),
    "imagefolder": DatasetSpec(read_imagefolder, None, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise InputError(f"task.dataset={name!r} is not one of {', '.join(DATASETS)}")
    return DATASETS[name]
