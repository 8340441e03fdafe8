"""The NeRF MLP of Table 3: 8×256 on raw xyz, Gaussian-activated (Ramasinghe & Lucey, 2022).

The paper's compression rates (1.3 / 4.7 / 8.7 / 24.6 / 48.6 %) are those of this network with
every layer factorised where ``k < min(d_in, d_out)``, and they rule out a positional encoding
(docs/method.md): a Gaussian activation is what lets the MLP fit detail from raw coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sinelr.activations import GaussianActivation
from sinelr.errors import InputError


class RadianceMLP(nn.Module):
    """``(xyz, view direction) → (r, g, b, density)`` before their output activations.

    ``pts_linears``: ``depth`` layers of ``width`` on the point, the input concatenated again
    after each layer in ``skips``; ``alpha_linear`` reads density from the last of them;
    ``feature_linear`` (no activation) and the direction feed ``views_linear`` (``width/2``)
    and ``rgb_linear``. The layer names are the NeRF code's, so targets read the same.
    """

    def __init__(
        self,
        depth: int = 8,
        width: int = 256,
        skips: Sequence[int] = (4,),
        sigma: float = 0.1,
        point_dim: int = 3,
        view_dim: int = 3,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 2:
            raise InputError(f"task.depth must be >= 1 and task.width >= 2, got {depth}, {width}")
        self.skips = tuple(skips)
        self.pts_linears = nn.ModuleList(
            [nn.Linear(point_dim, width)]
            + [
                nn.Linear(width + (point_dim if i in self.skips else 0), width)
                for i in range(depth - 1)
            ]
        )
        self.alpha_linear = nn.Linear(width, 1)
        self.feature_linear = nn.Linear(width, width)
        self.views_linear = nn.Linear(width + view_dim, width // 2)
        self.rgb_linear = nn.Linear(width // 2, 3)
        self.activation = GaussianActivation(sigma)

    def forward(self, points: Tensor, viewdirs: Tensor) -> Tensor:
        h = points
        for i, layer in enumerate(self.pts_linears):
            h = self.activation(layer(h))
            if i in self.skips:
                h = torch.cat([points, h], dim=-1)
        alpha = self.alpha_linear(h)
        h = torch.cat([self.feature_linear(h), viewdirs], dim=-1)
        rgb = self.rgb_linear(self.activation(self.views_linear(h)))
        return torch.cat([rgb, alpha], dim=-1)


class NeRF(nn.Module):
    """The coarse and fine networks of hierarchical sampling, factorised alike: two
    :class:`RadianceMLP` of the one shape ``mlp`` describes (its keyword arguments)."""

    def __init__(self, fine: bool = True, **mlp: Any) -> None:
        super().__init__()
        self.coarse = RadianceMLP(**mlp)
        self.fine = RadianceMLP(**mlp) if fine else None
