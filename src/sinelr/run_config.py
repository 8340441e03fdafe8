"""From the command line's keys to what a run is built from: ω as a number, the layer config.

Kept apart from the driver so that whatever rebuilds a run's network from its saved settings
(export, benchmarks, tests) builds it exactly as the run did, without running anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sinelr.errors import InputError
from sinelr.layers import LowRankConfig, variant_name
from sinelr.layers.config import AutoOmega
from sinelr.paper import paper_omega
from sinelr.schedule import LearningSchedule, auto_request

log = logging.getLogger(__name__)


def resolve_number(omega: Any) -> float | None:
    """``omega`` if it is a number, None for null, ``paper`` and ``auto`` (numbers only once
    the task, or each layer, is known); an error for anything else."""
    if omega is None or omega in ("paper", "auto"):
        return None
    if isinstance(omega, bool) or not isinstance(omega, int | float):
        raise InputError(
            f"omega must be a number, null or 'paper' (the paper's ω), or 'auto' (chosen per "
            f"layer, docs/omega.md), got {omega!r}"
        )
    return float(omega)


def resolve_omega(omega: Any, rank: int | None, task: str, adapter: str | None) -> float | None:
    """``omega`` as a number: ``paper`` looks up the paper's ω (docs/method.md); null stays null."""
    if omega == "paper" and rank is not None:
        return paper_omega(task, rank, adapter)
    return resolve_number(omega) if rank is not None else None


def lowrank_config(
    cfg: DictConfig,
    task_name: str,
    schedule: LearningSchedule | None = None,
    chosen: Mapping[str, float] | None = None,
) -> LowRankConfig | None:
    """The factorised layers the command line asks for; None for the dense baseline.

    ``omega=auto`` becomes an :class:`~sinelr.layers.config.AutoOmega` holding ``schedule``'s
    learning rate and the run's planned steps (``Task.learning_schedule``; without it the rule
    knows neither), which ``apply_lowrank`` turns into each layer's ω. ``chosen``, the ω each
    layer of a saved ``omega=auto`` run got, rebuilds that run instead: the rule is not asked.
    """
    rank, adapter = cfg.rank, cfg.get("adapter")
    if rank is None:
        if cfg.omega is not None:
            log.warning("omega=%s ignored: rank=null is the full-rank baseline", cfg.omega)
        return None
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise InputError(f"rank must be a positive integer or null, got {rank!r}")
    omega: float | AutoOmega | None = resolve_omega(cfg.omega, rank, task_name, adapter)
    if cfg.omega == "auto":
        omega = (
            AutoOmega(chosen=tuple(sorted(chosen.items())))
            if chosen
            else auto_request(schedule, cfg.get("trainer") or {}, task_name)
        )
    settings = OmegaConf.to_container(cfg.lowrank, resolve=True)
    known = {f.name for f in fields(LowRankConfig)} - {"rank", "omega"}
    if unknown := sorted(settings.keys() - known):
        raise InputError(
            f"unknown setting lowrank.{unknown[0]}; lowrank.* takes {', '.join(sorted(known))}"
        )
    scratch = settings.pop("variant", None)  # absent from fingerprints saved before it existed
    return LowRankConfig(
        variant=variant_name(rank, omega, adapter, scratch),
        rank=rank,
        omega=omega,
        **settings,
    )
