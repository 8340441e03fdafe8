"""Adapters around a frozen ``nn.Linear``: LoRA, sine LoRA, DoRA, sine DoRA.

LoRA adds ``ΔW = (α/r)·B A``; sine LoRA ``ΔW = (α/r)·sin(ω·B A)/g``. ``B`` starts at zero, so
either starts as the pretrained layer. DoRA rescales ``W0 + ΔW`` row by row to a learned
magnitude ``m`` (one value per output feature, initialised to the rows' norms of ``W0``; this
is PEFT's orientation of the paper's column-wise norm). Every variant's ``ΔW`` is a weight, so
``merge`` folds the adapter into the base layer exactly (to float rounding).

``lowrank.detach_norm`` selects DoRA's backward pass: through the row norms ``||W0 + ΔW||``
(exact) or with them held constant (DoRA's paper §4.3, PEFT, the sine paper's code). See
docs/method.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sinelr.layers.base import LowRankLayer, register_lowrank
from sinelr.layers.config import LowRankConfig
from sinelr.layers.functional import (
    DEFAULT_BLOCK_ELEMS,
    VJP,
    autograd_vjp,
    matmul_dtype,
    sine_rows_vjp,
)
from sinelr.layers.peft_format import PeftAdapter, PeftLayers, peft_tensors
from sinelr.layers.sine import GainRule, SineActivated

#: sinelr.peft's ``peft_type`` (:data:`sinelr.peft.PEFT_TYPE`), named here because sinelr.peft
#: builds on these layers and so cannot be imported by them.
SINE_LORA_PEFT_TYPE = "SINELORA"


@register_lowrank("lora")
class LoRALinear(LowRankLayer):
    """``h = W0 x + (α/r)·B A dropout(x)``, applied as two thin matmuls.

    A variant whose update is not a plain product subclasses this, sets
    ``materialises_weight = True`` and overrides :meth:`product_rows` (or :meth:`weight_rows`);
    it then gets the row-blocked training path, the inference cache and exact merging. One
    that trains other factors overrides :meth:`_add_factors` and :meth:`weight_params`.
    """

    kind = "adapter"
    peft_method = "lora"
    hyperparameters = frozenset({"alpha", "dropout"})
    omega_auto = True

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
        if alpha is not None and "alpha" not in self.hyperparameters:
            raise TypeError(f"{type(self).__name__} has no alpha: α/r does not scale its update")
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
        # Every adapter draws LoRA's start of A, also one that trains other factors (VeRA,
        # LoRA-XS): what a run draws after its layers (dropout, a head) is then the same
        # random stream whichever adapter it trains, and as it was for the runs already made.
        lora_A = torch.empty(rank, self.in_features, **factory)
        nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
        self._add_factors(lora_A, factory)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _add_factors(self, lora_A: Tensor, factory: dict[str, Any]) -> None:
        """LoRA's trained factors: ``A`` from its random start, ``B`` at zero."""
        self.lora_A = nn.Parameter(lora_A)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, **factory))

    @classmethod
    def from_linear(cls, layer: nn.Linear, config: LowRankConfig) -> Self:
        return cls(layer, config.rank, **cls._kwargs_from_config(config))

    @classmethod
    def peft_adapter(cls, request: PeftLayers) -> PeftAdapter:
        """PEFT's ``LoraConfig``."""
        return lora_peft_adapter(request, dora=False)

    def weight_params(self) -> tuple[Tensor, ...]:
        return (self.base_layer.weight, self.lora_B, self.lora_A)

    def product_rows(self, rows: slice, B: Tensor, A: Tensor) -> Tensor:
        """Rows of the factors' term ``P = (α/r)·B A``: LoRA's ``ΔW``, what DoRA adds to ``W0``
        inside its norm, the relative change HiRA multiplies into ``W0`` (there ``α/r = 1``)."""
        return self.scaling * (B[rows] @ A)

    def weight_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        return W0[rows] + self.product_rows(rows, *factors[-2:])

    def update_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        """``W'[rows] - W0[rows]``: what the adapter adds to the frozen layer."""
        return self.product_rows(rows, *factors[-2:])

    def product_rows_vjp(
        self, rows: slice, B: Tensor, A: Tensor, base: Tensor | None = None
    ) -> tuple[Tensor, VJP]:
        """``base + P[rows]`` (``P[rows]`` without ``base``) and its backward to ``(dB, dA)``.

        By autograd over the block, right for any :meth:`product_rows`; a variant with a
        cheaper closed form overrides it.
        """

        def rows_fn(rows: slice, B: Tensor, A: Tensor) -> Tensor:
            product = self.product_rows(rows, B, A)
            return product if base is None else base + product

        return autograd_vjp(rows_fn)(rows, B, A)

    def update_rows_vjp(self, rows: slice, *params: Tensor) -> tuple[Tensor, VJP]:
        """:meth:`update_rows` and its backward, as :meth:`weight_rows_vjp` is for the weight."""
        return autograd_vjp(self.update_rows)(rows, *params)

    def factor_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.lora_A, self.lora_B)

    def factorised_weight(self) -> Tensor:
        return self.product_rows(slice(None), *self.weight_params()[-2:])

    def dense_bias(self) -> Tensor | None:
        return self.base_layer.bias

    def effective_weight(self) -> Tensor:
        """``W0 + ΔW`` in the base layer's dtype, as :meth:`merge` would store it."""
        if self.merged:
            return self.base_layer.weight
        weight = self.weight_rows(slice(None), *self.weight_params())
        return weight.to(self.base_layer.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """The base layer alone once merged. A built weight, while dropout is on, applies to the
        dropped-out input as the adapter's own term: the frozen layer sees the clean input (as
        PEFT). Otherwise the base class's path: one matmul with the whole adapted weight where
        it is built, the factors in turn where it is not."""
        if self.merged:
            return self.base_layer(x)
        if self.materialises_weight and self.training and isinstance(self.lora_dropout, nn.Dropout):
            return self.base_layer(x) + self.update_output(self.lora_dropout(x))
        return super().forward(x)

    def factored_forward(self, x: Tensor) -> Tensor:
        # Factors in the matmul's dtype: what autocast does anyway, and a half-precision input
        # outside autocast meets half-precision factors (the rank-r casts cost nothing). Taken
        # from weight_params, so that a reparametrised LoRA (VeRA, LoRA-XS) runs its own.
        B, A = (factor.to(matmul_dtype(x)) for factor in self.weight_params()[-2:])
        lora = F.linear(F.linear(self.lora_dropout(x), A), B)
        return self.base_layer(x) + self.scaling * lora

    def update_output(self, x: Tensor) -> Tensor:
        """``(W' - W0) x``: the adapter's own term, row-blocked unless ``fused=False``.

        Public for a host that applies the frozen layer itself and adds each adapter's term to
        its output: PEFT's LoRA layer, through sinelr.peft.
        """

        def whole() -> Tensor:
            return self.update_rows(slice(None), *self.weight_params()).to(matmul_dtype(x))

        return self._rows_linear(x, self.update_rows, self.update_rows_vjp, whole)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight: one matmul at inference, no adapter cost."""
        if self.merged:
            return
        with self.autocast_off():
            self.base_layer.weight.copy_(self.merged_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`, to float rounding, to go on training the adapter."""
        if not self.merged:
            return
        with self.autocast_off():
            self.base_layer.weight.copy_(self.unmerged_weight())
        self.merged = False
        self._weight_cache = None

    def merged_weight(self) -> Tensor:
        """The base weight :meth:`merge` stores, ``W0 + ΔW``. It also keeps what
        :meth:`unmerged_weight` will need (DoRA's norms, HiRA's ``W0``): call the two in pairs.

        Public for a host that stores the merged weight itself: PEFT's layer, through
        sinelr.peft.
        """
        return self.weight_rows(slice(None), *self.weight_params())

    def unmerged_weight(self) -> Tensor:
        """``W0`` again, from the merged base weight and what :meth:`merged_weight` kept."""
        return self.base_layer.weight - self.factorised_weight()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha:g}, merged={self.merged}"


