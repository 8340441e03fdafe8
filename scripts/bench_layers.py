"""Time and peak memory of the sine path against plain low rank, dense and LoRA.

Two fixed workloads, forward + backward:

* ``scratch``: one ViT-S MLP (fc1 384→1536, GELU, fc2 1536→384) on 64 images × 65 tokens,
  as dense, plain low rank, sine naive (plain autograd) and sine fused (row-blocked), k = 10.
* ``adapters``: 8 frozen 4096×4096 linears on 4 × 128 tokens with LoRA, sine LoRA naive and
  sine LoRA fused, r = 8.

Each configuration runs in its own processes, one timing it and one measuring its memory. Peak
memory is counted from a baseline taken after imports and before the model is built, so weights
and activations count and the interpreter does not: on CUDA with ``max_memory_allocated``; on
CPU as the peak resident set size above that baseline (the kernel's high-water mark is reset at
the baseline, and glibc's malloc is pinned to return freed tensors to the kernel at once, so
the peak follows live tensors). That pinning makes every large allocation fault in fresh
pages, which would penalise code that allocates often, so times come from a separate process
with the default allocator.

The last line printed is one JSON object with the headline ratios.

    python -m scripts.bench_layers [--quick] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT_BYTES = 4096 * 4096 * 4  # one 4096×4096 fp32 matrix
CONFIGS = {
    "scratch": ["dense", "lowrank", "sine_naive", "sine_fused"],
    "adapters": ["lora", "sine_lora_naive", "sine_lora_fused"],
}
SCRATCH_RANK, SCRATCH_OMEGA = 10, 300.0  # the paper's ViT-S/CIFAR-100 setting at k = 10
ADAPTER_RANK, ADAPTER_OMEGA, ADAPTER_LAYERS = 8, 200.0, 8


def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match, field
    return int(match.group(1))


class PeakMemory:
    """Peak bytes allocated above the point of construction."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        if device == "cuda":
            torch.cuda.init()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.baseline = _status_kb("VmRSS") * 1024

    def peak(self) -> int:
        import torch

        if self.device == "cuda":
            return torch.cuda.max_memory_allocated() - self.baseline
        return _status_kb("VmHWM") * 1024 - self.baseline

    def now(self) -> int:
        """Bytes allocated now above the baseline: what is still live after a phase."""
        import torch

        if self.device == "cuda":
            return torch.cuda.memory_allocated() - self.baseline
        return _status_kb("VmRSS") * 1024 - self.baseline


def build(workload: str, variant: str, device: str):
    """The model and its input for one configuration."""
    import torch
    from torch import nn

    from sinelr.apply import apply_lowrank
    from sinelr.layers import LowRankConfig

    torch.manual_seed(0)
    fused = not variant.endswith("naive")
    if workload == "scratch":
        model = nn.Sequential(nn.Linear(384, 1536), nn.GELU(), nn.Linear(1536, 384))
        kind = {"dense": None, "lowrank": "lowrank"}.get(variant, "sine_lowrank")
        if kind is not None:
            omega = SCRATCH_OMEGA if kind == "sine_lowrank" else None
            config = LowRankConfig(kind, rank=SCRATCH_RANK, omega=omega, fused=fused)
            apply_lowrank(model, ["0", "2"], config)
        x = torch.randn(64, 65, 384, device=device, requires_grad=True)
    else:
        model = nn.Sequential(*(nn.Linear(4096, 4096) for _ in range(ADAPTER_LAYERS)))
        kind = "lora" if variant == "lora" else "sine_lora"
        omega = ADAPTER_OMEGA if kind == "sine_lora" else None
        config = LowRankConfig(kind, rank=ADAPTER_RANK, omega=omega, fused=fused)
        apply_lowrank(model, r"\d+", config)
        for layer in model:
            nn.init.normal_(layer.lora_B, std=0.02)  # a trained adapter, not the B = 0 start
        x = torch.randn(4, 128, 4096, device=device)
    return model.to(device), x


