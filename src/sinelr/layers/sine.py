"""What every sine variant shares: a frequency ``ω`` (fixed, or learnt on a log scale) and a
gain ``g`` on a factor product."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sinelr.layers.config import DEFAULT_OMEGA_LR, LowRankConfig
from sinelr.layers.functional import sine_weight

#: The settings a sine layer's constructor takes beside its plain variant's: every sine twin
#: declares them in its ``hyperparameters``, which is what it is built from.
SINE_SETTINGS = frozenset({"omega", "gain", "learn_omega", "omega_lr"})


class SineActivated:
    """Mixin for a layer whose factor product ``P`` enters as ``sin(ω·P) / g``.

    ``ω`` is fixed unless ``learn_omega`` (docs/omega.md); ``g`` is fixed and defaults to
    ``sqrt(d_in)``: the derivative of ``sin(ω·P)`` carries a factor ``ω``, and the gain keeps
    the effective learning rate of the factors in the range the optimiser was tuned for (paper,
    A.2).
    """

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
        self.gain = float(gain) if gain is not None else math.sqrt(self.in_features)
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
