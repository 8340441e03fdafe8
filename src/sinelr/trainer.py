"""The ``lightning.Trainer`` every Lightning task trains with: the configured one, plus
sinelr's standard callbacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig

from sinelr.callbacks import NonFiniteGuard
from sinelr.checkpoint import CHECKPOINT_DIR, AtomicCheckpointIO, LastCheckpoint, RunState
from sinelr.loggers import make_loggers
from sinelr.results import RunResult, rank_text


def run_labels(result: RunResult) -> dict[str, Any]:
    """W&B's ``group`` (the experiment, ``+experiment=<name>``, else the task) and ``tags``."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {
        "group": choices.get("experiment") or result.task,
        "tags": [
            result.task,
            result.method,
            f"rank={rank_text(result.rank)}",
            f"preset={result.preset}",
        ],
    }


def trainer_factory(
    trainer: DictConfig,
    loggers: Mapping[str, Any] | None,
    output_dir: Path,
    run_fingerprint: dict[str, Any],
    checkpoint_every: dict[str, int | None],
    divergence_hint: str,
    labels: dict[str, Any],
) -> Callable[..., L.Trainer]:
    """``make_trainer(callbacks, **overrides)``: ``trainer`` (``cfg.trainer``) with sinelr's
    callbacks and the ``loggers`` (``cfg.logger``).

    Every Lightning run gets atomic checkpoints carrying the run's fingerprint and RNG state
    (written as ``checkpoint_every`` says), the non-finite guard, a rich progress bar, and
    loggers whose failures are not fatal. A factory, because the task decides the callbacks
    and the epochs of its own trainer.
    """

    def make_trainer(callbacks: Sequence[L.Callback] = (), **overrides: Any) -> L.Trainer:
        guarded = make_loggers(loggers, labels)
        standard: list[L.Callback] = [
            LastCheckpoint(output_dir / CHECKPOINT_DIR, **checkpoint_every),
            RunState(run_fingerprint),
            NonFiniteGuard(divergence_hint),
        ]
        if trainer.get("enable_progress_bar", True):
            standard.append(RichProgressBar(leave=True))
        return instantiate(
            trainer,
            default_root_dir=str(output_dir),
            logger=guarded or False,
            callbacks=[*standard, *callbacks],
            plugins=[AtomicCheckpointIO()],
            **overrides,
        )

    return make_trainer
