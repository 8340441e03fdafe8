"""Activations of the paper's coordinate MLPs (occupancy fields, NeRF)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sinelr.errors import InputError
from sinelr.layers.config import is_positive_number


class _Gaussian(torch.autograd.Function):
    """``exp(-c·x²)`` with a closed-form backward, ``-2c·x·y``.

    Autograd's version runs ~12 element-wise passes over the activations (pow, div, neg, exp
    and their backward); this runs 6 and keeps one tensor, ``y``, beside the input. In a
    coordinate MLP the activations are the bulk of the memory traffic, so this is most of the
    step's non-matmul time (benchmarks/RESULTS.md, NeRF).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, c: float) -> Tensor:
        y = x.square().mul_(-c).exp_()
        ctx.save_for_backward(x, y)
        ctx.c = c
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, y = ctx.saved_tensors
        return (grad * y).mul_(x).mul_(-2.0 * ctx.c), None


def gaussian(x: Tensor, sigma: float) -> Tensor:
    """``exp(-x²/(2σ²))``."""
    return _Gaussian.apply(x, 0.5 / sigma**2)


class GaussianActivation(nn.Module):
    """``exp(-x²/(2σ²))``: lets an MLP on raw coordinates fit high frequencies with no encoding.

    This is the form of Ramasinghe & Lucey (2022) and of the authors' occupancy and NeRF code,
    both at σ = 0.1, so ``task.sigma`` means the same thing in both tasks and equals the
    authors' number. (An earlier ``exp(-(x/σ)²)`` made bof's activation √2 narrower.)
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not is_positive_number(sigma):
            raise InputError(
                f"the Gaussian activation's sigma (task.sigma) must be a finite number above 0, "
                f"got {sigma!r}"
            )
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        return gaussian(x, self.sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"
