"""The driver behind ``run.py``: config → model → training → results.json.

A run is four steps: :func:`~sinelr.plan.describe` resolves the command line into a plan,
:func:`build` makes and counts the network, :func:`train` trains and scores it, and
:func:`finalise` records the outcome. Every run writes results.json, whatever happens:
``dry_run`` after counting parameters, ``completed`` after training, ``failed`` with the error
before the exception propagates (and the process exits non-zero); then the run goes to W&B if
``logger=wandb``. Exceptions: ``skip_done=true`` keeps a completed results.json of the same
configuration untouched, and under DDP only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sinelr import provenance
from sinelr.accounting import count_parameters
from sinelr.callbacks import NonFiniteError
from sinelr.checkpoint import fingerprint_diff, result_fingerprint
from sinelr.omega import record_omegas
from sinelr.plan import RunPlan, command_line, describe, new_result
from sinelr.provenance import utc_now
from sinelr.report.publish import publish_to_wandb
from sinelr.resolvers import register_resolvers
from sinelr.results import RESULTS_FILE, RunResult, Selection
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
    register_resolvers()
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
    started_at = utc_now()
    settle_vector_math()  # before any parallel CPU op: the same seed must give the same run
    result = new_result(cfg, output_dir)
    model: nn.Module | None = None
    try:
        plan = describe(cfg, output_dir, result)
        model = build(plan, result)
        if cfg.dry_run:
            result.status = "dry_run"
        else:
            train(plan, model, result)
        return result
    except BaseException as error:
        result.status = "failed"
        result.error = f"{type(error).__name__}: {error}"
        raise
    finally:
        finalise(cfg, result, model, output_dir, start, started_at)


def trainer_precision(cfg: DictConfig) -> str | None:
    """The precision the trainer trains in (``bf16-mixed`` where the CPU has native bf16 and the
    preset asks for it), None for a task without a trainer."""
    precision = OmegaConf.select(cfg, "trainer.precision")
    return None if precision is None else str(precision)


def build(plan: RunPlan, result: RunResult) -> nn.Module | None:
    """The task's network as the plan factorises it, its parameters counted into ``result``.

    A dry run only counts: on the meta device a pretrained 8B network takes no memory and no
    weights are read (``build_model`` builds it from its configuration).
    """
    dense_total = full_rank_total(plan.task)
    L.seed_everything(plan.cfg.seed, workers=True, verbose=False)
    with torch.device("meta") if plan.cfg.dry_run else contextlib.nullcontext():
        model = plan.task.build_model(plan.lowrank)
    result.params = count_parameters(model, dense_total)
    record_omegas(result, model)
    log.info(
        "%s %s rank=%s omega=%s: %d parameters (%d trainable, %.2f%% of full rank)",
        plan.cfg.task.name,
        result.method,
        result.rank,
        result.omega,
        result.params.total,
        result.params.trainable,
        100 * result.params.compression_rate(result.adapter is not None),
    )
    return model


def train(plan: RunPlan, model: nn.Module | None, result: RunResult) -> None:
    """Train and score ``model``; a completed ``result`` with the task's metrics."""
    cfg = plan.cfg
    ckpt_path = None
    if plan.resume_from is not None:
        ckpt_path = result.resumed_from = str(plan.resume_from)
        log.info("resuming from %s", ckpt_path)
    hint = (
        f"omega={result.omega}, lowrank.gain={cfg.lowrank.gain or 'the variant default'}, "
        f"task.lr={cfg.task.get('lr', 'n/a')}"
    )
    ctx = RunContext(
        output_dir=plan.output_dir,
        data_dir=Path(cfg.paths.data_dir).expanduser(),
        cache_dir=Path(cfg.paths.cache_dir).expanduser(),
        seed=cfg.seed,
        make_trainer=trainer_factory(
            cfg,
            plan.output_dir,
            plan.fingerprint,
            plan.checkpoint_every,
            divergence_hint=hint,
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


def finalise(
    cfg: DictConfig,
    result: RunResult,
    model: nn.Module | None,
    output_dir: Path,
    start: float,
    started_at: str,
) -> None:
    """Record the run, whatever its outcome: rank diagnostics of a completed one, the wall
    time, the provenance (with each earlier part's, for a resumed run), results.json (rank 0
    only under DDP), and W&B if asked for."""
    if model is not None and result.status == "completed":
        result.diagnostics = {"rank": gathered_rank_diagnostics(model)}
        _log_diagnostics(result.diagnostics["rank"])
    record_omegas(result, model)  # a learnt ω as it ended
    earlier = []
    if result.resumed_from is not None:  # <run dir>/checkpoints/last.ckpt: that run's record
        earlier = provenance.earlier_parts(Path(result.resumed_from).parents[1] / RESULTS_FILE)
    result.provenance = provenance.collect(
        command_line(), trainer_precision(cfg), started_at, earlier
    )
    result.wall_time_s = time.perf_counter() - start
    if rank_zero_only.rank == 0:
        path = result.write(output_dir)
        log.info("%s: %s", result.status, path)
        publish_to_wandb(cfg, run_labels(result), result, output_dir)


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
