"""Batches of indices that a resumed run replays exactly, for datasets indexed by a tensor.

Tasks whose data is one big table (occupancy voxels, NeRF rays) serve a batch as
``dataset[indices]``: no per-item collation, and the order of an epoch is a pure function of
``(seed, epoch)``, so a run resumed mid-epoch continues with the very batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from sinelr.errors import InputError


class IndexBatches(Sampler[Tensor]):
    """Batches of indices over ``range(n)``: reshuffled each epoch from ``(seed, epoch)``.

    Lightning calls ``set_epoch``; deriving the order from the epoch rather than from a running
    generator makes an epoch's batches the same whether or not the run was resumed. A resumed
    run starts mid-epoch: ``done(epoch, batches_per_epoch)`` says how many batches of the epoch
    were already trained on, and those are skipped.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        done: Callable[[int, int], int] | None = None,
        drop_last: bool = False,
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.done = done
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        skip = self.done(self.epoch, len(self)) if self.done else 0
        yield from order.split(self.batch_size)[skip : len(self)]


class ResumableLoader(DataLoader):
    """A DataLoader whose position is a function of the trainer's step (see ``IndexBatches``).

    The ``state_dict`` interface tells Lightning it may resume mid-epoch; the state itself
    lives in the restored global step, so there is nothing else to save.
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def index_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    global_step: Callable[[], int] | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
) -> ResumableLoader:
    """Batches of ``dataset[indices]``; ``global_step`` (training only) makes it resumable.

    One optimiser step per batch is assumed: the batches of an epoch already trained on are
    ``global_step - epoch · batches_per_epoch``. ``drop_last`` drops an epoch's short last batch
    (mixup pairs the batch with its reverse, so needs an even size). With ``num_workers`` each
    worker builds whole batches; random draws in workers (augmentations) then come from seeds
    the loader's generator hands out, which a resumed run does not replay: exact resume needs
    ``num_workers=0``.
    """
    done = None
    if global_step is not None:
        step = global_step

        def done(epoch: int, per_epoch: int) -> int:
            return min(per_epoch, max(0, step() - epoch * per_epoch))

    assert isinstance(dataset, Sized)
    sampler = IndexBatches(len(dataset), batch_size, shuffle, seed, done, drop_last)
    return ResumableLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        generator=own_generator(seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def require_one_step_per_batch(trainer: L.Trainer, task: str) -> None:
    """:func:`index_loader`'s resume arithmetic counts one optimiser step per batch."""
    if trainer.accumulate_grad_batches != 1:
        raise InputError(
            f"task {task} needs trainer.accumulate_grad_batches=1, got "
            f"{trainer.accumulate_grad_batches}: its resumable loader counts one step per batch; "
            "drop the override"
        )


class IndexDataModule(L.LightningDataModule):
    """The base of the tasks' data modules: batches are ``dataset[indices]``, and the training
    order is one a run resumed mid-epoch replays (:func:`index_loader`).

    A subclass builds its datasets in ``setup`` and returns :meth:`train_loader` and
    :meth:`eval_loader` of them; the step bookkeeping that makes resuming exact lives here.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def trained_steps(self) -> int:
        """Optimiser steps taken so far: a restored run's count, read when an epoch starts."""
        return self.trainer.global_step if self.trainer else 0

    def train_loader(self, dataset: Dataset, batch_size: int, **options: Any) -> ResumableLoader:
        """Shuffled from ``(seed, epoch)``, skipping the batches a resumed run already took."""
        return index_loader(
            dataset,
            batch_size,
            shuffle=True,
            seed=self.seed,
            global_step=self.trained_steps,
            **options,
        )

    def eval_loader(self, dataset: Dataset, batch_size: int, **options: Any) -> ResumableLoader:
        """In order: an evaluation visits every item once, whatever the step."""
        return index_loader(dataset, batch_size, shuffle=False, **options)


def own_generator(seed: int = 0) -> torch.Generator:
    """A DataLoader's generator, so that its iterators never draw from the global RNG.

    Without one, every new iterator (each epoch, each validation) takes a seed from the global
    generator. A resumed run creates its iterators at other points of that stream than the
    original did, and every random draw after that (ray jitter, density noise) would differ.
    """
    return torch.Generator().manual_seed(seed)


#: The seed of every held-out validation split: the split is part of the data, not of the run,
#: so every seed and method trains on the same examples (42: DoRA's and SoRA's split seed).
HOLD_OUT_SEED = 42


def hold_out(count: int, size: int, what: str, unit: str = "examples") -> tuple[Tensor, Tensor]:
    """Indices ``(kept, held)`` of ``count`` items: ``size`` of them held out for validation, at
    random but the same for every run, each part in its original order.

    ``what`` names the setting for the error (``task.val_size``), ``unit`` what is counted: it
    must leave training at least one.
    """
    if not 0 <= size < count:
        raise InputError(f"{what}={size} must be at least 0 and below the {count} training {unit}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(HOLD_OUT_SEED))
    held = torch.zeros(count, dtype=torch.bool)
    held[order[:size]] = True
    index = torch.arange(count)
    return index[~held], index[held]
