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
from typing import ClassVar

import torch
from torch import Tensor, nn

from sinelr.layers.adapters import SineLoRALinear
from sinelr.layers.base import register_lowrank
from sinelr.layers.functional import DEFAULT_BLOCK_ELEMS
from sinelr.layers.projected import ProjectedAdapter
from sinelr.layers.sine import SINE_SETTINGS, GainRule


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

    kind = "adapter"
    sine_of = None
    peft_method = "vera"
    hyperparameters = frozenset({"dropout"})
    #: PEFT's ``projection_prng_key`` default: the seed of the shared projections.
    projection_seed: ClassVar[int] = 0
    #: The start of ``d`` (PEFT's default; the paper's Table 6c finds small values best).
    d_initial: ClassVar[float] = 0.1

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int,
        *,
        dropout: float = 0.0,
        fused: bool = True,
        block_elems: int = DEFAULT_BLOCK_ELEMS,
    ) -> None:
        super().__init__(base_layer, rank, dropout=dropout, fused=fused, block_elems=block_elems)
        factory = self._drop_lora_factors()
        A, B = vera_projections(self.out_features, self.in_features, rank, self.projection_seed)
        self.register_buffer("vera_A", A.to(**factory))
        self.register_buffer("vera_B", B.to(**factory))
        self.lambda_d = nn.Parameter(torch.full((rank,), self.d_initial, **factory))
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, **factory))

    def weight_params(self) -> tuple[Tensor, ...]:
        left = self.lambda_b[:, None] * self.vera_B
        return (self.base_layer.weight, left, self.lambda_d[:, None] * self.vera_A)

    def factor_parameters(self) -> tuple[nn.Parameter, ...]:
        return (self.lambda_d, self.lambda_b)


@register_lowrank("sine_vera")
class SineVeRALinear(SineLoRALinear, VeRALinear):
    """``ΔW = sin(ω·Λb B Λd A)/g``: sine LoRA's row-blocked path on VeRA's factors."""

    kind = "adapter"
    sine_of = "vera"
    peft_method = None
    gain_rule = GainRule.FAN_IN  # the sine is added to W0
    hyperparameters = VeRALinear.hyperparameters | SINE_SETTINGS
