"""Training throughput of the occupancy network: fp32 against bf16 autocast, per method.

The ``mini`` preset of ``bof`` trains under bf16 autocast on a CPU that computes bf16 natively
and in fp32 on one that does not; this is the measurement behind that choice. One Adam step on
a batch of 8,192 points (the preset's batch), the paper's MLP at rank 1.

    python -m scripts.bench_bof [--reps N]

The last line printed is one JSON object of fp32/bf16 time ratios (> 1: bf16 is faster).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from scripts.bench_layers import adam_step, median_time
from sinelr.apply import apply_lowrank
from sinelr.layers import LowRankConfig
from tasks.bof.model import OccupancyMLP

BATCH = 8192
METHODS = {"dense": None, "lowrank": ("lowrank", None), "sine_lowrank": ("sine_lowrank", 200.0)}


def occupancy_step(method: str, bf16: bool):
    torch.manual_seed(0)
    model = OccupancyMLP()
    if METHODS[method] is not None:
        variant, omega = METHODS[method]
        apply_lowrank(model, r"hidden\.\d+", LowRankConfig(variant, rank=1, omega=omega))
    xyz = torch.rand(BATCH, 3) * 2 - 1
    target = (xyz.norm(dim=1, keepdim=True) < 0.5).float()
    return adam_step(
        model.parameters(), lambda: torch.nn.functional.mse_loss(model(xyz).float(), target), bf16
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    ratios: dict[str, float | str] = {}
    for method in METHODS:
        fp32 = median_time(occupancy_step(method, bf16=False), 3, args.reps)
        bf16 = median_time(occupancy_step(method, bf16=True), 3, args.reps)
        print(
            f"{method:13s} fp32 {BATCH / fp32 / 1e3:6.0f}k points/s   "
            f"bf16 {BATCH / bf16 / 1e3:6.0f}k points/s",
            flush=True,
        )
        ratios[f"{method}_fp32_vs_bf16_time"] = round(fp32 / bf16, 2)
    ratios["threads"] = str(torch.get_num_threads())
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
