"""Camera rays and LLFF's normalised device coordinates, as the NeRF code defines them."""

from __future__ import annotations

import torch
from torch import Tensor


def camera_rays(height: int, width: int, focal: float, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """``(origins, directions)``, each ``(H·W, 3)`` in row-major pixel order.

    The camera looks down ``-z`` with ``+y`` up; pixel ``(i, j)`` (column, row) has direction
    ``((i - W/2)/f, -(j - H/2)/f, -1)`` before rotation: the NeRF code's convention (pixel
    corners, not centres), kept so that PSNRs compare with published numbers.
    """
    j, i = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    camera = torch.stack(
        [(i - 0.5 * width) / focal, -(j - 0.5 * height) / focal, -torch.ones_like(i)], dim=-1
    )
    directions = (camera.reshape(-1, 3) @ c2w[:3, :3].T).contiguous()
    origins = c2w[:3, 3].expand_as(directions).contiguous()
    return origins, directions


def ndc_rays(
    height: int, width: int, focal: float, near: float, origins: Tensor, directions: Tensor
) -> tuple[Tensor, Tensor]:
    """Rays of a forward-facing scene in NDC, where depths ``[near, ∞)`` become ``[-1, 1)``.

    Each origin is first moved along its ray to the plane ``z = -near``; then the perspective
    projection maps it into the unit cube, and ``t ∈ [0, 1]`` spans the whole frustum beyond the
    near plane (NeRF paper, appendix C).
    """
    t = -(near + origins[:, 2]) / directions[:, 2]
    o = origins + t[:, None] * directions
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = directions.unbind(-1)
    sx, sy = -2.0 * focal / width, -2.0 * focal / height
    ndc_origins = torch.stack([sx * ox / oz, sy * oy / oz, 1.0 + 2.0 * near / oz], dim=-1)
    ndc_directions = torch.stack(
        [sx * (dx / dz - ox / oz), sy * (dy / dz - oy / oz), -2.0 * near / oz], dim=-1
    )
    return ndc_origins, ndc_directions
