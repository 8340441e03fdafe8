"""``omega=auto``: the rule that gives each layer its ω from what is known before training.
The derivation, with every constant, is docs/omega.md. What the rule reads of the run (the
task's learning rate, the steps it will take) is :mod:`sinelr.schedule`'s; the record of each
layer's ω in results.json is :mod:`sinelr.omega_record`'s.

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
from dataclasses import dataclass, replace

from sinelr.errors import InputError
from sinelr.layers import LOWRANK_LAYERS, LowRankConfig, get_lowrank_class, method_names
from sinelr.layers.config import AutoOmega
from sinelr.rounding import round_significant

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
            raise InputError(
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
            raise InputError(
                f"the saved run records no ω for layer {name} (it has {', '.join(chosen)}): "
                "rebuild it with the model and targets it was trained with"
            )
        return replace(config, omega=chosen[name])
    cls = get_lowrank_class(config.variant)
    if not cls.omega_auto:
        raise InputError(
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
