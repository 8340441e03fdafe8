"""LoRA-XS and sine LoRA-XS: a trained ``r × r`` matrix between frozen SVD factors of ``W0``.

K. Bałazy, M. Banaei, K. Aberer, J. Tabor, *LoRA-XS: Low-Rank Adaptation with Extremely Small
Number of Parameters*, ECAI 2025 (arXiv:2405.17604). The paper writes a layer as ``h = x W``
with ``W = U Σ Vᵀ`` and sets ``ΔW = A R B`` with ``A = U_r Σ_r`` and ``B = V_rᵀ`` frozen. In
PyTorch's orientation (``W0 = Wᵀ = U S Vᵀ``, ``d_out × d_in``) that is

    ΔW = (α/r) · B R A,   B = U_r (d_out × r),   A = S_r V_rᵀ (r × d_in),

the singular values on the input side as in the authors' code (``utils/initialization_utils``
multiplies the input-side singular vectors by ``S``). Only ``R`` (``r²`` numbers per layer)
trains; it starts Gaussian with standard deviation 1e-5, the authors' code's ``sigma``, and the
scaling ``α/r`` is LoRA's (their code builds on PEFT's ``LoraConfig``). PEFT has no LoRA-XS.

Step 0: ``R`` is not zero, so the plain layer starts ``(α/r)·B R A`` away from ``W0``, entries
of order ``1e-5·σ_i``. ``sine_loraxs`` applies ``ΔW = (α/r)·sin(ω·B R A)/g``; its argument is
deep in the sine's linear range (``|ω·B R A| ≪ 1`` unless ``ω·σ_1`` nears 1e5), so its step-0
change is the plain one times ``ω/g`` to first order (12.5 at ω = 200, ``d_in = 256``): small,
not zero (tests/test_variants.py measures both). ``R = 0`` would
start both exactly at ``W0`` and still train (``∂ΔW/∂R = Bᵀ G Aᵀ ≠ 0``), but is not the
paper's start.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sinelr.layers.adapters import SineLoRALinear
from sinelr.layers.base import register_lowrank
from sinelr.layers.projected import ProjectedAdapter, truncated_svd
from sinelr.layers.sine import GainRule


@register_lowrank("loraxs")
class LoRAXSLinear(ProjectedAdapter):
    """``h = W0 x + (α/r)·B R A dropout(x)``, ``B, A`` from ``W0``'s SVD (module docstring)."""

    hyperparameters = frozenset({"alpha", "dropout"})
    #: Standard deviation of ``R``'s Gaussian start (the authors' code).
    r_init_std: ClassVar[float] = 1e-5

    def _add_projections(self, factory: dict[str, Any]) -> None:
        U, S, Vh = truncated_svd(self.base_layer.weight, self.rank)
        # Frozen, yet named as LoRA's trained factors, which they stand in for: these are the
        # keys of every saved LoRA-XS checkpoint, which a rename would no longer load.
        self.register_buffer("lora_B", U.to(**factory))
        self.register_buffer("lora_A", (S[:, None] * Vh).to(**factory))
        self.lora_R = nn.Parameter(torch.empty(self.rank, self.rank, **factory))
        nn.init.normal_(self.lora_R, std=self.r_init_std)

    def weight_params(self) -> tuple[Tensor, ...]:
        return (self.base_layer.weight, self.lora_B @ self.lora_R, self.lora_A)

    def factor_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.lora_R,)


@register_lowrank("sine_loraxs")
class SineLoRAXSLinear(SineLoRALinear, LoRAXSLinear):
    """``ΔW = (α/r)·sin(ω·B R A)/g``: sine LoRA's row-blocked path on LoRA-XS's factors."""

    gain_rule = GainRule.FAN_IN  # the sine is added to W0
