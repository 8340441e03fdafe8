"""From-scratch factorised layers: the dense weight is replaced, not adapted.

``LowRankLinear``: ``W = U V``. ``SineLowRankLinear``: ``W = sin(ω·U V) / g``, same parameters,
higher rank (Theorem 1). Both initialise ``U``, ``V`` and the bias the way ``nn.Linear`` does,
as the authors' code does.
"""

from __future__ import annotations

import math
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sinelr.layers.base import LowRankLayer, register_lowrank
from sinelr.layers.config import LowRankConfig
from sinelr.layers.functional import DEFAULT_BLOCK_ELEMS, VJP, sine_rows_vjp
from sinelr.layers.sine import GainRule, SineActivated


@register_lowrank("lowrank")
class LowRankLinear(LowRankLayer):
    """``W = U V``, applied as two thin matmuls ``U (V x)`` and never formed.

    A variant that puts a non-linearity on the product subclasses this, sets
    ``materialises_weight = True``, implements :meth:`weight_rows` and registers itself; the
    row-blocked training path and the inference cache come with it.
    """

    kind = "scratch"
    hyperparameters = frozenset()  # and fused, block_elems, which registration adds to all
    omega_auto = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        *,
        fused: bool = True,
        block_elems: int = DEFAULT_BLOCK_ELEMS,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.fused = fused
        self.block_elems = block_elems
        factory = {"device": device, "dtype": dtype}
        self.U = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.V = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.U, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.V, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, layer: nn.Linear, config: LowRankConfig) -> Self:
        return cls(
            layer.in_features,
            layer.out_features,
            config.rank,
            bias=layer.bias is not None,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
            **cls._kwargs_from_config(config),
        )

    def weight_params(self) -> tuple[Tensor, ...]:
        return (self.U, self.V)

    def weight_rows(self, rows: slice, U: Tensor, V: Tensor) -> Tensor:
        return U[rows] @ V

    def factor_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.U, self.V)

    def factorised_weight(self) -> Tensor:
        return self.weight_rows(slice(None), *self.weight_params())

    def effective_weight(self) -> Tensor:
        return self.factorised_weight()

    def factored_forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.V), self.U, self.bias)


@register_lowrank("sine_lowrank")
class SineLowRankLinear(SineActivated, LowRankLinear):
    """``W = sin(ω·U V) / g``: the parameters of ``U V``, a much higher rank."""

    materialises_weight = True
    gain_rule = GainRule.FAN_IN  # the sine is the weight

    def weight_rows(self, rows: slice, U: Tensor, V: Tensor) -> Tensor:
        return self.sine(U[rows], V)

    def weight_rows_vjp(self, rows: slice, U: Tensor, V: Tensor) -> tuple[Tensor, VJP]:
        return sine_rows_vjp(rows, U, V, self.omega, 1.0 / self.gain)
