"""VeRA and sine VeRA: frozen random projections, trained scaling vectors.

D. J. Kopiczko, T. Blankevoort, Y. M. Asano, *VeRA: Vector-based Random Matrix Adaptation*,
ICLR 2024 (arXiv:2310.11454). Two random matrices ``B ∈ R^{d_out×r}`` and ``A ∈ R^{r×d_in}``
are drawn once and frozen; each layer trains only two vectors:

    ΔW = Λb B Λd A,   Λb = diag(b), b ∈ R^{d_out} (starts at 0),
                      Λd = diag(d), d ∈ R^r (starts at d_initial = 0.1),

``r + d_out`` trained numbers per layer, and ``ΔW = 0`` at step 0. There is no ``α``. As PEFT's
``VeraConfig`` (``projection_prng_key=0``, ``d_initial=0.1``): ``A`` then ``B`` are drawn from a
generator seeded with the key, each uniform in ``±sqrt(6 / fan_in)`` (Kaiming-uniform with gain
√2, ``fan_in`` the size of its second dimension). The same key draws the same ``B, A`` for
every layer of a shape, so they are shared across layers in value and a checkpoint could be
rebuilt from the key. Each layer keeps its own copy in memory (``r·(d_in + d_out)`` numbers,
without gradients or optimiser state), so moving or loading one model never touches another.
PEFT draws one pair at the largest shape among the targeted layers and slices it; where all
targeted layers have one shape (a transformer's attention projections) the two are equal.

``sine_vera`` applies ``ΔW = sin(ω·Λb B Λd A)/g``: ``b = 0`` gives ``sin(0) = 0``, unchanged at
step 0. Both are LoRA with ``B' = Λb B`` and ``A' = Λd A`` computed each step
(:class:`~sinelr.layers.projected.ProjectedAdapter`), so they share its merging, row-blocked
sine and learnt ω.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sinelr.layers.adapters import SineLoRALinear
from sinelr.layers.base import register_lowrank
from sinelr.layers.peft_format import PeftAdapter, PeftLayers, peft_tensors
from sinelr.layers.projected import ProjectedAdapter
from sinelr.layers.sine import GainRule


def vera_projections(d_out: int, d_in: int, rank: int, seed: int) -> tuple[Tensor, Tensor]:
    """VeRA's frozen ``A (r × d_in)`` and ``B (d_out × r)``, drawn on the CPU from ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def kaiming_uniform(shape: tuple[int, int]) -> Tensor:
        bound = math.sqrt(6.0 / shape[1])
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)

    A = kaiming_uniform((rank, d_in))
    return A, kaiming_uniform((d_out, rank))


@register_lowrank("vera")
class VeRALinear(ProjectedAdapter):
    """``h = W0 x + Λb B Λd A dropout(x)`` with ``B, A`` frozen (module docstring)."""

    peft_method = "vera"
    hyperparameters = frozenset({"dropout"})  # and fused, block_elems, added to all
    #: PEFT's ``projection_prng_key`` default: the seed of the shared projections.
    projection_seed: ClassVar[int] = 0
    #: The start of ``d`` (PEFT's default; the paper's Table 6c finds small values best).
    d_initial: ClassVar[float] = 0.1

    def _add_projections(self, factory: dict[str, Any]) -> None:
        d_out, d_in, seed = self.out_features, self.in_features, self.projection_seed
        A, B = vera_projections(d_out, d_in, self.rank, seed)
        self.register_buffer("vera_A", A.to(**factory))
        self.register_buffer("vera_B", B.to(**factory))
        self.lambda_d = nn.Parameter(torch.full((self.rank,), self.d_initial, **factory))
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, **factory))

    @classmethod
    def peft_adapter(cls, request: PeftLayers) -> PeftAdapter:
        """VeRA in PEFT's format, its projections saved (``save_projection``).

        PEFT keeps one projection pair, ``A`` at ``r × max d_in`` and ``B`` at ``max d_out × r``
        over the targeted layers, and gives each layer the slices ``A[:, :d_in]``, ``B[:d_out]``;
        sinelr draws each layer's pair at its own shape. They are PEFT's slices of one pair where
        the targeted layers share their ``d_in`` (the draw of ``A`` decides where that of ``B``
        starts); that is checked here, number for number, and otherwise the export is refused.
        """
        layers, lowrank = request.layers, request.lowrank
        shared_A = max(layers.values(), key=lambda layer: layer.in_features).vera_A
        shared_B = max(layers.values(), key=lambda layer: layer.out_features).vera_B
        widths = sorted({layer.in_features for layer in layers.values()})
        for layer in layers.values():
            A, B = shared_A[:, : layer.in_features], shared_B[: layer.out_features]
            if not (layer.vera_A.equal(A) and layer.vera_B.equal(B)):
                raise ValueError(
                    f"{lowrank.variant} cannot be saved as PEFT adapters for these layers: "
                    "PEFT's VeRA slices one projection pair for every layer, and sinelr's "
                    "per-layer projections equal its slices only where all targeted layers have "
                    f"one input width (these have {', '.join(map(str, widths))}); write a "
                    "merged checkpoint instead (scripts/merge_adapters.py without --peft)"
                )
        config = {
            **request.options,
            "peft_type": "VERA",
            "r": lowrank.rank,
            "vera_dropout": lowrank.dropout,
            "projection_prng_key": cls.projection_seed,
            "d_initial": cls.d_initial,
            "save_projection": True,
        }
        names = {"vera_lambda_b": "lambda_b", "vera_lambda_d": "lambda_d"}
        tensors = peft_tensors(layers, names)
        tensors["base_model.vera_A"] = shared_A
        tensors["base_model.vera_B"] = shared_B
        return PeftAdapter(config, tensors)

    def weight_params(self) -> tuple[Tensor, ...]:
        left = self.lambda_b[:, None] * self.vera_B
        return (self.base_layer.weight, left, self.lambda_d[:, None] * self.vera_A)

    def factor_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.lambda_d, self.lambda_b)


@register_lowrank("sine_vera")
class SineVeRALinear(SineLoRALinear, VeRALinear):
    """``ΔW = sin(ω·Λb B Λd A)/g``: sine LoRA's row-blocked path on VeRA's factors."""

    gain_rule = GainRule.FAN_IN  # the sine is added to W0
