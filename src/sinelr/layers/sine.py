"""What every sine variant shares: a fixed frequency ``ω`` and gain ``g`` on a factor product."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from sinelr.layers.config import LowRankConfig
from sinelr.layers.functional import sine_weight


class SineActivated:
    """Mixin for a layer whose factor product ``P`` enters as ``sin(ω·P) / g``.

    ``ω`` and ``g`` are fixed, not learned. ``g`` defaults to ``sqrt(d_in)``: the derivative of
    ``sin(ω·P)`` carries a factor ``ω``, and the gain keeps the effective learning rate of the
    factors in the range the optimiser was tuned for (paper, A.2).
    """

    in_features: int
    variant: str

    def __init__(self, *args: Any, omega: float, gain: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.omega = float(omega)
        self.gain = float(gain) if gain is not None else math.sqrt(self.in_features)

    @classmethod
    def _kwargs_from_config(cls, config: LowRankConfig) -> dict[str, Any]:
        if config.omega is None:
            raise ValueError(f"{cls.variant} needs omega; omega=null selects the plain variant")
        return {**super()._kwargs_from_config(config), "omega": config.omega, "gain": config.gain}

    def sine(self, left: Tensor, right: Tensor, scale: float = 1.0) -> Tensor:
        """``scale · sin(ω · left @ right) / g``."""
        return sine_weight(left, right, self.omega, scale / self.gain)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, omega={self.omega:g}, gain={self.gain:g}"
