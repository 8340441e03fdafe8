"""Factorised layers: one class per variant, selected by name from :data:`LOWRANK_LAYERS`."""

from sinelr.layers.adapters import DoRALinear, LoRALinear, SineDoRALinear, SineLoRALinear
from sinelr.layers.base import LOWRANK_LAYERS, LowRankLayer, get_lowrank_class, register_lowrank
from sinelr.layers.config import ADAPTERS, LowRankConfig, variant_name
from sinelr.layers.functional import blockwise_linear, sine_weight
from sinelr.layers.scratch import LowRankLinear, SineLowRankLinear

__all__ = [
    "ADAPTERS",
    "LOWRANK_LAYERS",
    "DoRALinear",
    "LoRALinear",
    "LowRankConfig",
    "LowRankLayer",
    "LowRankLinear",
    "SineDoRALinear",
    "SineLoRALinear",
    "SineLowRankLinear",
    "blockwise_linear",
    "get_lowrank_class",
    "register_lowrank",
    "sine_weight",
    "variant_name",
]
