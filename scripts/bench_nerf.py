"""Training throughput and peak memory of the NeRF of Tables 3 and 12: dense, plain and sine.

One Adam step of the coarse + fine networks on a batch of rays (the ``task=nerf`` defaults: 64
stratified + 64 importance samples per ray, density noise), on synthetic forward-facing rays so
that no data is needed, at the paper's ranks 1, 5, 10, 30 and 60 (Tables 3 and 12).

* Speed: each configuration timed in the same process, one after the other, fp32 and bf16.
* Peak memory (Table 12): each configuration in its own process, measured as
  ``bench_layers.py`` measures it (``PeakMemory``): from a baseline taken after the imports,
  over two steps (the first makes Adam's state), so the weights, Adam's state and the
  activations count and the interpreter does not. On CUDA ``torch.cuda.max_memory_allocated``;
  on CPU the peak resident set with glibc's malloc returning freed tensors at once.

    python -m scripts.bench_nerf [--rays 1024] [--reps 5] [--ranks 1 5 10 30 60]
    python -m scripts.bench_nerf --memory-only --json benchmarks/table12_memory_cpu.json
    python -m scripts.bench_nerf --device cuda --json bench_nerf_cuda.json

The last line printed is one JSON object: rays/s per configuration, the sine/dense and
plain/dense time ratios, peak MiB per configuration and the sine/plain peak ratio per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from scripts.bench_layers import PeakMemory, adam_step, compare_methods, json_child
from sinelr.apply import apply_lowrank
from sinelr.layers import LowRankConfig
from sinelr.paper import paper_omega
from tasks.nerf.model import NeRF
from tasks.nerf.render import RenderSettings, render_rays

TARGETS = r"(coarse|fine)\..*"
MIB = 2**20


def build(method: str, rank: int | None) -> NeRF:
    torch.manual_seed(0)
    model = NeRF()
    if rank is not None:
        omega = paper_omega("nerf", rank) if method == "sine_lowrank" else None
        apply_lowrank(model, TARGETS, LowRankConfig(method, rank=rank, omega=omega))
    return model


def nerf_step(model: NeRF, n_rays: int, settings: RenderSettings, bf16: bool, device: str):
    generator = torch.Generator().manual_seed(0)
    rays = {
        "origins": torch.rand(n_rays, 3, generator=generator) * 2 - 1,
        "directions": torch.randn(n_rays, 3, generator=generator) * 0.1
        + torch.tensor([0, 0, -2.0]),
        "viewdirs": F.normalize(torch.randn(n_rays, 3, generator=generator), dim=-1),
    }
    rays = {key: value.to(device) for key, value in rays.items()}
    target = torch.rand(n_rays, 3, generator=generator).to(device)
    model.to(device)

    def loss() -> torch.Tensor:
        out = render_rays(model.coarse, model.fine, rays, settings)
        return F.mse_loss(out["rgb"], target) + F.mse_loss(out["coarse_rgb"], target)

    return adam_step(model.parameters(), loss, bf16, lr=5e-4, device=device)


def configs(ranks: list[int]) -> list[tuple[str, int | None]]:
    """Dense, then plain and sine low rank at each rank: the rows of Tables 3 and 12."""
    return [("dense", None)] + [(m, k) for k in ranks for m in ("lowrank", "sine_lowrank")]


def config_name(method: str, rank: int | None) -> str:
    return method if rank is None else f"{method}_k{rank}"


def measure_memory(method: str, rank: int | None, args: argparse.Namespace) -> dict:
    """Peak bytes of two training steps of one configuration, from before the model is built."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    memory = PeakMemory(args.device)
    step = nerf_step(build(method, rank), args.rays, settings(args), args.bf16, args.device)
    step()  # the first step creates Adam's state, which a training run holds throughout
    step()
    return {"method": method, "rank": rank, "bf16": args.bf16, "peak_bytes": memory.peak()}


def memory_table(args: argparse.Namespace) -> list[dict]:
    """Every configuration's peak memory, each from a fresh process (pinned malloc on CPU)."""
    shared = ["--device", args.device, "--rays", str(args.rays), "--samples", str(args.samples)]
    rows = []
    for bf16 in (p == "bf16" for p in args.memory_precisions):
        for method, rank in configs(args.ranks):
            one = ["--one", method, str(rank or 0), *shared, *(["--bf16"] if bf16 else [])]
            row = json_child(__spec__.name, one, pin=args.device == "cpu")
            rows.append(row)
            precision = "bf16" if bf16 else "fp32"
            name = config_name(method, rank)
            print(f"{precision} {name:18s} peak {row['peak_bytes'] / MIB:9.1f} MiB", flush=True)
    return rows


def memory_summary(rows: list[dict]) -> dict[str, float]:
    """Peak MiB per configuration and, per rank, sine's peak over plain's (Table 12's ratio)."""
    summary: dict[str, float] = {}
    peaks = {}
    for row in rows:
        precision = "bf16" if row["bf16"] else "fp32"
        rank = row["rank"] or None
        peaks[precision, row["method"], rank] = row["peak_bytes"]
        name = config_name(row["method"], rank)
        summary[f"{precision}_{name}_peak_mib"] = round(row["peak_bytes"] / MIB, 1)
    for (precision, method, rank), peak in peaks.items():
        if method == "sine_lowrank" and (precision, "lowrank", rank) in peaks:
            plain = peaks[precision, "lowrank", rank]
            summary[f"{precision}_sine_vs_plain_k{rank}_peak_mem"] = round(peak / plain, 4)
    return summary


def report_rows(rows: list[dict]) -> list[dict]:
    """The fp32 rows ``sinelr.report`` sets beside the paper's Table 12 (MiB)."""
    return [
        {"method": r["method"], "rank": r["rank"] or None, "value": round(r["peak_bytes"] / MIB, 1)}
        for r in rows
        if not r["bf16"]
    ]


def settings(args: argparse.Namespace) -> RenderSettings:
    return RenderSettings(
        n_samples=args.samples, n_importance=args.samples, perturb=True, noise_std=1.0
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rays", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=64, help="coarse; as many again fine")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 5, 10, 30, 60])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--memory-only", action="store_true", help="peak memory, no timing")
    parser.add_argument(
        "--memory-precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "RANK"), help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, rank = args.one[0], int(args.one[1]) or None
        print(json.dumps(measure_memory(method, rank, args)))
        return 0
    summary: dict = {"device": args.device, "rays": args.rays, "samples": args.samples}
    if not args.memory_only:

        def make_step(method: str, rank: int | None, bf16: bool):
            return nerf_step(build(method, rank), args.rays, settings(args), bf16, args.device)

        summary |= compare_methods(make_step, args.ranks, args.rays, "rays", args.reps)
    rows = memory_table(args)
    summary |= memory_summary(rows)
    if args.json:
        report = {"table": "Table 12", "unit": "MiB", "rows": report_rows(rows)}
        args.json.write_text(
            json.dumps({"rows": rows, "summary": summary, "report": report}, indent=2)
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
