"""The driver behind ``run.py``: config → model → training → results.json.

Every run writes results.json, whatever happens: ``dry_run`` after counting parameters,
``completed`` after training, ``failed`` with the error before the exception propagates (and
the process exits non-zero); then the run goes to W&B if ``logger=wandb``. Exceptions:
``skip_done=true`` keeps a completed results.json of the same configuration untouched, and
under DDP only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sinelr.accounting import count_parameters
from sinelr.callbacks import NonFiniteGuard
from sinelr.checkpoint import (
    CHECKPOINT_DIR,
    AtomicCheckpointIO,
    RunState,
    check_checkpoint,
    checkpoint_intervals,
    find_resume_checkpoint,
    fingerprint,
    fingerprint_diff,
    result_fingerprint,
)
from sinelr.layers import LowRankConfig, variant_name
from sinelr.loggers import make_loggers, publish_to_wandb
from sinelr.paper import paper_omega
from sinelr.presets import check_composed_task_preset, paper_on_cpu_warning
from sinelr.results import RESULTS_FILE, Metric, RunResult
from sinelr.sharding import gathered_rank_diagnostics
from sinelr.task import LightningTask, RunContext, Task
from sinelr.vector_math import settle_vector_math

log = logging.getLogger(__name__)


def _mul(*factors: float | None) -> float | None:
    """``${mul:2,${rank}}``: a setting that scales with another (LoRA's ``alpha = 2·rank``);
    null if any factor is (``rank=null``)."""
    return None if any(f is None for f in factors) else math.prod(factors)


OmegaConf.register_new_resolver("mul", _mul, replace=True)


def resolve_number(omega: Any) -> float | None:
    """``omega`` if it is a number, None for null and ``paper``; an error for anything else."""
    if omega is None or omega == "paper":
        return None
    if isinstance(omega, bool) or not isinstance(omega, int | float):
        raise ValueError(f"omega must be a number, null or 'paper', got {omega!r}")
    return float(omega)


def resolve_omega(omega: Any, rank: int | None, task: str, adapter: str | None) -> float | None:
    """``omega`` as a number: ``paper`` looks up the paper's ω (docs/method.md); null stays null."""
    if omega == "paper" and rank is not None:
        return paper_omega(task, rank, adapter)
    return resolve_number(omega) if rank is not None else None


def lowrank_config(cfg: DictConfig, task_name: str) -> LowRankConfig | None:
    """The factorised layers the command line asks for; None for the dense baseline."""
    rank, adapter = cfg.rank, cfg.get("adapter")
    if rank is None:
        if cfg.omega is not None:
            log.warning("omega=%s ignored: rank=null is the full-rank baseline", cfg.omega)
        return None
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"rank must be a positive integer or null, got {rank!r}")
    omega = resolve_omega(cfg.omega, rank, task_name, adapter)
    return LowRankConfig(
        variant=variant_name(rank, omega, adapter),
        rank=rank,
        omega=omega,
        **OmegaConf.to_container(cfg.lowrank, resolve=True),
    )


def device_name(cfg: DictConfig) -> str:
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def full_rank_total(task: Task) -> int:
    """Parameters of the dense network, counted on the meta device (no memory, no RNG draws)."""
    with torch.device("meta"):
        dense = task.build_model(None)
    return 0 if dense is None else sum(p.numel() for p in dense.parameters())


