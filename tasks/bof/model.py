"""The occupancy network of Table 13: a Gaussian-activated coordinate MLP."""

from __future__ import annotations

from torch import Tensor, nn

from sinelr.activations import GaussianActivation


class OccupancyMLP(nn.Module):
    """``3 → width`` (dense), ``depth`` hidden ``width × width`` layers, ``width → 1`` (dense).

    The paper follows WIRE (Saragadam et al.) for this task; σ = 0.1 is the authors' code's.
    Only ``hidden.*`` are factorised in the paper: with width 256 and two hidden layers this is
    132,865 parameters dense, 2,817 at rank 1.
    """

    def __init__(self, width: int = 256, depth: int = 2, sigma: float = 0.1) -> None:
        super().__init__()
        self.input = nn.Linear(3, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.output = nn.Linear(width, 1)
        self.activation = GaussianActivation(sigma)

    def forward(self, xyz: Tensor) -> Tensor:
        h = self.activation(self.input(xyz))
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.output(h)
