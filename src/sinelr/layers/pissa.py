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
from sinelr.layers.peft_format import PREFIX, PeftAdapter, PeftLayers
from sinelr.layers.projected import truncated_svd
from sinelr.layers.sine import GainRule


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

    peft_method = "pissa"
    hyperparameters = frozenset({"alpha", "dropout"})

    @classmethod
    def peft_adapter(cls, request: PeftLayers) -> PeftAdapter:
        """PiSSA as PEFT saves it for the original base weights (``save_pretrained`` with
        ``path_initial_model_for_weight_conversion``, ``LoraModel.subtract_mutated_init``):
        PiSSA applies ``W_res + s·B A`` with ``W_res = W0 − s·B0 A0``, which is
        ``W0 + s·(B A − B0 A0)``, a LoRA of rank ``2r`` with ``A' = [A; A0]``, ``B' = [B, −B0]``
        and ``α' = 2α`` (the same ``s``). Written here rather than by that call, which needs the
        initial adapter saved before training and leaves a trained head (``modules_to_save``)
        out of what it writes.
        """
        layers, lowrank, start = request.layers, request.lowrank, request.start
        if start is None or set(start) != set(layers):
            raise ValueError(
                f"{lowrank.variant} is written for the original base weights from each layer's "
                "step-0 factors, which load_run records: pass save_peft(..., start=run.start)"
            )
        rank = 2 * lowrank.rank
        config = {
            **request.options,
            "peft_type": "LORA",
            "r": rank,
            "lora_alpha": 2 * next(iter(layers.values())).alpha,
            "lora_dropout": lowrank.dropout,
        }
        tensors = {}
        for name, layer in layers.items():
            A0, B0 = start[name]
            tensors[f"{PREFIX}{name}.lora_A.weight"] = torch.cat([layer.lora_A.detach(), A0])
            tensors[f"{PREFIX}{name}.lora_B.weight"] = torch.cat([layer.lora_B.detach(), -B0], 1)
        note = f"PEFT's LoRA of rank {rank}, for the original base model"
        return PeftAdapter(config, tensors, note=note)


@register_lowrank("sine_pissa")
class SinePiSSALinear(PrincipalInit, SineLoRALinear):
    """Sine LoRA from PiSSA's start; the frozen residual is ``W0 − s·sin(ω·B0 A0)/g``."""

    gain_rule = GainRule.FAN_IN  # the sine is added to the residual
