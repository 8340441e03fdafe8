"""What every sine variant shares: a frequency ``ω`` (fixed, or learnt on a log scale) and a
gain ``g`` on a factor product, whose default each variant declares (:class:`GainRule`)."""

from __future__ import annotations

import enum
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sinelr.layers.config import DEFAULT_OMEGA_LR, LowRankConfig
from sinelr.layers.functional import sine_weight

#: The settings a sine layer's constructor takes beside its plain variant's: registration adds
#: them to its plain variant's ``hyperparameters`` to make a sine twin's.
SINE_SETTINGS = frozenset({"omega", "gain", "learn_omega", "omega_lr"})


class GainRule(enum.Enum):
    """The default gain ``g`` of a sine twin (``lowrank.gain=null``), declared on its class as
    :attr:`SineActivated.gain_rule`; an explicit ``lowrank.gain`` replaces it.

    ``sin`` has amplitude 1 whatever ω, so ``1/g`` is the most the sine can contribute per
    entry: ``g`` puts that ceiling on the scale of what the sine stands for. The paper (A.2)
    takes ``g = √d_in``, "analogously to" Kaiming initialisation: a fan-in-initialised weight
    (``nn.Linear``'s) has entries of order ``1/√d_in``, so a sine that *is* a weight, or is
    *added* to one, can then move each entry by up to a weight's own size. The same factor
    ``1/√d_in`` tames the ω that the sine's derivative carries (``∂ sin(ω·P)/∂P = ω cos(ω·P)``).

    HiRA's product is no weight but a *relative* change: ``ΔW = W0 ⊙ BA`` changes ``W0_ij`` by
    the fraction ``(BA)_ij``, and ``W0`` already gives the update a weight's scale. Dividing the
    sine by ``√d_in`` as well counts that scale twice: no entry could move by more than
    ``1/√d_in`` of itself (5 % at ``d_in = 384``), whatever ω, and the derivative would carry
    ``ω·|W0|/√d_in``, of order ``ω/d_in``. With ``g = 1`` the sine takes the place of ``BA``
    unscaled. While the phases are small, ``W0 ⊙ sin(ω·BA) ≈ W0 ⊙ (ω·BA)``: sine HiRA is plain
    HiRA with its product scaled by ω, as sine LoRA is LoRA with its product scaled by
    ``ω/√d_in``, so it has plain HiRA's room at the same phase; each entry can move by up to its
    own size; and the derivative carries ``ω·|W0|``, of order ``ω/√d_in``, sine LoRA's factor
    (docs/method.md, "Gain per sine twin").
    """

    #: ``g = √d_in``: the sine is a weight, or is added to one.
    FAN_IN = "sqrt(d_in)"
    #: ``g = 1``: the sine is a relative change, multiplied into ``W0`` entry by entry.
    UNIT = "1"

    def gain(self, in_features: int) -> float:
        """``g`` for a layer of ``in_features`` inputs."""
        return math.sqrt(in_features) if self is GainRule.FAN_IN else 1.0


class SineActivated:
    """Mixin for a layer whose factor product ``P`` enters as ``sin(ω·P) / g``.

    ``ω`` is fixed unless ``learn_omega`` (docs/omega.md); ``g`` is fixed, ``gain`` where given,
    else the registered variant's :attr:`gain_rule`.
    """

    #: How ``g`` follows from the layer's shape when ``lowrank.gain`` is null. Every sine twin
    #: declares it on its own class (registration checks): a subclass may change what the sine
    #: stands for, as HiRA's relative change differs from LoRA's added weight.
    gain_rule: ClassVar[GainRule]
    in_features: int
    variant: str
    log_omega: nn.Parameter | None

    def __init__(
        self,
        *args: Any,
        omega: float,
        gain: float | None = None,
        learn_omega: bool = False,
        omega_lr: float = DEFAULT_OMEGA_LR,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.omega = float(omega)
        self.gain = float(gain) if gain is not None else self.gain_rule.gain(self.in_features)
        # A learnt ω is ``exp(log_omega)``; the sine keeps ``self.omega`` (the start) as its
        # constant and the left factor is scaled by ``exp(log_omega) / omega`` (see
        # :meth:`weight_params`), so the row-blocked backward needs no change and autograd
        # gives log ω its exact gradient through that scalar product.
        self.omega_lr = omega_lr if learn_omega else None
        if learn_omega:
            factor = self.factor_parameters()[0]
            dtype = torch.promote_types(factor.dtype, torch.float32)
            start = torch.tensor(math.log(self.omega), dtype=dtype, device=factor.device)
            self.log_omega = nn.Parameter(start)
        else:
            self.register_parameter("log_omega", None)

    @classmethod
    def _kwargs_from_config(cls, config: LowRankConfig) -> dict[str, Any]:
        """The declared settings, once ``omega`` is known to be a number."""
        if config.omega is None:
            raise ValueError(f"{cls.variant} needs omega; omega=null selects the plain variant")
        if not isinstance(config.omega, int | float):
            raise ValueError(
                f"{cls.variant} needs omega as a number; omega=auto is resolved per layer by "
                "sinelr.apply.apply_lowrank, which builds the layers"
            )
        return super()._kwargs_from_config(config)

    def current_omega(self) -> float:
        """ω as the layer applies it now: the fixed value, or ``exp(log_omega)`` if learnt
        (the starting value while the parameter has no data, on the meta device)."""
        if self.log_omega is None or self.log_omega.is_meta:
            return self.omega
        return math.exp(self.log_omega.item())

    def weight_params(self) -> tuple[Tensor, ...]:
        """The parent's weight parameters, the left factor (``U`` or ``B``, second to last)
        scaled by ``exp(log_omega) / omega`` where ω is learnt: ``sin(ω₀·(ω/ω₀)·U V)``."""
        params = super().weight_params()  # type: ignore[misc]
        if self.log_omega is None:
            return params
        *rest, left, right = params
        ratio = torch.exp(self.log_omega - math.log(self.omega))
        return (*rest, left * ratio.to(left.dtype), right)

    def sine(self, left: Tensor, right: Tensor, scale: float = 1.0) -> Tensor:
        """``scale · sin(ω · left @ right) / g``."""
        return sine_weight(left, right, self.omega, scale / self.gain)

    def extra_repr(self) -> str:
        learnt = ", learn_omega=True" if self.log_omega is not None else ""
        return f"{super().extra_repr()}, omega={self.omega:g}, gain={self.gain:g}{learnt}"
