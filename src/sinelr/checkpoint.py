"""Checkpoints that survive a kill, as Lightning writes and reads them.

* Written atomically (temporary file + rename) and read with ``weights_only=True``.
* ``last.ckpt`` in the run directory's ``checkpoints/``, rewritten at every interval and at
  the end of training (:class:`LastCheckpoint`).
* Each carries the run's checkpoint fingerprint (:mod:`sinelr.fingerprint`), its RNG states and
  the ω its sine layers were built with (:class:`RunState`), so that :mod:`sinelr.resume` can
  refuse to continue another run, and a continued run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from sinelr.errors import InputError
from sinelr.io import atomic_write
from sinelr.omega_record import sine_layers, start_omegas

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
STATE_KEY = "sinelr"


class CheckpointError(InputError):
    """A checkpoint that cannot be used to resume this run."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into memory, then an atomic rename; loads never unpickle code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return read_checkpoint(Path(path), map_location=map_location)


def read_checkpoint(path: Path, map_location: Any = None, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint's contents, loaded with ``weights_only`` (no pickled code runs); anything
    but a missing file, a truncated one say, is a :class:`CheckpointError` that says what to do."""
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(error).__name__}: {error}); it may be "
            "truncated or not a sinelr checkpoint. Resume from another one or start afresh."
        ) from error


def saved_state(path: Path) -> dict[str, Any] | None:
    """What :class:`RunState` stored in a checkpoint; None for another program's. Memory-
    mapped, so that checking a large model's checkpoint does not read its weights."""
    return read_checkpoint(path, mmap=True).get("callbacks", {}).get(STATE_KEY)


def run_checkpoint(run_dir: Path) -> Path:
    """Where a run keeps its ``last.ckpt`` (:class:`LastCheckpoint` writes it there)."""
    return run_dir / CHECKPOINT_DIR / LAST


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, rewritten at every interval (``every_n_epochs`` / ``every_n_train_steps``)
    and once more at the end of training if the last interval fell short of it.

    Lightning (from 2.5.3) writes ``save_last`` only at a step where a top-k checkpoint was
    saved too, so ``save_top_k=0, save_last=True`` wrote no checkpoint before the end of a run
    checkpointing by epochs: a kill lost the whole run. Here the interval checkpoint itself is
    named ``last`` (top 1 without a monitor keeps the newest), and training's end saves the
    final weights that export reads when the run's length is not a multiple of the interval.
    """

    def __init__(self, dirpath: Path, **every: int | None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=Path(LAST).stem,
            save_top_k=1,
            enable_version_counter=False,
            **every,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self._last_global_step_saved != trainer.global_step:
            self._save_checkpoint(trainer, self.format_checkpoint_name({}))


class RunState(L.Callback):
    """Stores the fingerprint and RNG states in every checkpoint, and restores the RNGs.

    Lightning restores model, optimiser, schedulers and loops but not the global generators;
    without them a resumed run's dropout masks and random draws would differ. Also stores the ω
    each sine layer was built with (``omega_start``): with ``omega=auto`` it depends on the
    layer and the run's schedule, which the fingerprint does not hold, and rebuilding the
    network (export) needs it.
    """

    def __init__(self, run_fingerprint: dict[str, Any]) -> None:
        self.run_fingerprint = run_fingerprint
        self.omega_start: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        network = getattr(pl_module, "model", pl_module)  # names as apply_lowrank gave them
        self.omega_start = start_omegas(sine_layers(network))

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "fingerprint": self.run_fingerprint,
            "torch": torch.get_rng_state(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
            "python": random.getstate(),
            "omega_start": self.omega_start,
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        kind, keys, *rest = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy(), *rest))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
