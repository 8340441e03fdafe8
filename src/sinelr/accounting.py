"""Parameter counts as the paper's tables give them, and the rank of factorised weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sinelr.layers import LowRankLayer
from sinelr.layers.sine import SineActivated
from sinelr.results import ParamCounts


def count_parameters(model: nn.Module | None, full_rank_total: int) -> ParamCounts:
    """results.json's ``params`` for ``model`` (None: a task with no network). A learnt ω is
    counted apart from the factors, so ``lowrank`` stays the paper's parameter budget."""
    if model is None:
        return ParamCounts(0, 0, 0, full_rank_total)
    params = list(model.parameters())  # shared parameters are listed once
    factors = {
        id(p) for m in model.modules() if isinstance(m, LowRankLayer) for p in m.factor_parameters()
    }
    omegas = [m.log_omega for m in model.modules() if isinstance(m, SineActivated)]
    return ParamCounts(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        lowrank=sum(p.numel() for p in params if id(p) in factors),
        full_rank_total=full_rank_total,
        omega=sum(p.numel() for p in omegas if p is not None),
    )


def rank_stats(matrix: Tensor) -> dict[str, float]:
    """Numerical rank (NumPy's/LAPACK's tolerance ``σ_max·max(m,n)·eps``) and stable rank.

    The stable rank ``||W||_F² / ||W||_2²`` is the continuous lower bound the paper's proofs
    use; it moves with ω where the numerical rank saturates.
    """
    s = torch.linalg.svdvals(matrix.detach())
    if s.numel() == 0 or s[0] == 0:
        return {"numerical_rank": 0, "stable_rank": 0.0}
    tol = s[0] * max(matrix.shape) * torch.finfo(s.dtype).eps
    return {
        "numerical_rank": int((s > tol).sum()),
        "stable_rank": float(s.square().sum() / s[0].square()),
    }


@torch.no_grad()
def rank_diagnostics(model: nn.Module) -> dict[str, dict[str, float]]:
    """Rank of every factorised layer's weight (an adapter's update ΔW), by module name."""
    out: dict[str, dict[str, float]] = {}
    for name, module in model.named_modules():
        if isinstance(module, LowRankLayer):
            with module.autocast_off():
                weight = module.factorised_weight().float()
            out[name] = {
                "rank": module.rank,
                "max_rank": min(weight.shape),
                **rank_stats(weight),
            }
    return out
