"""A run as the command line describes it, resolved once: the task, the layer config with ω
resolved, the fingerprint, the resume point. The driver's later steps read this, not ``cfg``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from sinelr.checkpoint import (
    check_checkpoint,
    checkpoint_intervals,
    find_resume_checkpoint,
    fingerprint,
    interrupted_checkpoint,
    result_fingerprint,
    saved_start_omegas,
)
from sinelr.errors import InputError
from sinelr.layers import LowRankConfig
from sinelr.layers.base import DENSE
from sinelr.layers.config import AutoOmega
from sinelr.presets import check_composed_task_preset, paper_on_cpu_warning
from sinelr.results import Metric, RunResult
from sinelr.run_config import lowrank_config, resolve_number
from sinelr.task import LightningTask, Task

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """What one run is. ``cfg`` stays for what is instantiated from it as it is (the trainer,
    the loggers); every decision about the run is already taken here."""

    cfg: DictConfig
    output_dir: Path
    task: Task
    lowrank: LowRankConfig | None
    #: What a checkpoint must match to continue this run.
    fingerprint: dict[str, Any]
    #: ``ModelCheckpoint``'s interval: at most one of epochs and steps.
    checkpoint_every: dict[str, int | None]
    #: The checkpoint this run continues from, checked against :attr:`fingerprint`.
    resume_from: Path | None = None


def new_result(cfg: DictConfig, output_dir: Path) -> RunResult:
    """The run's record before anything is resolved: what a failure at any later point reports."""
    return RunResult(
        task=cfg.task.name,
        method=DENSE,
        rank=cfg.rank if isinstance(cfg.rank, int) else None,
        omega=None,
        adapter=cfg.get("adapter"),
        seed=cfg.seed,
        preset=cfg.preset,
        metric=Metric("", None, True),
        device=device_name(cfg),
        output_dir=str(output_dir),
    )


def device_name(cfg: DictConfig) -> str:
    """results.json's ``device``: ``cuda`` where the trainer will run on a GPU, else ``cpu``."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def describe(cfg: DictConfig, output_dir: Path, result: RunResult) -> RunPlan:
    """Resolve the command line into a :class:`RunPlan`, labelling ``result`` on the way.

    Each label goes into ``result`` as soon as it is known, so that a run stopped by a bad
    setting still records how far it was understood.
    """
    result.fingerprint = result_fingerprint(cfg)
    check_composed_task_preset()
    task_cls: type[Task] = get_class(cfg.task._target_)
    trains = issubclass(task_cls, LightningTask) and not cfg.dry_run
    if warning := paper_on_cpu_warning(cfg.preset, result.device, trains):
        log.warning(warning)
    result.metric = Metric(task_cls.metric, None, task_cls.higher_is_better)
    result.task_config = OmegaConf.to_container(cfg.task, resolve=True)
    task = build_task(cfg)
    # The instance names the task and its metric: glue's ``task.name`` is its data set
    # (rte, cola, ...), and its headline metric depends on which.
    result.task = task.name
    result.data_key = task.data_key
    result.metric = Metric(task.metric, None, task.higher_is_better)
    if cfg.get("adapter") is not None and not task.fine_tunes:
        raise InputError(
            f"adapter={cfg.adapter}: task {task.name} trains its network from scratch and "
            "adapters need a pretrained one; drop adapter= (rank=K alone gives the "
            "factorised sin(ω·UV)/g layers)"
        )
    run_fingerprint = fingerprint(cfg)
    resume_from = (
        resume_point(cfg, output_dir, run_fingerprint)
        if task.resumable and not cfg.dry_run
        else None
    )
    if task.factorises:
        # A resumed omega=auto run keeps the ω its layers were built with: the rule reads the
        # step count, which a resumed run may change, and ω is not among the saved weights.
        chosen = saved_start_omegas(resume_from) if resume_from is not None else None
        lowrank = lowrank_config(cfg, task.name, task.learning_schedule(), chosen=chosen)
        result.method = lowrank.variant if lowrank else DENSE
        # omega=auto is a number only once the layers are built (sinelr.omega.record_omegas).
        known = lowrank is not None and not isinstance(lowrank.omega, AutoOmega)
        result.omega = lowrank.omega if known else None
    else:  # the task reads rank and omega itself
        lowrank = None
        result.method = task.method or DENSE
        result.omega = resolve_number(cfg.omega)
    return RunPlan(
        cfg=cfg,
        output_dir=output_dir,
        task=task,
        lowrank=lowrank,
        fingerprint=run_fingerprint,
        checkpoint_every=checkpoint_intervals(cfg.checkpoint, command_line()),
        resume_from=resume_from,
    )


def command_line() -> list[str]:
    """The run's overrides as typed (for a multirun job: the job's own); empty in-process."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def build_task(cfg: DictConfig) -> Task:
    """The task ``cfg.task`` configures. A task that refuses its settings raises its own error,
    not Hydra's wrapper around it: that is the one line the user needs (run.py prints it)."""
    try:
        return instantiate(cfg.task, _recursive_=False, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError | FileNotFoundError):
            raise error.__cause__ from None
        raise


def resume_point(cfg: DictConfig, output_dir: Path, run_fingerprint: dict) -> Path | None:
    """The checkpoint this run continues from (checked against its fingerprint), if any."""
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") or ckpt_path == "last":
        runs_root = Path(cfg.paths.runs_dir).expanduser()
        return find_resume_checkpoint(output_dir, runs_root, run_fingerprint)
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        check_checkpoint(path, run_fingerprint)
        return path
    if cfg.get("skip_done"):
        return interrupted_checkpoint(output_dir, run_fingerprint)
    return None
