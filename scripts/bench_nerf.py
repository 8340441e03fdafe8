"""Training throughput of the NeRF of Table 3: dense, plain and sine low rank, fp32 and bf16.

One Adam step of the coarse + fine networks on a batch of rays (the ``task=nerf`` defaults: 64
stratified + 64 importance samples per ray, density noise), on synthetic forward-facing rays so
that no data is needed. Each configuration is timed in the same process, one after the other.

    python scripts/bench_nerf.py [--rays 1024] [--reps 5] [--ranks 1 5 60]

The last line printed is one JSON object: rays/s per configuration and the sine/dense and
plain/dense time ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tasks/ is importable from the repository root
from bench_layers import adam_step, compare_methods  # noqa: E402

from sinelr.apply import apply_lowrank  # noqa: E402
from sinelr.layers import LowRankConfig  # noqa: E402
from sinelr.paper import paper_omega  # noqa: E402
from tasks.nerf.model import NeRF  # noqa: E402
from tasks.nerf.render import RenderSettings, render_rays  # noqa: E402

TARGETS = r"(coarse|fine)\..*"


def build(method: str, rank: int | None) -> NeRF:
    torch.manual_seed(0)
    model = NeRF(sigma=0.1414)
    if rank is not None:
        omega = paper_omega("nerf", rank) if method == "sine_lowrank" else None
        apply_lowrank(model, TARGETS, LowRankConfig(method, rank=rank, omega=omega))
    return model


def nerf_step(model: NeRF, n_rays: int, settings: RenderSettings, bf16: bool):
    generator = torch.Generator().manual_seed(0)
    rays = {
        "origins": torch.rand(n_rays, 3, generator=generator) * 2 - 1,
        "directions": torch.randn(n_rays, 3, generator=generator) * 0.1
        + torch.tensor([0, 0, -2.0]),
        "viewdirs": F.normalize(torch.randn(n_rays, 3, generator=generator), dim=-1),
    }
    target = torch.rand(n_rays, 3, generator=generator)

    def loss() -> torch.Tensor:
        out = render_rays(model.coarse, model.fine, rays, settings)
        return F.mse_loss(out["rgb"], target) + F.mse_loss(out["coarse_rgb"], target)

    return adam_step(model.parameters(), loss, bf16, lr=5e-4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rays", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=64, help="coarse; as many again fine")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 5, 60])
    args = parser.parse_args()
    settings = RenderSettings(
        n_samples=args.samples, n_importance=args.samples, perturb=True, noise_std=1.0
    )

    def make_step(method: str, rank: int | None, bf16: bool):
        return nerf_step(build(method, rank), args.rays, settings, bf16)

    summary = compare_methods(make_step, args.ranks, args.rays, "rays", args.reps)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
