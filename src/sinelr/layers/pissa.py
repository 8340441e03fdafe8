"""PiSSA and sine PiSSA: LoRA started from the principal singular vectors of ``W0``.

F. Meng, Z. Wang, M. Zhang, *PiSSA: Principal Singular Values and Singular Vectors Adaptation
of Large Language Models*, NeurIPS 2024 (arXiv:2404.02948). With ``W0 = U S Vᵀ`` and the
scaling ``s = α/r``, PiSSA starts LoRA's factors at

    A0 = sqrt(S_r / s) · V_rᵀ,   B0 = U_r · sqrt(S_r / s),   so that s·B0 A0 = U_r S_r V_rᵀ,

and freezes the residual ``W_res = W0 − s·B0 A0`` in the base layer: the model is unchanged at
step 0 while the adapter trains the principal components. This is PEFT's
``LoraConfig(init_lora_weights="pissa")`` (full SVD, the singular values divided by ``s``).

``sine_pissa`` keeps the same ``A0, B0`` and freezes ``W0 − s·sin(ω·B0 A0)/g``, the residual of
the sine update, so it too is unchanged at step 0. Note that ``B0 A0 = U_r S_r V_rᵀ / s`` has
entries of the size of ``W0``'s, not LoRA's zero start: the sine's argument ``ω·B0 A0`` is
already many radians at the ω that suit sine LoRA.

After initialisation both are LoRA and sine LoRA on the residual: the same forward pass,
row-blocked sine, exact ``merge``/``unmerge`` and learnt ω.
"""

from __future__ import annotations

from typing import Any

import torch

from sinelr.layers.adapters import LoRALinear, SineLoRALinear
from sinelr.layers.base import register_lowrank
from sinelr.layers.projected import truncated_svd
from sinelr.layers.sine import SINE_SETTINGS, GainRule


class PrincipalInit:
    """Mixin, first among the bases: once the layer is built (the sine's ω and ``g`` set),
    start ``A, B`` from ``W0``'s principal components and leave the rest in the base layer."""

    base_layer: torch.nn.Linear
    lora_A: torch.nn.Parameter
    lora_B: torch.nn.Parameter
    rank: int
    scaling: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_from_principal_components()

    @torch.no_grad()
    def _start_from_principal_components(self) -> None:
        weight = self.base_layer.weight
        U, S, Vh = truncated_svd(weight, self.rank)
        root = (S / self.scaling).sqrt()
        self.lora_B.copy_(U * root)
        self.lora_A.copy_(root[:, None] * Vh)
        # The update as the forward pass will apply it (a learnt ω included), so that the
        # adapted layer computes W0 at step 0, to the rounding of the base layer's dtype.
        weight.copy_(weight - self.factorised_weight())  # type: ignore[attr-defined]


@register_lowrank("pissa")
class PiSSALinear(PrincipalInit, LoRALinear):
    """LoRA from ``W0``'s top-``r`` singular triplets, the residual frozen (module docstring)."""

    kind = "adapter"
    sine_of = None
    peft_method = "pissa"
    hyperparameters = frozenset({"alpha", "dropout"})


@register_lowrank("sine_pissa")
class SinePiSSALinear(PrincipalInit, SineLoRALinear):
    """Sine LoRA from PiSSA's start; the frozen residual is ``W0 − s·sin(ω·B0 A0)/g``."""

    kind = "adapter"
    sine_of = "pissa"
    peft_method = None
    gain_rule = GainRule.FAN_IN  # the sine is added to the residual
    hyperparameters = PiSSALinear.hyperparameters | SINE_SETTINGS