def _trainer_factory(
    cfg: DictConfig,
    output_dir: Path,
    run_fingerprint: dict[str, Any],
    divergence_hint: str,
    labels: dict[str, Any],
):
    """``make_trainer(callbacks)``: the configured Trainer with sinelr's standard callbacks.

    Every Lightning run gets atomic checkpoints carrying the run's fingerprint and RNG state,
    the non-finite guard, a rich progress bar, and loggers whose failures are not fatal.
    """

    command_line = HydraConfig.get().overrides.task if HydraConfig.initialized() else []

    def make_trainer(callbacks: Sequence[L.Callback] = (), **overrides: Any) -> L.Trainer:
        loggers = make_loggers(cfg.get("logger"), labels)
        standard: list[L.Callback] = [
            ModelCheckpoint(
                dirpath=output_dir / CHECKPOINT_DIR,
                save_top_k=0,
                save_last=True,
                **checkpoint_intervals(cfg.checkpoint, command_line),
            ),
            RunState(run_fingerprint),
            NonFiniteGuard(divergence_hint),
        ]
        if cfg.trainer.get("enable_progress_bar", True):
            standard.append(RichProgressBar(leave=True))
        return instantiate(
            cfg.trainer,
            default_root_dir=str(output_dir),
            logger=loggers or False,
            callbacks=[*standard, *callbacks],
            plugins=[AtomicCheckpointIO()],
            **overrides,
        )

    return make_trainer


def resume_checkpoint(cfg: DictConfig, output_dir: Path, run_fingerprint: dict) -> Path | None:
    """The checkpoint this run continues from (checked against its fingerprint), if any."""
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") or ckpt_path == "last":
        runs_root = Path(cfg.paths.runs_dir).expanduser()
        return find_resume_checkpoint(output_dir, runs_root, run_fingerprint)
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        check_checkpoint(path, run_fingerprint)
        return path
    return None


def _log_diagnostics(diagnostics: dict[str, dict[str, float]]) -> None:
    for name, d in diagnostics.items():
        log.info(
            "rank of %s: numerical %d / %d (factor rank %d), stable %.2f",
            name,
            d["numerical_rank"],
            d["max_rank"],
            d["rank"],
            d["stable_rank"],
        )


