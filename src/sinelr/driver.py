"""The driver behind ``run.py``: config → model → training → results.json.

A run is five steps, each of the later ones reading what the earlier ones resolved, never
``cfg``: :meth:`~sinelr.plan.RunRecord.read` takes what any outcome records,
:func:`~sinelr.plan.resolve` turns the rest into a plan, :func:`build` makes and counts the
network, :func:`train` trains and scores it, and :func:`finalise` records the outcome.

Two steps can stop a run before results.json is promised. Reading the record: a configuration
that cannot be read at all (an interpolation that does not resolve) stops there, before there
is a record. Then, with ``skip_done=true``, the lookup of a completed results.json of the same
configuration: one found is returned and left untouched, and an error in the lookup (a
completed results.json that no longer parses as a result) propagates with nothing written.
After these, every run writes results.json, whatever happens: ``dry_run`` after counting
parameters, ``completed`` after training, ``failed`` with the error before the exception
propagates (and the process exits non-zero); then the run goes to W&B if ``logger=wandb``.
Under DDP only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig
from torch import nn

from sinelr import provenance
from sinelr.accounting import count_parameters
from sinelr.callbacks import NonFiniteError
from sinelr.omega_record import record_omegas
from sinelr.plan import RunPlan, RunRecord, resolve
from sinelr.report.publish import publish_to_wandb
from sinelr.resolvers import register_resolvers
from sinelr.results import RESULTS_FILE, RunResult, Selection
from sinelr.resume import completed_result
from sinelr.sharding import gathered_rank_diagnostics
from sinelr.task import RunContext, Task
from sinelr.trainer import run_labels, trainer_factory
from sinelr.vector_math import settle_vector_math

log = logging.getLogger(__name__)


def full_rank_total(task: Task) -> int:
    """Parameters of the dense network, counted on the meta device (no memory, no RNG draws)."""
    with torch.device("meta"):
        dense = task.build_model(None)
    return 0 if dense is None else sum(p.numel() for p in dense.parameters())


def run(cfg: DictConfig, output_dir: str | Path) -> RunResult:
    """Run one configured experiment and write ``output_dir/results.json``.

    With ``skip_done=true``, a completed results.json of the same configuration already in
    ``output_dir`` is returned as it is, and nothing runs.
    """
    register_resolvers()
    record = RunRecord.read(cfg, Path(output_dir))
    if record.skip_done:
        done = completed_result(record.output_dir, record.fingerprints.result)
        if done is not None:
            log.info(
                "skip_done: %s already completed (%s = %s); not run again",
                record.output_dir,
                done.metric.name,
                done.metric.value,
            )
            return done
    result = record.result
    model: nn.Module | None = None
    try:
        settle_vector_math()  # before any parallel CPU op: the same seed must give the same run
        plan = resolve(record)
        model = build(plan)
        if plan.dry_run:
            result.status = "dry_run"
        else:
            train(plan, model)
        return result
    except BaseException as error:
        result.status = "failed"
        result.error = f"{type(error).__name__}: {error}"
        raise
    finally:
        finalise(record, model)


def build(plan: RunPlan) -> nn.Module | None:
    """The task's network as the plan factorises it, its parameters counted into the result.

    A dry run only counts: on the meta device a pretrained 8B network takes no memory and no
    weights are read (``build_model`` builds it from its configuration).
    """
    result = plan.record.result
    dense_total = full_rank_total(plan.task)
    L.seed_everything(plan.seed, workers=True, verbose=False)
    with torch.device("meta") if plan.dry_run else contextlib.nullcontext():
        model = plan.task.build_model(plan.lowrank)
    result.params = count_parameters(model, dense_total)
    record_omegas(result, model)
    log.info(
        "%s %s rank=%s omega=%s: %d parameters (%d trainable, %.2f%% of full rank)",
        result.task_config["name"],
        result.method,
        result.rank,
        result.omega,
        result.params.total,
        result.params.trainable,
        100 * result.params.compression_rate(result.adapter is not None),
    )
    return model


def train(plan: RunPlan, model: nn.Module | None) -> None:
    """Train and score ``model``; a completed result with the task's metrics."""
    record, result = plan.record, plan.record.result
    ckpt_path = None
    if plan.resume is not None:
        ckpt_path = result.resumed_from = str(plan.resume.path)
        log.info("resuming from %s", ckpt_path)
    ctx = RunContext(
        output_dir=record.output_dir,
        data_dir=plan.data_dir,
        cache_dir=plan.cache_dir,
        seed=plan.seed,
        make_trainer=trainer_factory(
            plan.trainer,
            plan.loggers,
            record.output_dir,
            record.fingerprints.checkpoint,
            plan.checkpoint_every,
            divergence_hint=f"omega={result.omega}, {plan.divergence_settings}",
            labels={**run_labels(result), "resume_from": ckpt_path},
        ),
        ckpt_path=ckpt_path,
    )
    outcome = plan.task.run(model, ctx)
    result.metrics = outcome.metrics
    result.steps = outcome.steps
    value = outcome.metrics.get(plan.task.metric)
    if value is None or not math.isfinite(value):
        raise NonFiniteError(f"{plan.task.metric} is {value}: the run produced no valid result")
    result.metric.value = value
    result.selection = selection(plan.task, outcome.metrics)
    result.status = "completed"


def selection(task: Task, metrics: dict[str, float]) -> Selection:
    """What a search reads of this run: the validation metric where the task validates on data
    its test never sees, else the test metric itself, marked as such."""
    if not task.validates_apart:
        return Selection(task.metric, metrics.get(task.metric), task.higher_is_better, False)
    name = task.selection_metric
    if name not in metrics:
        raise KeyError(f"{name} was not logged by validation: the run cannot be selected on")
    return Selection(name, metrics[name], task.selection_higher_is_better, True)


def finalise(record: RunRecord, model: nn.Module | None) -> None:
    """Record the run, whatever its outcome: rank diagnostics of a completed one, the wall
    time, the provenance (with each earlier part's, for a resumed run), results.json (rank 0
    only under DDP), and W&B if asked for."""
    result = record.result
    if model is not None and result.status == "completed":
        result.diagnostics = {"rank": gathered_rank_diagnostics(model)}
        _log_diagnostics(result.diagnostics["rank"])
    record_omegas(result, model)  # a learnt ω as it ended
    earlier = []
    if result.resumed_from is not None:  # <run dir>/checkpoints/last.ckpt: that run's record
        earlier = provenance.earlier_parts(Path(result.resumed_from).parents[1] / RESULTS_FILE)
    result.provenance = provenance.collect(
        record.command_line, record.precision, record.started_at, earlier
    )
    result.wall_time_s = time.perf_counter() - record.started
    if rank_zero_only.rank == 0:
        path = result.write(record.output_dir)
        log.info("%s: %s", result.status, path)
        publish_to_wandb(record.config, run_labels(result), result, record.output_dir)


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
