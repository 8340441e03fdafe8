"""``omega=auto``: ω per layer from what is known before training, and the record of each
layer's ω in results.json. The derivation, with every constant, is docs/omega.md.

The rule, for a layer ``sin(ω·L R)/g`` with ``L`` ``d_out × k`` (``U``, or an adapter's ``B``)
and ``R`` ``k × d_in`` (``V`` or ``A``), entries of RMS ``σ_L`` and ``σ_R``::

    ω = min(φ* / σ_P,  ε / (lr · s)),   σ_P = √k · σ_L · σ_R,   s = √(k · (σ_L² + σ_R²))

``σ_P`` is the RMS of an entry of ``L R``, so ``φ*/σ_P`` is the ω whose phases ``ω·L R`` spread
by ``φ*``, the spread at which half of the sine's energy has left the rank-k linear part
(:data:`PHASE_SPREAD`). ``lr·s`` is the RMS change of an entry of ``L R`` in one Adam step
(each factor entry moves by about ``lr``), so ``ε/(lr·s)`` is the largest ω whose phases move
by at most ``ε`` per step (:data:`PHASE_STEP`). A factor that starts at zero (an adapter's
``B``) has as its scale the most Adam can move it over the run, ``lr × steps``.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lightning.pytorch.accelerators import CUDAAccelerator
from torch import nn

from sinelr.layers import LOWRANK_LAYERS, LowRankConfig, get_lowrank_class, method_names
from sinelr.layers.config import AutoOmega
from sinelr.layers.sine import SineActivated

if TYPE_CHECKING:
    from sinelr.results import RunResult

log = logging.getLogger(__name__)

#: The largest phase change per optimiser step, in radians, at which a step still follows the
#: sine's first-order model: ``sin(φ+δ) − sin φ = cos φ·δ − sin φ·δ²/2 + …``, and the
#: second-order term stays under 10 % of the first while ``δ/2 ≤ 0.1`` (docs/omega.md).
PHASE_STEP = 0.2


def linear_energy_share(spread: float) -> float:
    """The share of ``E[sin(x)²]`` in the part linear in ``x``, for ``x ~ N(0, spread²)``.

    ``sin x = a·x + r`` with ``a = E[x sin x]/E[x²] = exp(−σ²/2)``: the linear part has energy
    ``σ² e^{−σ²}``, the whole ``(1 − e^{−2σ²})/2``. For ``x = ω·L R`` the linear part is
    ``ω·a·L R``, of rank k; the rest is what raises the rank (docs/omega.md).
    """
    if spread <= 0:
        return 1.0
    variance = spread * spread
    return 2 * variance * math.exp(-variance) / -math.expm1(-2 * variance)


def half_linear_spread() -> float:
    """The phase spread at which :func:`linear_energy_share` is one half (bisection)."""
    low, high = 0.0, 10.0  # the share falls monotonically from 1 to 0 on this interval
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if linear_energy_share(middle) > 0.5 else (low, middle)
    return (low + high) / 2


#: φ*: the RMS phase at which half of ``sin(ω·L R)``'s energy lies outside its rank-k linear
#: part, about 1.476 rad.
PHASE_SPREAD = half_linear_spread()


def kaiming_uniform_std(fan_in: int) -> float:
    """RMS of an entry drawn as ``nn.Linear`` draws its weight (``kaiming_uniform_(a=√5)``):
    uniform in ``±1/√fan_in``, so ``1/√(3·fan_in)``."""
    return 1.0 / math.sqrt(3 * fan_in)


def factor_stds(adapter: bool, d_in: int, rank: int) -> tuple[float, float]:
    """Initial RMS of the left and right factors, as the layers draw them.

    From scratch ``U`` (``d_out × k``, fan-in k) and ``V`` (fan-in ``d_in``) are drawn like an
    ``nn.Linear`` weight (src/sinelr/layers/scratch.py); an adapter's ``A`` is too and its
    ``B`` is zero (src/sinelr/layers/adapters.py).
    """
    right = kaiming_uniform_std(d_in)
    return (0.0 if adapter else kaiming_uniform_std(rank)), right


def auto_variants() -> list[str]:
    """The registered sine variants ``omega=auto`` gives an ω, in the report's order: those
    whose factors start as :func:`factor_stds` says (their class's ``omega_auto``)."""
    auto = {n for n, c in LOWRANK_LAYERS.items() if c.sine_of is not None and c.omega_auto}
    return [name for name in method_names() if name in auto]


@dataclass(frozen=True)
class OmegaChoice:
    """What the rule decided for one layer, and the two bounds it chose between."""

    omega: float
    #: ``φ*/σ_P``: the ω at which the phases spread by φ*.
    spread_omega: float
    #: ``ε/(lr·s)``: the largest ω whose phase step stays under ε; None if lr is unknown.
    step_omega: float | None


def round_significant(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` significant figures: the rule is not more precise than that."""
    return float(f"{value:.{digits - 1}e}")


def auto_omega(
    d_in: int, rank: int, adapter: bool, lr: float | None, steps: int | None
) -> OmegaChoice:
    """ω for one layer by the rule of the module docstring, to 3 significant figures.

    From scratch, without ``lr``, only the spread bound applies (the step count never enters:
    the spread is the initial one). An adapter's zero-initialised ``B`` has a scale only when
    ``lr`` and ``steps`` are both known; without them the spread bound, which decides for
    adapters, cannot be had, and an error says what to give instead.
    """
    left, right = factor_stds(adapter, d_in, rank)
    if left == 0.0:
        if lr is None or steps is None:
            missing, fix = (
                ("the planned step count", "trainer.max_steps=<n> or omega=<number>")
                if lr is not None
                else ("the learning rate", "omega=<number>")
            )
            raise ValueError(
                f"omega=auto for an adapter needs {missing}, which this task cannot tell "
                f"before training: give {fix}"
            )
        left = lr * steps  # the furthest Adam moves an entry: every step of size lr, one sign
    spread_omega = PHASE_SPREAD / (math.sqrt(rank) * left * right)
    step_omega = None
    if lr is not None:
        step_omega = PHASE_STEP / (lr * math.sqrt(rank * (left * left + right * right)))
    omega = spread_omega if step_omega is None else min(spread_omega, step_omega)
    return OmegaChoice(round_significant(omega), spread_omega, step_omega)


def config_for_layer(config: LowRankConfig, name: str, d_out: int, d_in: int) -> LowRankConfig:
    """``config`` with ``omega=auto`` turned into this layer's number (logged with its bounds);
    any other ``config`` unchanged. ``omega=auto`` for a variant whose start the rule does not
    know (its class's ``omega_auto``) is an error: an ω from another start's scale would be
    arbitrary."""
    request = config.omega
    if not isinstance(request, AutoOmega):
        return config
    if request.chosen is not None:
        chosen = dict(request.chosen)
        if name not in chosen:
            raise ValueError(
                f"the saved run records no ω for layer {name} (it has {', '.join(chosen)}): "
                "rebuild it with the model and targets it was trained with"
            )
        return replace(config, omega=chosen[name])
    cls = get_lowrank_class(config.variant)
    if not cls.omega_auto:
        raise ValueError(
            f"omega=auto has no rule for {config.variant}: the rule (docs/omega.md) takes the "
            "factors' scale from a start drawn like an nn.Linear weight (an adapter's B at 0), "
            f"which {cls.sine_of} does not use; omega=auto supports "
            f"{', '.join(auto_variants())}. Give omega=<number>"
        )
    adapter = cls.kind == "adapter"
    choice = auto_omega(d_in, config.rank, adapter, request.lr, request.steps)
    log.info(
        "omega=auto: %s (%d x %d, rank %d) gets omega %g (spread bound %s, step bound %s)",
        name,
        d_out,
        d_in,
        config.rank,
        choice.omega,
        _bound(choice.spread_omega),
        _bound(choice.step_omega),
    )
    return replace(config, omega=choice.omega)


def _bound(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def planned_steps(
    steps_per_epoch: int | None, max_epochs: int | None, max_steps: int | None
) -> int | None:
    """Optimiser steps a Lightning run with these limits takes, or an upper bound; None if
    neither limit can be evaluated (``-1`` or None is no limit, as in Lightning)."""
    limits = []
    if max_steps is not None and max_steps >= 0:
        limits.append(max_steps)
    if max_epochs is not None and max_epochs >= 0 and steps_per_epoch is not None:
        limits.append(max_epochs * steps_per_epoch)
    return min(limits) if limits else None


@dataclass(frozen=True)
class LearningSchedule:
    """What a task knows of its optimiser before training (``Task.learning_schedule``): the
    peak learning rate, optimiser steps per epoch and the epochs it fixes itself (None where
    unknown, or left to ``trainer.max_epochs``)."""

    lr: float
    steps_per_epoch: int | None = None
    epochs: int | None = None


def batches_per_step(trainer: Mapping[str, Any]) -> int:
    """How many of a task's batches one optimiser step consumes: one per data-parallel process
    (``devices × num_nodes``; ``devices=auto`` or ``-1`` on a GPU trainer is every visible GPU)
    times ``accumulate_grad_batches``. A task counts its batches for one process."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, list | tuple):
        processes = len(devices)
    elif devices in ("auto", -1, "-1"):
        gpu = str(trainer.get("accelerator", "cpu")) in ("gpu", "cuda", "auto")
        processes = max(CUDAAccelerator.auto_device_count(), 1) if gpu else 1
    else:
        processes = int(devices)
    return (
        processes
        * int(trainer.get("num_nodes", 1))
        * int(trainer.get("accumulate_grad_batches", 1))
    )


def auto_request(
    schedule: LearningSchedule | None, trainer: Mapping[str, Any], task: str
) -> AutoOmega:
    """``omega=auto`` with the task's learning rate and the run's planned steps, each None
    (and said in the log) where the task cannot tell before training. Under data parallelism
    an epoch takes fewer steps (:func:`batches_per_step`): an adapter's ω grows as ``1/steps``."""
    if schedule is None:
        log.info("omega=auto: task %s does not say its learning rate or step count", task)
        return AutoOmega()
    epochs = schedule.epochs if schedule.epochs is not None else trainer.get("max_epochs")
    per_epoch = schedule.steps_per_epoch
    if per_epoch is not None:
        per_epoch = math.ceil(per_epoch / batches_per_step(trainer))
    steps = planned_steps(per_epoch, epochs, trainer.get("max_steps"))
    if steps is None:
        log.info("omega=auto: task %s cannot count this run's steps before training", task)
    return AutoOmega(lr=schedule.lr, steps=steps)


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
