"""Volume rendering with hierarchical sampling (Mildenhall et al., 2020, §4–5).

A ray ``o + t·d`` is sampled at ``n_samples`` stratified depths for the coarse network; the
weights it renders with define a piecewise-constant PDF along the ray, from which
``n_importance`` more depths are drawn for the fine network, which sees all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The "infinite" last interval of a ray, as in the NeRF code.
FAR_DISTANCE = 1e10


@dataclass(frozen=True)
class RenderSettings:
    """How rays are sampled and rendered; ``perturb`` and ``noise_std`` only while training."""

    near: float = 0.0
    far: float = 1.0
    n_samples: int = 64
    n_importance: int = 64
    perturb: bool = False
    noise_std: float = 0.0


def stratified_depths(n_rays: int, settings: RenderSettings, device: torch.device) -> Tensor:
    """``(n_rays, n_samples)`` depths in ``[near, far]``: evenly spaced, or one uniform draw per
    interval when perturbed."""
    t = torch.linspace(0.0, 1.0, settings.n_samples, device=device)
    z = (settings.near * (1.0 - t) + settings.far * t).expand(n_rays, -1)
    if not settings.perturb:
        return z
    mids = 0.5 * (z[:, 1:] + z[:, :-1])
    lower = torch.cat([z[:, :1], mids], dim=1)
    upper = torch.cat([mids, z[:, -1:]], dim=1)
    return lower + (upper - lower) * torch.rand_like(z)


def composite(
    raw: Tensor, depths: Tensor, directions: Tensor, noise_std: float = 0.0
) -> dict[str, Tensor]:
    """Alpha-composite a network's raw ``(rays, samples, 4)`` output along each ray.

    ``rgb = sigmoid(raw[..., :3])``, density ``relu(raw[..., 3] + noise)``; the weights
    ``T_i·α_i`` sum to at most 1 (the rest is the background's share, black for LLFF).
    """
    raw = raw.float()
    deltas = torch.cat(
        [depths[:, 1:] - depths[:, :-1], torch.full_like(depths[:, :1], FAR_DISTANCE)], dim=1
    )
    deltas = deltas * directions.norm(dim=-1, keepdim=True)
    density = raw[..., 3]
    if noise_std > 0:
        density = density + torch.randn_like(density) * noise_std
    alpha = 1.0 - torch.exp(-F.relu(density) * deltas)
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], dim=1), dim=1
    )[:, :-1]
    weights = alpha * transmittance
    rgb = torch.sigmoid(raw[..., :3])
    return {
        "rgb": (weights[..., None] * rgb).sum(dim=1),
        "depth": (weights * depths).sum(dim=1),
        "opacity": weights.sum(dim=1),
        "weights": weights,
    }


def sample_pdf(bins: Tensor, weights: Tensor, n: int, deterministic: bool) -> Tensor:
    """``n`` depths per ray drawn from the piecewise-constant PDF ``weights`` over ``bins``.

    ``bins`` are the ``m + 1`` edges of ``m`` intervals; inverse-transform sampling of the CDF,
    at evenly spaced quantiles when ``deterministic``.
    """
    weights = weights + 1e-5  # no interval has zero probability: the CDF stays invertible
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, n, device=bins.device).expand(len(bins), n)
    else:
        u = torch.rand(len(bins), n, device=bins.device)
    u = u.contiguous()
    above = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
    below = (above - 1).clamp(min=0)
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    bins_below, bins_above = bins.gather(1, below), bins.gather(1, above)
    span = cdf_above - cdf_below
    span = torch.where(span < 1e-5, torch.ones_like(span), span)
    return bins_below + (u - cdf_below) / span * (bins_above - bins_below)


def _query(network: nn.Module, rays: dict[str, Tensor], depths: Tensor) -> Tensor:
    points = rays["origins"][:, None] + depths[..., None] * rays["directions"][:, None]
    viewdirs = rays["viewdirs"][:, None].expand_as(points)
    return network(points.reshape(-1, 3), viewdirs.reshape(-1, 3)).reshape(*depths.shape, 4)


def render_rays(
    coarse: nn.Module, fine: nn.Module | None, rays: dict[str, Tensor], settings: RenderSettings
) -> dict[str, Tensor]:
    """Colour, depth and opacity of each ray; ``coarse_rgb`` too when there is a fine pass.

    ``rays`` holds ``origins``, ``directions`` (NDC) and ``viewdirs`` (unit, world space).
    """
    origins = rays["origins"]
    depths = stratified_depths(len(origins), settings, origins.device)
    out = composite(_query(coarse, rays, depths), depths, rays["directions"], settings.noise_std)
    if fine is None or settings.n_importance == 0:
        return out
    mids = 0.5 * (depths[:, 1:] + depths[:, :-1])
    extra = sample_pdf(
        mids, out["weights"][:, 1:-1].detach(), settings.n_importance, not settings.perturb
    )
    depths, _ = torch.sort(torch.cat([depths, extra.detach()], dim=1), dim=1)
    fine_out = composite(_query(fine, rays, depths), depths, rays["directions"], settings.noise_std)
    fine_out["coarse_rgb"] = out["rgb"]
    return fine_out


@torch.no_grad()
def render_chunked(
    coarse: nn.Module,
    fine: nn.Module | None,
    rays: dict[str, Tensor],
    settings: RenderSettings,
    chunk: int,
) -> dict[str, Tensor]:
    """:func:`render_rays` over ``chunk`` rays at a time: memory bounded by ``chunk``, not by
    the image size. Returns ``rgb`` and ``depth`` only."""
    n = len(rays["origins"])
    parts: dict[str, list[Tensor]] = {"rgb": [], "depth": []}
    for start in range(0, n, chunk):
        piece = {key: value[start : start + chunk] for key, value in rays.items()}
        out = render_rays(coarse, fine, piece, settings)
        for key, values in parts.items():
            values.append(out[key])
    return {key: torch.cat(values) for key, values in parts.items()}