def run_labels(result: RunResult) -> dict[str, Any]:
    """W&B's ``group`` (the experiment, ``+experiment=<name>``, else the task) and ``tags``."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    rank = "full" if result.rank is None else result.rank
    return {
        "group": choices.get("experiment") or result.task,
        "tags": [result.task, result.method, f"rank={rank}", f"preset={result.preset}"],
    }


def completed_result(output_dir: Path, expected: dict[str, Any]) -> RunResult | None:
    """The completed result in ``output_dir`` if a run with this fingerprint wrote it.

    ``skip_done=true`` asks this before running: a sweep run again into the same sweep
    directory finds each job's earlier results.json (job directories are named by their
    overrides), and anything but a completed run of the same configuration is run again.
    """
    path = output_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("skip_done: %s is unreadable (%s); running again", path, error)
        return None
    if data.get("status") != "completed":
        log.info("skip_done: %s says %s; running again", path, data.get("status"))
        return None
    diff = fingerprint_diff(data.get("fingerprint") or {}, expected, source="results.json")
    if diff:
        log.warning(
            "skip_done: %s is a completed run of another configuration (%s); running again",
            path,
            "; ".join(diff[:5]),
        )
        return None
    return RunResult.from_json(data)


def run(cfg: DictConfig, output_dir: str | Path) -> RunResult:
    """Run one configured experiment and write ``output_dir/results.json``.

    With ``skip_done=true``, a completed results.json of the same configuration already in
    ``output_dir`` is returned as it is, and nothing runs.
    """
    output_dir = Path(output_dir)
    if cfg.rank is None:  # the dense baseline has no adapter, whatever the task's default one
        cfg.adapter = None
    if cfg.get("skip_done"):
        done = completed_result(output_dir, result_fingerprint(cfg))
        if done is not None:
            log.info(
                "skip_done: %s already completed (%s = %s); not run again",
                output_dir,
                done.metric.name,
                done.metric.value,
            )
            return done
    start = time.perf_counter()
    settle_vector_math()  # before any parallel CPU op: the same seed must give the same run
    task_name = cfg.task.name
    result = RunResult(
        task=task_name,
        method="dense",
        rank=cfg.rank if isinstance(cfg.rank, int) else None,
        omega=None,
        adapter=cfg.get("adapter"),
        seed=cfg.seed,
        preset=cfg.preset,
        metric=Metric("", None, True),
        device=device_name(cfg),
        output_dir=str(output_dir),
    )
    model: nn.Module | None = None
    try:
        result.fingerprint = result_fingerprint(cfg)
        check_composed_task_preset()
        task_cls: type[Task] = get_class(cfg.task._target_)
        trains = issubclass(task_cls, LightningTask) and not cfg.dry_run
        if warning := paper_on_cpu_warning(cfg.preset, result.device, trains):
            log.warning(warning)
        result.metric = Metric(task_cls.metric, None, task_cls.higher_is_better)
        result.task_config = OmegaConf.to_container(cfg.task, resolve=True)
        task: Task = instantiate(cfg.task, _recursive_=False, _convert_="all")
        # The instance names the task and its metric: glue's ``task.name`` is its data set
        # (rte, cola, ...), and its headline metric depends on which.
        result.task = task.name
        result.metric = Metric(task.metric, None, task.higher_is_better)
        if cfg.get("adapter") is not None and not task.fine_tunes:
            raise ValueError(
                f"adapter={cfg.adapter}: task {task.name} trains its network from scratch and "
                "adapters need a pretrained one; drop adapter= (rank=K alone gives the "
                "factorised sin(ω·UV)/g layers)"
            )
        if task.factorises:
            lowrank = lowrank_config(cfg, task.name)
            result.method = lowrank.variant if lowrank else "dense"
            result.omega = lowrank.omega if lowrank else None
        else:  # the task reads rank and omega itself
            lowrank = None
            result.method = task.method or "dense"
            result.omega = resolve_number(cfg.omega)
        dense_total = full_rank_total(task)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        # A dry run only counts: on the meta device a pretrained 8B network takes no memory and
        # no weights are read (build_model builds it from its configuration).
        with torch.device("meta") if cfg.dry_run else contextlib.nullcontext():
            model = task.build_model(lowrank)
        result.params = count_parameters(model, dense_total)
        log.info(
            "%s %s rank=%s omega=%s: %d parameters (%d trainable, %.2f%% of full rank)",
            task_name,
            result.method,
            result.rank,
            result.omega,
            result.params.total,
            result.params.trainable,
            100 * result.params.compression_rate(result.adapter is not None),
        )
        if cfg.dry_run:
            result.status = "dry_run"
            return result
        run_fingerprint = fingerprint(cfg)
        ckpt = resume_checkpoint(cfg, output_dir, run_fingerprint) if task.resumable else None
        if ckpt is not None:
            log.info("resuming from %s", ckpt)
            result.resumed_from = str(ckpt)
        ctx = RunContext(
            output_dir=output_dir,
            data_dir=Path(cfg.paths.data_dir).expanduser(),
            cache_dir=Path(cfg.paths.cache_dir).expanduser(),
            seed=cfg.seed,
            make_trainer=_trainer_factory(
                cfg,
                output_dir,
                run_fingerprint,
                divergence_hint=f"omega={result.omega}, lowrank.gain="
                f"{cfg.lowrank.gain or 'sqrt(d_in)'}, task.lr={cfg.task.get('lr', 'n/a')}",
                labels=run_labels(result),
            ),
            ckpt_path=None if ckpt is None else str(ckpt),
        )
        outcome = task.run(model, ctx)
        result.metrics = outcome.metrics
        result.steps = outcome.steps
        value = outcome.metrics.get(task.metric)
        if value is None or not math.isfinite(value):
            raise FloatingPointError(f"{task.metric} is {value}: the run produced no valid result")
        result.metric.value = value
        result.status = "completed"
        return result
    except BaseException as error:
        result.status = "failed"
        result.error = f"{type(error).__name__}: {error}"
        raise
    finally:
        if model is not None and result.status == "completed":
            result.diagnostics = {"rank": gathered_rank_diagnostics(model)}
            _log_diagnostics(result.diagnostics["rank"])
        result.wall_time_s = time.perf_counter() - start
        if rank_zero_only.rank == 0:  # under DDP, one process writes the run's result
            path = result.write(output_dir)
            log.info("%s: %s", result.status, path)
            publish_to_wandb(cfg, run_labels(result), result, output_dir)
