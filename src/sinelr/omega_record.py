"""Each sine layer's ω, as results.json and checkpoints record it (docs/contract.md).

A layer's ω is known only once it is built (``omega=auto`` decides per layer) and a learnt one
only once it has trained: the driver records it after building and again at the end, and
every checkpoint keeps the ω each layer started from, to rebuild the run from.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from torch import nn

from sinelr.layers.sine import SineActivated

if TYPE_CHECKING:
    from sinelr.results import RunResult


def sine_layers(model: nn.Module) -> dict[str, SineActivated]:
    """Every sine layer of ``model``, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SineActivated)}


def start_omegas(layers: dict[str, SineActivated]) -> dict[str, float]:
    """The ω each of :func:`sine_layers` was built with (where a learnt ω started)."""
    return {name: float(layer.omega) for name, layer in layers.items()}


def layer_omegas(layers: dict[str, SineActivated]) -> dict[str, float]:
    """The ω each of :func:`sine_layers` applies now (learnt or fixed)."""
    return {name: layer.current_omega() for name, layer in layers.items()}


def record_omegas(result: RunResult, model: nn.Module | None) -> None:
    """Put each sine layer's ω into ``result`` (docs/contract.md): ``omega_per_layer`` now,
    ``omega_start_per_layer`` where ω is learnt, and ``omega`` the median of the starting
    values. Called once the model is built and again at the end, for the learnt values."""
    layers = {} if model is None else sine_layers(model)
    if not layers:
        return
    start = start_omegas(layers)
    result.omega = statistics.median(start.values())
    result.omega_per_layer = layer_omegas(layers)
    if any(layer.log_omega is not None for layer in layers.values()):
        result.omega_start_per_layer = start
