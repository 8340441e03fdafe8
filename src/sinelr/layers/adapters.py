"""Adapters around a frozen ``nn.Linear``: LoRA, sine LoRA, DoRA, sine DoRA.

LoRA adds ``ΔW = (α/r)·B A``; sine LoRA ``ΔW = (α/r)·sin(ω·B A)/g``. ``B`` starts at zero, so
either starts as the pretrained layer. DoRA rescales ``W0 + ΔW`` row by row to a learned
magnitude ``m`` (one value per output feature, initialised to the rows' norms of ``W0``; this
is PEFT's orientation of the paper's column-wise norm). Every variant's ``ΔW`` is a weight, so
``merge`` folds the adapter into the base layer exactly (to float rounding).
"""

from __future__ import annotations

import math
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sinelr.layers.base import LowRankLayer, register_lowrank
from sinelr.layers.config import LowRankConfig
from sinelr.layers.functional import (
    DEFAULT_BLOCK_ELEMS,
    VJP,
    WeightFn,
    WeightVJPFn,
    autograd_vjp,
    blockwise_linear,
    matmul_dtype,
    sine_rows_vjp,
)
from sinelr.layers.sine import SineActivated


@register_lowrank("lora")
class LoRALinear(LowRankLayer):
    """``h = W0 x + (α/r)·B A dropout(x)``, applied as two thin matmuls.

    A variant whose update is not a plain product subclasses this, sets
    ``materialises_weight = True`` and overrides :meth:`delta_rows` (or :meth:`weight_rows`);
    it then gets the row-blocked training path, the inference cache and exact merging.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int,
        *,
        alpha: float | None = None,
        dropout: float = 0.0,
        fused: bool = True,
        block_elems: int = DEFAULT_BLOCK_ELEMS,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"{type(self).__name__} wraps an nn.Linear, got {type(base_layer)}")
        base_layer.requires_grad_(False)
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.rank = rank
        self.alpha = float(alpha) if alpha is not None else float(rank)
        self.scaling = self.alpha / rank
        self.fused = fused
        self.block_elems = block_elems
        self.merged = False
        # The factors are float32 even on a half-precision base (bf16 LLM weights): AdamW's
        # small steps vanish in bf16's 8-bit mantissa, and the sine's phase ω·BA, with ω in the
        # hundreds, would be off by more than π. Products with the base weight promote to them.
        dtype = torch.promote_types(base_layer.weight.dtype, torch.float32)
        factory = {"device": base_layer.weight.device, "dtype": dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @classmethod
    def _kwargs_from_config(cls, config: LowRankConfig) -> dict[str, Any]:
        return {
            "alpha": config.alpha,
            "dropout": config.dropout,
            "fused": config.fused,
            "block_elems": config.block_elems,
        }

    @classmethod
    def from_linear(cls, layer: nn.Linear, config: LowRankConfig) -> Self:
        return cls(layer, config.rank, **cls._kwargs_from_config(config))

    # The weight, row block by row block. Factors come in as arguments so the row-blocked
    # backward can rebuild a block from detached copies.
    def weight_params(self) -> tuple[Tensor, ...]:
        return (self.base_layer.weight, self.lora_B, self.lora_A)

    def delta_rows(self, rows: slice, B: Tensor, A: Tensor) -> Tensor:
        return self.scaling * (B[rows] @ A)

    def weight_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        return W0[rows] + self.delta_rows(rows, *factors[-2:])

    def update_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        """``W'[rows] - W0[rows]``: what the adapter adds to the frozen layer."""
        return self.delta_rows(rows, *factors[-2:])

    # Backward of a block of :meth:`weight_rows` / :meth:`update_rows`: autograd unless a
    # variant has a cheaper closed form.
    def weight_rows_vjp(self, rows: slice, *params: Tensor) -> tuple[Tensor, VJP]:
        return autograd_vjp(self.weight_rows)(rows, *params)

    def update_rows_vjp(self, rows: slice, *params: Tensor) -> tuple[Tensor, VJP]:
        return autograd_vjp(self.update_rows)(rows, *params)

    def factor_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.lora_A, self.lora_B)

    def factorised_weight(self) -> Tensor:
        return self.delta_rows(slice(None), self.lora_B, self.lora_A)

    def dense_bias(self) -> Tensor | None:
        return self.base_layer.bias

    def effective_weight(self) -> Tensor:
        """``W0 + ΔW`` in the base layer's dtype, as :meth:`merge` would store it."""
        if self.merged:
            return self.base_layer.weight
        weight = self.weight_rows(slice(None), *self.weight_params())
        return weight.to(self.base_layer.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base_layer(x)
        if self.materialises_weight:
            return self._forward_materialised(x)
        # Factors in the matmul's dtype: what autocast does anyway, and a half-precision input
        # outside autocast meets half-precision factors (the rank-r casts cost nothing).
        A, B = (factor.to(matmul_dtype(x)) for factor in (self.lora_A, self.lora_B))
        lora = F.linear(F.linear(self.lora_dropout(x), A), B)
        return self.base_layer(x) + self.scaling * lora

    def _forward_materialised(self, x: Tensor) -> Tensor:
        bias = self.base_layer.bias
        weight = self._cached_weight()
        if weight is not None:
            return F.linear(x, weight, bias)
        x_drop = self.lora_dropout(x)
        if x_drop is x:
            # No dropout: one matmul with the whole adapted weight instead of two.
            if not self.fused:
                return F.linear(x, self.effective_weight(), bias)
            return self._blockwise(x, self.weight_rows, self.weight_rows_vjp, bias)
        # Dropout feeds the adapter only; the frozen layer sees the clean input (as PEFT).
        if not self.fused:
            update = self.update_rows(slice(None), *self.weight_params())
            return self.base_layer(x) + F.linear(x_drop, update.to(matmul_dtype(x)))
        return self.base_layer(x) + self._blockwise(x_drop, self.update_rows, self.update_rows_vjp)

    def _blockwise(
        self, x: Tensor, rows_fn: WeightFn, rows_vjp: WeightVJPFn, bias: Tensor | None = None
    ) -> Tensor:
        return blockwise_linear(
            x, rows_fn, self.weight_params(), self.out_features, bias, self.block_elems, rows_vjp
        )

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight: one matmul at inference, no adapter cost."""
        if self.merged:
            return
        self.base_layer.weight.copy_(self._merged_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`, to float rounding, to go on training the adapter."""
        if not self.merged:
            return
        self.base_layer.weight.copy_(self._unmerged_weight())
        self.merged = False
        self._weight_cache = None

    def _merged_weight(self) -> Tensor:
        return self.weight_rows(slice(None), *self.weight_params())

    def _unmerged_weight(self) -> Tensor:
        return self.base_layer.weight - self.factorised_weight()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha:g}, merged={self.merged}"


