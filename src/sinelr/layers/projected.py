"""What PiSSA, VeRA and LoRA-XS share: the truncated SVD of ``W0``, and adapters whose factors
are frozen projections around a few trained numbers.

VeRA (``ΔW = Λb B Λd A``) and LoRA-XS (``ΔW = (α/r)·B R A``) are LoRA with the factors
reparametrised: ``ΔW = (α/r)·L Rt`` where ``L`` and ``Rt`` are products of frozen matrices and
small trained ones. :class:`ProjectedAdapter` builds ``L`` and ``Rt`` in :meth:`weight_params`
(a matrix of ``r`` columns or rows: cheap, and autograd carries the gradient back to the
trained parts), so everything :class:`~sinelr.layers.LoRALinear` does with ``(B, A)`` (the thin
forward pass, the row-blocked sine, merging, the learnt ω) works unchanged with ``(L, Rt)``.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor

from sinelr.layers.adapters import LoRALinear


@torch.no_grad()
def truncated_svd(weight: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """``U_r, S_r, Vh_r`` with ``W ≈ U_r diag(S_r) Vh_r``: the ``rank`` largest singular triplets.

    Computed in float32 at least, whatever the weight's dtype, as PEFT's PiSSA does: a bf16 SVD
    would put rounding of 2^-9 into the directions the adapter starts from. Copies, not views:
    a slice would keep the whole ``U`` and ``Vh`` alive, in memory and in every checkpoint of a
    buffer made from it.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    U, S, Vh = torch.linalg.svd(weight.detach().to(dtype), full_matrices=False)
    return U[:, :rank].clone(), S[:rank].clone(), Vh[:rank].clone()


class ProjectedAdapter(LoRALinear):
    """LoRA whose ``(B, A)`` are computed from frozen projections and trained pieces.

    A subclass registers its own tensors in :meth:`_add_projections` instead of LoRA's trained
    ``lora_A``/``lora_B``, returns ``(W0, L, Rt)`` from :meth:`weight_params` and its trained
    pieces from :meth:`factor_parameters`. Frozen projections are persistent buffers: saved
    with the model, so a checkpoint reloads exactly (an SVD's signs, or a random draw, need not
    come out the same on another machine), and not counted as parameters.
    """

    def _add_factors(self, lora_A: Tensor, factory: dict[str, Any]) -> None:
        """The subclass's tensors in place of LoRA's. ``lora_A``, LoRA's random start, goes
        unused: every adapter draws it, so that the random stream after it is LoRA's."""
        self._add_projections(factory)

    @abc.abstractmethod
    def _add_projections(self, factory: dict[str, Any]) -> None:
        """Register the frozen projections and the trained pieces, on ``factory``'s device and
        in its dtype."""
