"""Does ``torch.compile`` help the sine path? Eager against compiled, side by side.

Each answered by timing the library's own code both ways in one process:

* the block builder ``sine_weight`` (``base + scale·sin(ω·B A)`` for a 256×4096 block of a
  4096×4096 sine-LoRA layer): compiled, its element-wise steps fuse into one pass;
* a whole training step (forward + backward) of the two workloads of ``bench_layers.py`` with
  the fused sine layers, as ``model`` and as ``torch.compile(model)``.

    python -m scripts.bench_compile [--reps N]

The last line printed is one JSON object of eager/compiled time ratios (> 1: compile helps).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from scripts.bench_layers import build, median_time, train_step
from sinelr.layers import sine_weight


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    ratios: dict[str, float] = {}

    B, A, base = torch.randn(256, 8) * 0.02, torch.randn(8, 4096) * 0.02, torch.randn(256, 4096)
    compiled_weight = torch.compile(sine_weight)
    with torch.no_grad():
        eager = median_time(lambda: sine_weight(B, A, 200.0, 0.05, base), 2, 20 * args.reps)
        compiled = median_time(lambda: compiled_weight(B, A, 200.0, 0.05, base), 2, 20 * args.reps)
    print(f"block builder  eager {eager * 1e3:7.2f} ms  compiled {compiled * 1e3:7.2f} ms")
    ratios["block_builder_eager_vs_compiled"] = round(eager / compiled, 3)

    for workload, variant in [("scratch", "sine_fused"), ("adapters", "sine_lora_fused")]:
        model, x = build(workload, variant, "cpu")
        eager = median_time(train_step(model, x), 2, args.reps)
        kernels = median_time(
            train_step(*build(workload, f"{variant}_compiled", "cpu")), 3, args.reps
        )
        whole = median_time(train_step(torch.compile(model), x), 3, args.reps)
        print(
            f"{workload:9s} step  eager {eager * 1e3:7.1f} ms  compiled kernels "
            f"{kernels * 1e3:7.1f} ms  torch.compile(model) {whole * 1e3:7.1f} ms"
        )
        ratios[f"{workload}_step_eager_vs_compiled_kernels"] = round(eager / kernels, 3)
        ratios[f"{workload}_step_eager_vs_compiled_model"] = round(eager / whole, 3)
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
