"""A run as the command line describes it, read once and resolved once.

Two steps, both from the run's configuration and nothing else. :meth:`RunRecord.read` takes
what every outcome records (results.json's first labels, where it goes, what its provenance and
W&B add) before anything that can fail. :func:`resolve` turns the rest into a
:class:`RunPlan`: the task, the layer config with ω resolved, the point the run resumes from,
and the trainer's settings. The driver's later steps read these two, never ``cfg``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from sinelr.errors import InputError
from sinelr.fingerprint import Fingerprints, fingerprints
from sinelr.keys import override_key
from sinelr.layers import LowRankConfig
from sinelr.layers.base import DENSE
from sinelr.layers.config import AutoOmega
from sinelr.presets import check_composed_task_preset, paper_on_cpu_warning
from sinelr.provenance import utc_now
from sinelr.results import Metric, RunResult
from sinelr.resume import ResumePoint, resume_point
from sinelr.run_config import lowrank_config, resolve_number
from sinelr.task import LightningTask, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRecord:
    """How one run is recorded, whatever happens to it.

    Read before anything that can fail, so that a run stopped by a bad setting still writes a
    results.json that says how far it was understood: :attr:`result` starts with what the
    command line says and is labelled further as the run is resolved, built and trained. Only
    a configuration that cannot be read at all (an interpolation that does not resolve) stops
    here, before there is anything to record.
    """

    #: The run's own copy of the composed configuration, with the dense baseline's adapter
    #: dropped (the caller's stays as composed): what :func:`resolve` reads, and what W&B
    #: records as the run's config.
    config: DictConfig
    output_dir: Path
    result: RunResult
    #: The run's identity, computed once: ``skip_done`` compares it before anything runs,
    #: checkpoints carry it, and results.json records it.
    fingerprints: Fingerprints
    skip_done: bool
    #: The trainer's precision (``bf16-mixed`` where the CPU has native bf16 and the preset asks
    #: for it); None for a task without a trainer.
    precision: str | None
    #: The run's overrides as typed (a multirun job's own); empty in-process.
    command_line: list[str]
    #: ``time.perf_counter()`` at the start, for the wall time, and the UTC time it stands for.
    started: float
    started_at: str

    @classmethod
    def read(cls, cfg: DictConfig, output_dir: Path) -> RunRecord:
        """The record of the run ``cfg`` configures, its result labelled as far as the command
        line alone can say (nothing here builds the task or the layers)."""
        config = copy.deepcopy(cfg)
        if config.rank is None:  # the dense baseline has no adapter, whatever the task's default
            config.adapter = None
        identity = fingerprints(config)
        result = RunResult(
            task=config.task.name,
            method=DENSE,
            rank=config.rank if isinstance(config.rank, int) else None,
            omega=None,
            adapter=config.get("adapter"),
            seed=config.seed,
            preset=config.preset,
            metric=Metric("", None, True),
            device=device_name(config),
            output_dir=str(output_dir),
            fingerprint=identity.result,
        )
        precision = OmegaConf.select(config, "trainer.precision")
        return cls(
            config=config,
            output_dir=output_dir,
            result=result,
            fingerprints=identity,
            skip_done=bool(config.get("skip_done")),
            precision=None if precision is None else str(precision),
            command_line=command_line(),
            started=time.perf_counter(),
            started_at=utc_now(),
        )


@dataclass(frozen=True)
class RunPlan:
    """What one run is, every decision about it taken: :func:`resolve`'s result."""

    record: RunRecord
    task: Task
    lowrank: LowRankConfig | None
    seed: int
    dry_run: bool
    data_dir: Path
    cache_dir: Path
    #: ``cfg.trainer`` and ``cfg.logger``, which Hydra instantiates as they are.
    trainer: DictConfig
    loggers: DictConfig | None
    #: ``ModelCheckpoint``'s interval: at most one of epochs and steps.
    checkpoint_every: dict[str, int | None]
    #: The settings besides ω that the message of a diverging run names (gain, learning rate).
    divergence_settings: str
    #: The checkpoint this run continues from, checked against its fingerprint.
    resume: ResumePoint | None


def device_name(cfg: DictConfig) -> str:
    """results.json's ``device``: ``cuda`` where the trainer will run on a GPU, else ``cpu``."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def command_line() -> list[str]:
    """The run's overrides as typed (for a multirun job: the job's own); empty in-process."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def resolve(record: RunRecord) -> RunPlan:
    """Resolve the run's configuration into a :class:`RunPlan`: build the task, check the
    settings against it, find the checkpoint the run resumes from, resolve the layers.

    Each label goes into ``record.result`` as soon as it is known, so that a run stopped by a
    bad setting still records how far it was understood.
    """
    cfg, result = record.config, record.result
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
    resume = None
    if task.resumable and not cfg.dry_run:
        resume = resume_point(
            record.output_dir,
            record.fingerprints.checkpoint,
            resume=bool(cfg.get("resume")),
            ckpt_path=cfg.get("ckpt_path"),
            skip_done=record.skip_done,
            runs_root=Path(cfg.paths.runs_dir).expanduser(),
        )
    return RunPlan(
        record=record,
        task=task,
        lowrank=resolve_layers(cfg, task, resume, result),
        seed=cfg.seed,
        dry_run=cfg.dry_run,
        data_dir=Path(cfg.paths.data_dir).expanduser(),
        cache_dir=Path(cfg.paths.cache_dir).expanduser(),
        trainer=cfg.trainer,
        loggers=cfg.get("logger"),
        checkpoint_every=checkpoint_intervals(cfg.checkpoint, record.command_line),
        divergence_settings=(
            f"lowrank.gain={cfg.lowrank.gain or 'the variant default'}, "
            f"task.lr={cfg.task.get('lr', 'n/a')}"
        ),
        resume=resume,
    )


def resolve_layers(
    cfg: DictConfig, task: Task, resume: ResumePoint | None, result: RunResult
) -> LowRankConfig | None:
    """The layer config the task's network is built with (None: dense, or a task that reads
    ``rank`` and ``omega`` itself), the method and ω labelled into ``result``."""
    if not task.factorises:
        result.method = task.method or DENSE
        result.omega = resolve_number(cfg.omega)
        return None
    # A resumed omega=auto run keeps the ω its layers were built with (ResumePoint).
    chosen = resume.start_omegas if resume is not None else None
    lowrank = lowrank_config(cfg, task.name, task.learning_schedule(), chosen=chosen)
    result.method = lowrank.variant if lowrank else DENSE
    # omega=auto is a number only once the layers are built (sinelr.omega_record).
    known = lowrank is not None and not isinstance(lowrank.omega, AutoOmega)
    result.omega = lowrank.omega if known else None
    return lowrank


def build_task(cfg: DictConfig) -> Task:
    """The task ``cfg.task`` configures. A task that refuses its settings raises its own error,
    not Hydra's wrapper around it: that is the one line the user needs (run.py prints it)."""
    try:
        return instantiate(cfg.task, _recursive_=False, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError | FileNotFoundError):
            raise error.__cause__ from None
        raise


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
