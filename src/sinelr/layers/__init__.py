"""Factorised layers: one class per variant, selected by name from :data:`LOWRANK_LAYERS`.

Importing this package imports every variant's module, so the registry holds them all.
"""

from sinelr.layers.adapters import DoRALinear, LoRALinear, SineDoRALinear, SineLoRALinear
from sinelr.layers.base import (
    LowRankLayer,
    method_names,
    plain_variants,
    register_lowrank,
    sine_twin,
    unregister_lowrank,
    variant_name,
)
from sinelr.layers.config import LowRankConfig
from sinelr.layers.functional import blockwise_linear, sine_weight
from sinelr.layers.hira import HiRALinear, SineHiRALinear
from sinelr.layers.loraxs import LoRAXSLinear, SineLoRAXSLinear
from sinelr.layers.pissa import PiSSALinear, SinePiSSALinear
from sinelr.layers.registry import LOWRANK_LAYERS, get_lowrank_class
from sinelr.layers.scratch import LowRankLinear, SineLowRankLinear
from sinelr.layers.sine import GainRule
from sinelr.layers.vera import SineVeRALinear, VeRALinear

__all__ = [
    "LOWRANK_LAYERS",
    "DoRALinear",
    "GainRule",
    "HiRALinear",
    "LoRALinear",
    "LoRAXSLinear",
    "LowRankConfig",
    "LowRankLayer",
    "LowRankLinear",
    "PiSSALinear",
    "SineDoRALinear",
    "SineHiRALinear",
    "SineLoRALinear",
    "SineLoRAXSLinear",
    "SineLowRankLinear",
    "SinePiSSALinear",
    "SineVeRALinear",
    "VeRALinear",
    "blockwise_linear",
    "get_lowrank_class",
    "method_names",
    "plain_variants",
    "register_lowrank",
    "sine_twin",
    "sine_weight",
    "unregister_lowrank",
    "variant_name",
]
