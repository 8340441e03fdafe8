"""Checkpoints that survive a kill and refuse to resume the wrong run.

* Written atomically (temporary file + rename) and read with ``weights_only=True``.
* Each carries the run's *fingerprint* (task settings, rank, ω, adapter, layer settings, seed)
  and its RNG states; resuming checks the fingerprint first and names what differs.
* ``resume=true`` finds the newest checkpoint of a run with the same fingerprint, in this run's
  directory or under ``outputs/``; ``ckpt_path=<file>`` names one; ``skip_done=true`` continues
  from the run directory's own, if a run of the same configuration left one.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from sinelr.errors import InputError
from sinelr.io import atomic_write
from sinelr.keys import flatten, override_key
from sinelr.omega import sine_layers, start_omegas

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
STATE_KEY = "sinelr"


class CheckpointError(InputError):
    """A checkpoint that cannot be used to resume this run."""


FINGERPRINT_KEYS = ("task", "rank", "omega", "adapter", "lowrank", "seed")


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint must match to continue this run (hardware, logging, paths may differ)."""
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key in FINGERPRINT_KEYS
        for value in [cfg.get(key)]
    }


#: Trainer settings that change what a run shows, not what it computes.
PRESENTATION_KEYS = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def result_fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What a completed results.json must match to stand for this run (``skip_done=true``).

    The checkpoint's fingerprint plus the preset and the trainer's settings: a resumed run may
    train for more epochs or on other hardware, but a finished result depends on both.
    """
    trainer = OmegaConf.to_container(cfg.get("trainer") or {}, resolve=True)
    return {
        **fingerprint(cfg),
        "preset": cfg.get("preset"),
        "trainer": {k: v for k, v in trainer.items() if k not in PRESENTATION_KEYS},
    }


#: ``checkpoint.<key>``: how often ``last.ckpt`` is written. Lightning takes one of them.
INTERVALS = ("every_n_epochs", "every_n_train_steps")


def checkpoint_intervals(
    settings: Mapping[str, int | None], command_line: Sequence[str] = ()
) -> dict[str, int | None]:
    """``ModelCheckpoint``'s interval arguments from ``checkpoint.*``, at most one of them set.

    The base config writes every epoch and some presets every n steps, so setting one interval
    leaves the other's inherited value beside it, which Lightning refuses. The interval named
    in ``command_line`` (the run's overrides) wins; otherwise ``every_n_train_steps``, as no
    default sets it. Both named there cannot be honoured and are an error.
    """
    intervals = {key: settings.get(key) for key in INTERVALS}
    if not all(intervals.values()):
        return intervals
    given = {override_key(override) for override in command_line}
    named = [key for key in INTERVALS if f"checkpoint.{key}" in given]
    if len(named) == len(INTERVALS):
        raise InputError(
            "checkpoint.every_n_epochs and checkpoint.every_n_train_steps are both given: "
            "checkpoints follow one schedule; give only one, or set the other to null"
        )
    keep = named[0] if named else "every_n_train_steps"
    return {key: value if key == keep else None for key, value in intervals.items()}


#: Settings that joined the fingerprint after runs had been recorded, each with the value that
#: computes what those runs computed. A saved fingerprint without the key reads as having that
#: value, so ``skip_done`` and ``resume`` still recognise the earlier runs (a sweep resumed
#: after an upgrade does not start again).
ADDED_SETTINGS: dict[str, Any] = {
    "lowrank.detach_norm": False,
    "lowrank.learn_omega": False,
    "lowrank.omega_lr": 0.01,
}


def fingerprint_diff(
    saved: dict[str, Any], current: dict[str, Any], source: str = "checkpoint"
) -> list[str]:
    """The settings in which ``saved`` and ``current`` differ, one line each (empty: same run).

    A setting of :data:`ADDED_SETTINGS` that ``saved`` lacks reads as its old value, and one
    that ``current`` lacks (a task that never had it) is not compared at all.
    """
    a, b = {**ADDED_SETTINGS, **flatten(saved)}, flatten(current)
    a = {k: v for k, v in a.items() if k in b or k not in ADDED_SETTINGS}
    return [
        f"{k}: {a.get(k)!r} ({source}) vs {b.get(k)!r} (now)"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


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


def saved_fingerprint(path: Path) -> dict[str, Any] | None:
    """The run fingerprint a sinelr checkpoint carries; None for another program's."""
    state = saved_state(path)
    return None if state is None else state.get("fingerprint")


def saved_start_omegas(path: Path) -> dict[str, float] | None:
    """The ω each sine layer of the checkpoint's run was built with; None where it records
    none (a run without sine layers, or a checkpoint written before checkpoints did)."""
    state = saved_state(path)
    return (state or {}).get("omega_start") or None


def check_checkpoint(path: Path, expected: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``path`` was written by a run with ``expected``."""
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist: check ckpt_path=, or pass resume=true to find "
            "the run's own last.ckpt"
        )
    saved = saved_fingerprint(path)
    if saved is None:
        raise CheckpointError(
            f"checkpoint {path} carries no sinelr run fingerprint (another program wrote it): "
            "pass the last.ckpt of a sinelr run as ckpt_path="
        )
    diff = fingerprint_diff(saved, expected)
    if diff:
        raise CheckpointError(
            f"checkpoint {path} is from a different configuration; differences: "
            + "; ".join(diff[:10])
            + ". Resume with the original overrides, or start a fresh run."
        )


def run_checkpoint(run_dir: Path) -> Path:
    """Where a run keeps its ``last.ckpt`` (:class:`LastCheckpoint` writes it there)."""
    return run_dir / CHECKPOINT_DIR / LAST


def _candidates(output_dir: Path, runs_root: Path) -> Iterator[Path]:
    own = run_checkpoint(output_dir)
    if own.is_file():
        yield own
    if runs_root.is_dir():
        found = [p for p in runs_root.rglob(f"{CHECKPOINT_DIR}/{LAST}") if p != own]
        yield from sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_resume_checkpoint(output_dir: Path, runs_root: Path, expected: dict[str, Any]) -> Path:
    """The newest ``last.ckpt`` written by a run with this fingerprint."""
    for path in _candidates(output_dir, runs_root):
        try:
            saved = saved_fingerprint(path)
            if saved is not None and not fingerprint_diff(saved, expected):
                return path
        except CheckpointError as error:
            log.warning("skipping %s", error)
    raise CheckpointError(
        f"resume=true: no checkpoint of a run with this configuration in {output_dir} or under "
        f"{runs_root}. Run it without resume first, or pass ckpt_path=<file.ckpt>."
    )


def interrupted_checkpoint(output_dir: Path, expected: dict[str, Any]) -> Path | None:
    """The ``last.ckpt`` an interrupted run of this configuration left in ``output_dir``.

    ``skip_done=true`` continues from it, so a sweep run again into the same directory loses
    none of a cut job's steps (a 90-minute NeRF job stopped at minute 80 costs 10, not 90).
    A checkpoint of another configuration is left alone, and the job starts afresh.
    """
    path = run_checkpoint(output_dir)
    if not path.is_file():
        return None
    try:
        check_checkpoint(path, expected)
    except CheckpointError as error:
        log.warning("skip_done: not continuing from it (%s); starting afresh", error)
        return None
    log.info("skip_done: continuing the interrupted run from %s", path)
    return path


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