def train_step(model, x):
    """One forward + backward, gradients dropped, the device synchronised."""
    import torch

    def step() -> None:
        model(x).square().mean().backward()
        for p in model.parameters():
            p.grad = None
        x.grad = None
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def adam_step(parameters, loss_fn, bf16: bool, lr: float = 1e-3, device: str = "cpu"):
    """One Adam step on ``loss_fn()``, the forward under bf16 autocast if ``bf16``; on CUDA the
    device is synchronised, so that the step's time is the kernels' time."""
    import torch

    optimizer = torch.optim.Adam(parameters, lr=lr)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def median_time(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_methods(make_step, ranks: list[int], items: int, unit: str, reps: int) -> dict:
    """Time dense, then plain and sine low rank at each rank, in fp32 and in bf16 autocast.

    ``make_step(method, rank, bf16)`` returns one training step of a freshly built model;
    ``items`` per step (rays, images) gives the throughput. Returns ``<unit>_per_s`` per
    configuration and every configuration's time relative to dense, as the task benchmarks
    report them.
    """
    import torch

    configs = [("dense", None)] + [(m, k) for k in ranks for m in ("lowrank", "sine_lowrank")]
    summary: dict[str, float | str] = {}
    for precision in ("fp32", "bf16"):
        times = {}
        for method, rank in configs:
            name = method if rank is None else f"{method}_k{rank}"
            times[name] = median_time(make_step(method, rank, precision == "bf16"), 2, reps)
            rate = items / times[name]
            print(f"{precision} {name:18s} {times[name] * 1e3:8.1f} ms/step {rate:9.1f} {unit}/s")
            summary[f"{precision}_{name}_{unit}_per_s"] = round(rate, 1)
        for name, seconds in times.items():
            if name != "dense":
                summary[f"{precision}_{name}_vs_dense_time"] = round(seconds / times["dense"], 3)
    summary["threads"] = str(torch.get_num_threads())
    return summary


def measure_one(workload: str, variant: str, device: str, warmup: int, reps: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    memory = PeakMemory(device)
    model, x = build(workload, variant, device)
    return {
        "workload": workload,
        "variant": variant,
        "time_s": median_time(train_step(model, x), warmup, reps),
        "peak_bytes": memory.peak(),
        "threads": torch.get_num_threads(),
    }


def json_child(module: str, args: list[str], pin: bool) -> dict:
    """Run ``python -m module args`` in a fresh interpreter, from the repository root (where
    ``scripts`` and ``tasks`` import); its last line of output is a JSON object.

    ``pin``: glibc's malloc returns every freed tensor to the kernel at once, so that the
    process's peak resident set follows its live tensors (for memory, not for time).
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"} if pin else None
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(workload: str, variant: str, device: str, warmup: int, reps: int, pin: bool) -> dict:
    args = ["--one", workload, variant, "--device", device]
    return json_child(__spec__.name, [*args, "--warmup", str(warmup), "--reps", str(reps)], pin)


def run_isolated(workload: str, variant: str, device: str, warmup: int, reps: int) -> dict:
    """Time from one process; peak memory from another (pinned allocator on CPU)."""
    timed = _child(workload, variant, device, warmup, reps, pin=False)
    if device == "cpu":
        timed["peak_bytes"] = _child(workload, variant, device, 1, 1, pin=True)["peak_bytes"]
    return timed


def summarise(rows: list[dict], device: str) -> dict:
    by = {(r["workload"], r["variant"]): r for r in rows}

    def ratio(a: tuple, b: tuple, key: str) -> float:
        return round(by[a][key] / by[b][key], 4)

    lora = ("adapters", "lora")
    dense = ("scratch", "dense")
    summary = {
        "sine_lora_fused_vs_lora_peak_mem": ratio(
            ("adapters", "sine_lora_fused"), lora, "peak_bytes"
        ),
        "sine_lora_naive_vs_lora_peak_mem": ratio(
            ("adapters", "sine_lora_naive"), lora, "peak_bytes"
        ),
        "sine_lora_fused_extra_units": round(
            (by["adapters", "sine_lora_fused"]["peak_bytes"] - by[lora]["peak_bytes"]) / UNIT_BYTES,
            3,
        ),
        "sine_lora_naive_extra_units": round(
            (by["adapters", "sine_lora_naive"]["peak_bytes"] - by[lora]["peak_bytes"]) / UNIT_BYTES,
            3,
        ),
        "sine_lr_fused_vs_dense_time": ratio(("scratch", "sine_fused"), dense, "time_s"),
        "sine_lr_naive_vs_dense_time": ratio(("scratch", "sine_naive"), dense, "time_s"),
        "lowrank_vs_dense_time": ratio(("scratch", "lowrank"), dense, "time_s"),
        "sine_lora_fused_vs_lora_time": ratio(("adapters", "sine_lora_fused"), lora, "time_s"),
        "sine_lora_naive_vs_lora_time": ratio(("adapters", "sine_lora_naive"), lora, "time_s"),
        "sine_lr_fused_vs_dense_peak_mem": ratio(("scratch", "sine_fused"), dense, "peak_bytes"),
        "sine_lr_naive_vs_dense_peak_mem": ratio(("scratch", "sine_naive"), dense, "peak_bytes"),
        "device": device,
    }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 2 min on CPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one, args.device, args.warmup, args.reps)))
        return 0
    rows = []
    for workload, variants in CONFIGS.items():
        warmup, reps = (1, 3) if args.quick else (2, 10)
        if workload == "adapters" and args.device == "cpu":
            warmup, reps = (1, 2) if args.quick else (1, 5)
        for variant in variants:
            row = run_isolated(workload, variant, args.device, warmup, reps)
            rows.append(row)
            print(
                f"{workload:9s} {variant:16s} {row['time_s'] * 1e3:9.1f} ms  "
                f"peak {row['peak_bytes'] / 2**20:8.1f} MiB  ({row['threads']} threads)",
                flush=True,
            )
    summary = summarise(rows, args.device)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
