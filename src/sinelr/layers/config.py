"""What a factorised layer is: the variant and its hyper-parameters, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from sinelr.errors import InputError
from sinelr.layers.functional import DEFAULT_BLOCK_ELEMS
from sinelr.layers.registry import LOWRANK_LAYERS, get_lowrank_class

# A learnt log ω's learning rate (lowrank.omega_lr), the same wherever a sine layer is built.
DEFAULT_OMEGA_LR = 1e-2


def _is_real(value: object) -> bool:
    """A finite int or float; bool is excluded, though Python counts it as an int."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_positive_number(value: object) -> bool:
    """Whether ``value`` is a finite number above zero.

    Checked by type first: values from the command line arrive as whatever YAML made of them,
    and ``"abc" > 0`` would raise a TypeError instead of the one-line error the caller gives.
    """
    return _is_real(value) and value > 0


def is_positive_integer(value: object) -> bool:
    """Whether ``value`` is an int above zero (not a bool, which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class AutoOmega:
    """``omega=auto``: ω is chosen per layer when the layer is built (:mod:`sinelr.omega`).

    Carries what the rule knows of the training: the optimiser's peak learning rate and the
    planned number of optimiser steps, each None where the task cannot say before training.
    Layers never see this: :func:`sinelr.apply.apply_lowrank` turns it into each layer's number.
    ``chosen`` holds the numbers a run's layers got, by module name, for rebuilding that run's
    network (export): they are taken as they are, the rule is not asked again.
    """

    lr: float | None = None
    steps: int | None = None
    chosen: tuple[tuple[str, float], ...] | None = None


@dataclass(frozen=True)
class LowRankConfig:
    """Hyper-parameters of one factorised layer.

    ``gain=None`` means the sine twin's own rule (its class's ``gain_rule``): ``sqrt(d_in)``, the
    authors' choice, where the sine is a weight or is added to one, and 1 for sine HiRA, whose
    sine is a relative change (:class:`~sinelr.layers.sine.GainRule`); a number is taken as it
    is. ``alpha=None`` means ``alpha = rank`` (adapter scaling 1) for every variant that reads
    one; a task's paper preset sets its recipe's α. ``fused`` selects the memory-lean sine path;
    ``fused=False`` is plain autograd, kept to compare against. ``detach_norm`` (DoRA and sine
    DoRA only) treats the row norms ``||W0 + ΔW||`` as a constant in the backward pass, as
    DoRA's paper (§4.3), PEFT and the sine paper's own code do; ``False`` differentiates through
    them (the exact gradient). The forward pass, and so ``merge``, is the same either way.

    ``omega`` is a number, None (plain variant) or :class:`AutoOmega` (resolved per layer by
    ``apply_lowrank``). ``learn_omega`` makes each sine layer's ω a parameter ``log_omega``
    (trained on a log scale from ``omega``); ``omega_lr`` is its learning rate, which
    :func:`sinelr.optim.separate_learnt_omega` gives it (docs/omega.md).

    ``variant`` must be registered, and every setting away from its default must be one the
    variant reads (its class's ``hyperparameters``): ``lowrank.dropout=0.1`` on a from-scratch
    run would change nothing but split the report's tables, so it is an error. The exception is
    ``fused`` and ``block_elems`` (how a weight is built, not what), which every variant takes so
    that a benchmark can set them alike (:data:`~sinelr.layers.base.ROW_BLOCK_SETTINGS`).
    """

    variant: str
    rank: int
    omega: float | AutoOmega | None = None
    gain: float | None = None
    alpha: float | None = None
    dropout: float = 0.0
    fused: bool = True
    block_elems: int = DEFAULT_BLOCK_ELEMS
    detach_norm: bool = False
    learn_omega: bool = False
    omega_lr: float = DEFAULT_OMEGA_LR

    def __post_init__(self) -> None:
        if not is_positive_integer(self.rank):
            raise InputError(
                f"rank must be a positive integer, got {self.rank!r}; "
                "use rank=null for the full-rank (dense) baseline"
            )
        if not isinstance(self.omega, AutoOmega | None) and not is_positive_number(self.omega):
            raise InputError(
                f"omega must be a positive number, got {self.omega!r}; "
                "use omega=null for the plain low-rank variant"
            )
        for name in ("gain", "alpha"):
            value = getattr(self, name)
            if value is not None and not is_positive_number(value):
                raise InputError(f"{name} must be a positive number or null, got {value!r}")
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        for name, meaning in (
            ("fused", "true: the memory-lean sine path, false: plain autograd"),
            (
                "detach_norm",
                "true: DoRA's norm as a constant in the backward pass, false: exact gradient",
            ),
            ("learn_omega", "true: ω trains on a log scale, false: ω stays fixed"),
        ):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise InputError(f"{name} must be true or false, got {value!r} ({meaning})")
        if self.learn_omega and self.omega is None:
            raise InputError(
                "learn_omega=true needs an omega to start from (a number, paper or auto); "
                "omega=null is the plain variant, which has no ω"
            )
        if not is_positive_number(self.omega_lr):
            raise InputError(f"omega_lr must be a positive number, got {self.omega_lr!r}")
        if not is_positive_integer(self.block_elems):
            raise InputError(f"block_elems must be a positive integer, got {self.block_elems!r}")
        self._check_variant_reads_settings()

    def _check_variant_reads_settings(self) -> None:
        """Raise if a setting differs from its default but the variant does not read it."""
        cls = get_lowrank_class(self.variant)
        ignored = {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name not in ("variant", "rank", *cls.hyperparameters)
            and getattr(self, field.name) != field.default
        }
        if ignored:
            given = ", ".join(f"{_key(name)}={value!r}" for name, value in ignored.items())
            reads = ", ".join(_key(name) for name in sorted(cls.hyperparameters)) or "none"
            readers = [
                name
                for name, other in LOWRANK_LAYERS.items()
                if other.sine_of is None and set(ignored) <= other.hyperparameters
            ]
            choose = f" ({', '.join(readers)})" if readers else ""
            raise InputError(
                f"variant {self.variant} does not read {given} (it reads {reads}): leave it at "
                f"its default, or choose a variant that reads it{choose}"
            )


def _key(setting: str) -> str:
    """A :class:`LowRankConfig` field as the command line names it (``lowrank.dropout``)."""
    return setting if setting == "omega" else f"lowrank.{setting}"