class SineDelta(SineActivated):
    """Mixin: the adapter's update is ``ΔW = (α/r)·sin(ω·B A)/g``."""

    materialises_weight = True
    scaling: float

    def delta_rows(self, rows: slice, B: Tensor, A: Tensor) -> Tensor:
        return self.sine(B[rows], A, self.scaling)


@register_lowrank("sine_lora")
class SineLoRALinear(SineDelta, LoRALinear):
    """LoRA's parameters with a high-rank update; its blocks' backward is written out."""

    def _sine_rows_vjp(self, rows: slice, B: Tensor, A: Tensor, base: Tensor | None):
        scale = self.scaling / self.gain
        weight, vjp = sine_rows_vjp(rows, B, A, self.omega, scale, base)
        return weight, lambda grad: (None, *vjp(grad))

    def weight_rows_vjp(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> tuple[Tensor, VJP]:
        return self._sine_rows_vjp(rows, B, A, W0[rows])

    def update_rows_vjp(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> tuple[Tensor, VJP]:
        return self._sine_rows_vjp(rows, B, A, None)


@register_lowrank("dora")
class DoRALinear(LoRALinear):
    """``W' = m ⊙ (W0 + ΔW) / ||W0 + ΔW||``, the norm taken over each output row.

    The norm is differentiated through (not detached as DoRA's paper suggests for memory), so
    gradients are exact; the row-blocked path already keeps memory at LoRA's level.
    """

    materialises_weight = True

    def __init__(self, base_layer: nn.Linear, rank: int, **kwargs: Any) -> None:
        super().__init__(base_layer, rank, **kwargs)
        self.magnitude = nn.Parameter(base_layer.weight.detach().to(self.lora_A.dtype).norm(dim=1))
        self._merge_norm: Tensor | None = None

    def weight_params(self) -> tuple[Tensor, ...]:
        return (self.base_layer.weight, self.magnitude, self.lora_B, self.lora_A)

    def _direction_rows(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> Tensor:
        return W0[rows] + self.delta_rows(rows, B, A)

    def weight_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        magnitude, B, A = factors
        direction = self._direction_rows(rows, W0, B, A)
        return (magnitude[rows] / direction.norm(dim=1)).unsqueeze(1) * direction

    def update_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        return self.weight_rows(rows, W0, *factors) - W0[rows]

    def _merged_weight(self) -> Tensor:
        # Unmerging needs the row norms of W0 + ΔW, which the merged weight no longer holds.
        direction = self._direction_rows(
            slice(None), self.base_layer.weight, self.lora_B, self.lora_A
        )
        self._merge_norm = direction.norm(dim=1)
        return (self.magnitude / self._merge_norm).unsqueeze(1) * direction

    def _unmerged_weight(self) -> Tensor:
        assert self._merge_norm is not None
        direction = self.base_layer.weight * (self._merge_norm / self.magnitude).unsqueeze(1)
        self._merge_norm = None
        return direction - self.factorised_weight()


@register_lowrank("sine_dora")
class SineDoRALinear(SineDelta, DoRALinear):
    """DoRA with the sine update inside the normalisation (METHOD.md's consistent reading)."""
