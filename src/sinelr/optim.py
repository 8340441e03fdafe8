"""Learning-rate schedules the paper's tasks share."""

from __future__ import annotations

import torch


def exponential_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, final_factor: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step decay from ``lr`` to ``lr · final_factor`` over ``total_steps``, then flat.

    NeRF's ``lr · 0.1^(step / decay_steps)`` is this with ``final_factor = 0.1^(total/decay)``.
    """
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: final_factor ** min(step / total, 1.0)
    )
