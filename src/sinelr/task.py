"""What a paper task provides to the driver, and the Lightning plumbing most tasks share."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
from torch import nn

from sinelr.data import require_one_step_per_batch
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.layers.config import is_positive_integer
from sinelr.schedule import LearningSchedule


@dataclass
class RunContext:
    """Where a run reads and writes, and how it gets a configured ``lightning.Trainer``."""

    output_dir: Path
    data_dir: Path
    cache_dir: Path
    seed: int
    make_trainer: Callable[..., L.Trainer]
    ckpt_path: str | None = None


@dataclass
class TaskOutput:
    metrics: dict[str, float]
    steps: int = 0


class Task(abc.ABC):
    """One experiment of the paper.

    ``build_model`` must need no data (``dry_run=true`` counts parameters from it, and the
    dense model it returns for ``lowrank=None`` is the compression rate's reference).
    """

    #: results.json's ``metric.name`` and its direction.
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    #: False for a task with no network to factorise (``theory``): it reads ``rank`` and
    #: ``omega`` itself, and results.json names it by :attr:`method`.
    factorises: ClassVar[bool] = True
    #: True for a task that fine-tunes a pretrained network: ``adapter=<any registered plain
    #: adapter>`` (its config's default: lora) puts adapters on it. Tasks that train from
    #: scratch refuse adapters.
    fine_tunes: ClassVar[bool] = False
    method: ClassVar[str | None] = None
    #: True for tasks that train through checkpoints and can resume from one.
    resumable: ClassVar[bool] = False
    #: The ``task.<key>`` that names what a run was trained on (a mesh, a scene, a data set), so
    #: that a report gives each its own column; None for a task with one fixed data set.
    data_key: ClassVar[str | None] = None

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def selection_metric(self) -> str:
        """The metric a search or a "best" choice reads: :attr:`metric` on the validation data
        (``test/acc`` → ``val/acc``). A task whose validation scores something else says so."""
        return self.metric.replace("test/", "val/", 1)

    @property
    def selection_higher_is_better(self) -> bool:
        """The selection metric's direction: the headline's, unless the task selects on
        something else (a loss)."""
        return self.higher_is_better

    @property
    def validates_apart(self) -> bool:
        """Whether the validation data is disjoint from the test data. Where it is not (a task
        that fits one object, a paper protocol that validates on its test views), a run's
        selection is its test metric, recorded as not independent: nothing pretends otherwise."""
        return False

    def build_model(self, lowrank: LowRankConfig | None) -> nn.Module | None:
        """The network, factorised as ``lowrank`` says (dense for None); None if there is none."""
        return None

    def learning_schedule(self) -> LearningSchedule | None:
        """The optimiser's peak learning rate and steps per epoch, as far as known before
        training (``omega=auto`` reads them, docs/omega.md); None if the task cannot say."""
        return None

    @abc.abstractmethod
    def run(self, model: nn.Module | None, ctx: RunContext) -> TaskOutput:
        """Train and evaluate; return scalar metrics including :attr:`metric`."""


def check_epochs(epochs: Any, allowed: str = "") -> int | None:
    """``task.epochs``: a positive integer, or None to leave it to ``trainer.max_epochs``.

    ``allowed`` names other accepted values for the error message (e.g. ``'paper'``)."""
    if epochs is not None and not is_positive_integer(epochs):
        raise InputError(
            f"task.epochs must be a positive integer{allowed} or null (trainer.max_epochs), "
            f"got {epochs!r}"
        )
    return epochs


class LightningTask(Task):
    """A task trained by ``lightning.Trainer.fit`` and scored by ``Trainer.test``."""

    resumable = True
    #: Epochs the task itself decides (fine-tuning recipes fix them per data set); None leaves
    #: them to ``trainer.max_epochs``.
    epochs: int | None = None
    #: A setting that runs the task without the validation it selects on, offered beside
    #: dropping ``trainer.limit_val_batches=0`` (GLUE: ``task.protocol=dev``); empty if none.
    without_validation: ClassVar[str] = ""

    @abc.abstractmethod
    def lightning_module(self, model: nn.Module, ctx: RunContext) -> L.LightningModule: ...

    @abc.abstractmethod
    def datamodule(self, ctx: RunContext) -> L.LightningDataModule: ...

    def callbacks(self, ctx: RunContext) -> Sequence[L.Callback]:
        return ()

    def trainer_overrides(self) -> dict[str, Any]:
        """Trainer settings the task decides: :attr:`epochs`, which ``trainer.max_epochs``
        cannot see when they depend on the task's data set."""
        return {} if self.epochs is None else {"max_epochs": self.epochs}

    def run(self, model: nn.Module | None, ctx: RunContext) -> TaskOutput:
        assert model is not None
        module = self.lightning_module(model, ctx)
        data = self.datamodule(ctx)
        trainer = ctx.make_trainer(callbacks=list(self.callbacks(ctx)), **self.trainer_overrides())
        require_one_step_per_batch(trainer, self.name)
        if self.validates_apart and trainer.limit_val_batches == 0:
            other = f", or use {self.without_validation}" if self.without_validation else ""
            raise InputError(
                f"{self.name} selects on {self.selection_metric}, but trainer.limit_val_batches=0 "
                f"turns validation off: drop that override{other}"
            )
        trainer.fit(module, datamodule=data, ckpt_path=ctx.ckpt_path)
        metrics = _scalars(trainer.callback_metrics)  # the last epoch's train/ and val/ values
        if self.validates_apart:
            # The selection score of the network that is tested (the last epoch's, or the best
            # one a task restored at fit end), whatever the validation interval left logged.
            trainer.validate(module, datamodule=data, verbose=False)
            metrics.update(_scalars(trainer.callback_metrics))
        # Under DDP every process tests the whole set, as Lightning advises (its
        # DistributedSampler would hand each a shard, padded with repeats): what a task derives
        # from all its test outputs (bof's surface, NeRF's per-view scores, commonsense's
        # predictions) is then whole on rank 0, which writes it, and every synced metric is a
        # ratio that repeats leave as it is.
        keep_test_samplers(trainer)
        trainer.test(module, datamodule=data, verbose=False)
        metrics.update(_scalars(trainer.callback_metrics))
        return TaskOutput(metrics=metrics, steps=trainer.global_step)


def keep_test_samplers(trainer: L.Trainer) -> None:
    """From now on, leave the samplers of ``trainer``'s data loaders as the task made them:
    no ``DistributedSampler`` for the stages still to run (``test``), one for training.

    sinelr's one write of a private Lightning attribute, here because Lightning (2.6) has no
    public way to do it. Its switch, ``Trainer(use_distributed_sampler=...)``, is a constructor
    argument for every stage at once, which each stage reads back from the trainer's private
    ``_accelerator_connector``. The public alternatives change more than the sampler: a second
    ``Trainer`` for testing (Lightning's advice, ``devices=1``) inside the processes DDP has
    already launched, or a ``DistributedSampler`` of one replica carried by every task's test
    data loader.
    """
    trainer._accelerator_connector.use_distributed_sampler = False


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}