class SineProduct(SineActivated):
    """Mixin: the factors' term is ``P = (α/r)·sin(ω·B A)/g`` where the plain variant has
    ``(α/r)·B A`` (:meth:`LoRALinear.product_rows`): added to ``W0`` (sine LoRA and its
    reparametrisations), added inside DoRA's norm (sine DoRA), multiplied into ``W0`` entry by
    entry (sine HiRA, whose ``α/r`` is 1)."""

    materialises_weight = True
    scaling: float

    def product_rows(self, rows: slice, B: Tensor, A: Tensor) -> Tensor:
        return self.sine(B[rows], A, self.scaling)

    def product_rows_vjp(
        self, rows: slice, B: Tensor, A: Tensor, base: Tensor | None = None
    ) -> tuple[Tensor, VJP]:
        """The sine's block and its backward written out: three block-sized tensors."""
        return sine_rows_vjp(rows, B, A, self.omega, self.scaling / self.gain, base)


@register_lowrank("sine_lora")
class SineLoRALinear(SineProduct, LoRALinear):
    """LoRA's parameters with a high-rank update; its blocks' backward is written out."""

    gain_rule = GainRule.FAN_IN  # the sine is added to W0

    @classmethod
    def peft_adapter(cls, request: PeftLayers) -> PeftAdapter:
        """sinelr.peft's ``SineLoraConfig``."""
        return sine_lora_peft_adapter(request, dora=False)

    def weight_rows_vjp(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> tuple[Tensor, VJP]:
        weight, vjp = self.product_rows_vjp(rows, B, A, W0[rows])
        return weight, lambda grad: (None, *vjp(grad))

    def update_rows_vjp(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> tuple[Tensor, VJP]:
        weight, vjp = self.product_rows_vjp(rows, B, A)
        return weight, lambda grad: (None, *vjp(grad))


@register_lowrank("dora")
class DoRALinear(LoRALinear):
    """``W' = m ⊙ (W0 + ΔW) / ||W0 + ΔW||``, the norm taken over each output row.

    ``detach_norm=False`` differentiates through the norm: the exact gradient, at LoRA's memory
    thanks to the row-blocked path, but autograd rebuilds each block in the backward pass.
    ``detach_norm=True`` holds the norm constant there, as DoRA's paper (§4.3) suggests and PEFT
    and the sine paper's code do: ``dL/dm = <G, V>/||V||`` and ``dL/dV = (m/||V||) ⊙ G`` row by
    row (``G = dL/dW'``, ``V = W0 + ΔW``), written out so that a block's backward keeps no more
    than ``V``, the incoming gradient and what the update's own backward needs (the sine's
    argument). The forward pass is the same either way.
    """

    materialises_weight = True
    peft_method = "dora"
    hyperparameters = LoRALinear.hyperparameters | {"detach_norm"}
    omega_auto = True

    def __init__(
        self, base_layer: nn.Linear, rank: int, *, detach_norm: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(base_layer, rank, **kwargs)
        self.detach_norm = detach_norm
        self.magnitude = nn.Parameter(base_layer.weight.detach().to(self.lora_A.dtype).norm(dim=1))
        # A buffer, so that a move or cast between merge() and unmerge() takes it along; not
        # saved, as the merged state itself is not.
        self._merge_norm: Tensor | None
        self.register_buffer("_merge_norm", None, persistent=False)

    @classmethod
    def peft_adapter(cls, request: PeftLayers) -> PeftAdapter:
        """PEFT's ``LoraConfig`` with ``use_dora``."""
        return lora_peft_adapter(request, dora=True)

    def weight_params(self) -> tuple[Tensor, ...]:
        return (self.base_layer.weight, self.magnitude, self.lora_B, self.lora_A)

    def _direction_rows(self, rows: slice, W0: Tensor, B: Tensor, A: Tensor) -> Tensor:
        return W0[rows] + self.product_rows(rows, B, A)

    def weight_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        magnitude, B, A = factors
        direction = self._direction_rows(rows, W0, B, A)
        norm = direction.norm(dim=1)
        if self.detach_norm:
            norm = norm.detach()
        return (magnitude[rows] / norm).unsqueeze(1) * direction

    def update_rows(self, rows: slice, W0: Tensor, *factors: Tensor) -> Tensor:
        return self.weight_rows(rows, W0, *factors) - W0[rows]

    def weight_rows_vjp(
        self, rows: slice, W0: Tensor, magnitude: Tensor, B: Tensor, A: Tensor
    ) -> tuple[Tensor, VJP]:
        """Exact: autograd through the block, norm included. Detached: the closed form of the
        class docstring on top of the update's own (closed-form for the sine) backward."""
        if not self.detach_norm:
            return super().weight_rows_vjp(rows, W0, magnitude, B, A)
        direction, direction_vjp = self.product_rows_vjp(rows, B, A, W0[rows])
        norm = direction.norm(dim=1)
        scale = (magnitude[rows] / norm).unsqueeze(1)

        def vjp(grad_weight: Tensor) -> tuple[None, Tensor, Tensor, Tensor]:
            grad_magnitude = torch.zeros_like(magnitude)
            grad_magnitude[rows] = torch.linalg.vecdot(grad_weight, direction, dim=1) / norm
            return None, grad_magnitude, *direction_vjp(grad_weight.mul_(scale))

        return scale * direction, vjp

    def update_rows_vjp(self, rows: slice, W0: Tensor, *factors: Tensor) -> tuple[Tensor, VJP]:
        if not self.detach_norm:
            return super().update_rows_vjp(rows, W0, *factors)
        weight, vjp = self.weight_rows_vjp(rows, W0, *factors)
        return weight.sub_(W0[rows]), vjp

    def merged_weight(self) -> Tensor:
        # Unmerging needs the row norms of W0 + ΔW, which the merged weight no longer holds.
        W0, _, B, A = self.weight_params()
        direction = self._direction_rows(slice(None), W0, B, A)
        self._merge_norm = direction.norm(dim=1)
        return (self.magnitude / self._merge_norm).unsqueeze(1) * direction

    def unmerged_weight(self) -> Tensor:
        assert self._merge_norm is not None
        direction = self.base_layer.weight * (self._merge_norm / self.magnitude).unsqueeze(1)
        self._merge_norm = None
        return direction - self.factorised_weight()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, detach_norm={self.detach_norm}"


@register_lowrank("sine_dora")
class SineDoRALinear(SineProduct, DoRALinear):
    """DoRA with the sine update inside the normalisation (docs/method.md's consistent reading)."""

    gain_rule = GainRule.FAN_IN  # the sine is added to W0 inside the norm

    @classmethod
    def peft_adapter(cls, request: PeftLayers) -> PeftAdapter:
        """sinelr.peft's ``SineLoraConfig`` with ``use_dora``."""
        return sine_lora_peft_adapter(request, dora=True)


def lora_peft_adapter(request: PeftLayers, *, dora: bool) -> PeftAdapter:
    """LoRA, or DoRA, in PEFT's ``LoraConfig``: ``use_dora``, and DoRA's magnitudes."""
    layers, lowrank = request.layers, request.lowrank
    config = {
        **request.options,
        "peft_type": "LORA",
        "r": lowrank.rank,
        "lora_alpha": next(iter(layers.values())).alpha,
        "lora_dropout": lowrank.dropout,
        "use_dora": dora,
    }
    names = {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B"}
    if dora:
        names["lora_magnitude_vector"] = "magnitude"
    return PeftAdapter(config, peft_tensors(layers, names))


def sine_lora_peft_adapter(request: PeftLayers, *, dora: bool) -> PeftAdapter:
    """Sine LoRA, or sine DoRA: LoRA's (DoRA's) config and tensors with ω and ``g``, as
    sinelr.peft's method, which PEFT loads once ``import sinelr.peft`` registered it."""
    plain = lora_peft_adapter(request, dora=dora)
    sine = {
        "peft_type": SINE_LORA_PEFT_TYPE,
        "omega": _one_omega(request.layers),
        "gain": request.lowrank.gain,
    }
    note = "load after `import sinelr.peft`"
    return plain._replace(config=plain.config | sine, sinelr_peft=True, note=note)


def _one_omega(layers: Mapping[str, LowRankLayer]) -> float:
    """The ω every sine layer applies now (a learnt one included: ``sin(ω·BA)`` with the
    layer's B and A); sinelr.peft takes one ω per adapter, so layers that differ (``omega=auto``
    on layers of different shapes, a learnt ω) cannot be written in its format."""
    omegas = {layer.current_omega() for layer in layers.values()}
    if len(omegas) > 1:
        raise ValueError(
            f"the sine layers apply {len(omegas)} different ω ({min(omegas):g} to "
            f"{max(omegas):g}: omega=auto or a learnt ω), and sinelr.peft takes one ω per "
            "adapter. Write a merged checkpoint instead (scripts/merge_adapters.py without "
            "--peft)"
        )
    return omegas.pop()
