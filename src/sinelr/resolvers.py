"""The interpolations sinelr's configs use: ``${mul:...}``, ``${where_read:...}`` and
``${fast_precision:...}``."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sinelr.presets import fast_precision


def _mul(*factors: float | None) -> float | None:
    """``${mul:2,${rank}}``: a setting that scales with another (LoRA's ``alpha = 2·rank``);
    null if any factor is (``rank=null``)."""
    return None if any(f is None for f in factors) else math.prod(factors)


def _where_read(setting: str, value: Any, *, _root_: DictConfig) -> Any:
    """``${where_read:detach_norm,true}``: ``value`` where the run's variant reads ``setting``,
    :class:`LowRankConfig`'s default where it does not.

    A preset gives the paper's settings for every method of its task in the one ``lowrank``
    group (DoRA's detached norm beside LoRA's runs); this keeps such a setting from being an
    error for a variant that has no use for it. Given on the command line, it still is one.
    """
    from sinelr.layers import LOWRANK_LAYERS, LowRankConfig, variant_name

    try:
        omega = None if _root_.omega is None else 1.0  # only "plain or sine" matters here
        scratch = _root_.lowrank.get("variant")
        name = variant_name(_root_.rank, omega, _root_.get("adapter"), scratch)
    except ValueError:
        return value  # a bad name: lowrank_config reports it, with the command line's words
    cls = LOWRANK_LAYERS.get(name)
    if cls is not None and setting in cls.hyperparameters:
        return value
    return {field.name: field.default for field in fields(LowRankConfig)}[setting]


def register_resolvers() -> None:
    """The interpolations sinelr's configs use (``${mul:...}``, ``${where_read:...}``,
    ``${fast_precision:...}``), for whoever resolves one.

    Called, not run on import: run.py and the driver register them before a config is read,
    and a tool that resolves a composed config itself calls this first. Cheap to import (torch
    loads only when a resolver runs), so that run.py's ``--help`` stays quick.
    """
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", _mul)
    if not OmegaConf.has_resolver("where_read"):
        OmegaConf.register_new_resolver("where_read", _where_read)
    if not OmegaConf.has_resolver("fast_precision"):
        OmegaConf.register_new_resolver("fast_precision", fast_precision)
