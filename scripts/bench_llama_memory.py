"""Table 6 without a GPU: LLaMA-3-8B training memory for LoRA, sine LoRA, DoRA and sine DoRA.

The paper prints the training memory of fine-tuning LLaMA-3-8B on commonsense_170k (Table 6).
This script estimates it from parts that fit a CPU:

* **Measured**: one full-size LLaMA-3-8B decoder layer (hidden 4096, MLP 14336, 32 query and
  8 key/value heads, built from the shipped ``hf_configs`` file, no download), its frozen
  weights in bf16, adapters put on q, k, v, up and down by ``sinelr.apply.apply_lowrank`` (the
  targets of ``conf/task/commonsense.yaml``), one forward under bf16 autocast and one backward
  of a random output gradient (the layer sits in the middle of the stack), then one AdamW step.
  Each configuration runs in its own process; memory is counted from a baseline taken after the
  imports, as ``bench_layers.py`` counts it on CPU (``PeakMemory``): the resident set, with
  glibc's malloc returning freed tensors at once. A GPU needs no estimate. Read out:
  ``saved_bytes``, what the forward keeps for backward (and the layer's output);
  ``peak_bytes``, the high-water mark of forward + backward; ``state_bytes``, what AdamW's
  first step adds. The head (final norm, ``lm_head`` and transformers' own next-token loss,
  ``ForCausalLMLoss``) is measured the same way at ``--head-batches``: the same for every
  method.
* **Counted**: the frozen weights of the whole model (embeddings and ``lm_head`` included,
  counted on the meta device) and the adapters' parameters, gradients and AdamW state (fp32).
* **Extrapolated** (:func:`full_model_bytes`): frozen weights + 32 × (adapter memory + what a
  layer keeps for backward) + the largest transient on top of that, which is one layer's
  backward or the head's, not 32 of them. Without a batch of the paper's size, activations are
  fitted as a line in the batch over the ``--batches`` measured (:func:`linear_fit`; the JSON
  gives the worst residual) and read off at ``--target-batch``.

The paper's setting (batch 16, 256 tokens: DoRA's LLaMA-3 scripts, as in
``conf/task/commonsense.yaml``) keeps every activation: DoRA's script passes
``--use_gradient_checkpointing``, but the ``prepare_model_for_int8_training`` of the PEFT copy
that DoRA's and the authors' code carry enables it only for 8-bit models, and the authors'
``finetune.py`` loads the base in fp16. The JSON also has the estimate with
gradient checkpointing on (each layer keeps only its input; one layer's forward and backward
at a time), as ``conf/task/commonsense.yaml`` trains by default.

``--paths naive`` also measures the sine and DoRA variants with ``fused=False``: the update
built whole by plain autograd, kept for backward, as the authors' sine LoRA does.

    python -m scripts.bench_llama_memory --batches 16 --head-batches 1 2 4 --paths fused naive \
        --json benchmarks/table6_memory_cpu.json                     # RESULTS §14, ~50 min
    python -m scripts.bench_llama_memory --batches 2 4 8             # smaller steps, a line
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

import yaml

from scripts.bench_adapters import omega_for
from scripts.bench_layers import PeakMemory, json_child

ROOT = Path(__file__).resolve().parents[1]

MODEL = "meta-llama/Meta-Llama-3-8B"
TASK = yaml.safe_load((ROOT / "conf" / "task" / "commonsense.yaml").read_text())
METHODS = ("lora", "sine_lora", "dora", "sine_dora")
RANKS = (8, 16, 32)  # Table 6's columns
GIB = 2**30


def llama_config(**overrides):
    """LLaMA-3-8B's configuration, from the file shipped with sinelr, with ``overrides``."""
    from sinelr.pretrained import load_config

    return load_config(MODEL, attn_implementation="sdpa", **overrides)


def frozen_model_bytes(config, dtype_bytes: int = 2) -> int:
    """The whole model's weights in a 16-bit dtype, counted on the meta device (no memory)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return sum(p.numel() for p in model.parameters()) * dtype_bytes


def build_layer(config, method: str, rank: int, fused: bool):
    """One decoder layer, bf16, frozen, with ``method``'s adapters on the commonsense targets."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from sinelr.apply import apply_lowrank
    from sinelr.layers import LowRankConfig

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: no fp32 copy in the peak
    try:
        layer = LlamaDecoderLayer(config, layer_idx=0)
    finally:
        torch.set_default_dtype(default)
    layer.requires_grad_(False)
    lowrank = LowRankConfig(method, rank, omega=omega_for(method, rank), fused=fused)
    apply_lowrank(layer, list(TASK["targets"]), lowrank)
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name.endswith("lora_B"):  # a trained adapter, not the B = 0 start
                param.normal_(0.0, 0.02)
    return layer


def build_head(config):
    """The final norm and ``lm_head`` of the model, bf16, frozen."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        head = torch.nn.Sequential(
            LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps),
            torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False),
        )
    finally:
        torch.set_default_dtype(default)
    return head.requires_grad_(False)


def measure(config, part: str, method: str, rank: int, batch: int, seq: int, fused: bool) -> dict:
    """Memory of one training step of a layer (``part="layer"``) or of the head, in bytes."""
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    import sinelr.apply  # noqa: F401  (imported before the baseline, as every library)

    memory = PeakMemory("cpu")
    module = build_layer(config, method, rank, fused) if part == "layer" else build_head(config)
    trainable = [p for p in module.parameters() if p.requires_grad]
    built = memory.now()
    x = torch.randn(batch, seq, config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    if part == "layer":
        positions = torch.arange(seq).unsqueeze(0)
        rope = LlamaRotaryEmbedding(config)(x, positions)
        grad_out = torch.randn_like(x)
    else:
        labels = torch.randint(config.vocab_size, (batch, seq))
    step = PeakMemory("cpu")  # from here on: activations, not weights or inputs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if part == "layer":
            out = module(x, position_embeddings=rope)
        else:
            out = ForCausalLMLoss(module(x), labels, config.vocab_size)
    saved = step.now()
    out.backward(grad_out if part == "layer" else None)
    peak = step.peak()
    del out
    state = 0
    if trainable:
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        before = memory.now()
        optimizer.step()
        state = memory.now() - before
    trainable_numel = sum(p.numel() for p in trainable)
    frozen = sum(p.numel() * p.element_size() for p in module.parameters() if not p.requires_grad)
    return {
        "part": part,
        "method": method if part == "layer" else None,
        "rank": rank if part == "layer" else None,
        "path": "fused" if fused else "naive",
        "batch": batch,
        "seq": seq,
        "frozen_bytes": frozen,
        "trainable": trainable_numel,
        "built_bytes": built,
        "saved_bytes": saved,
        "peak_bytes": peak,
        "state_bytes": state,
        "input_bytes": x.numel() * x.element_size(),
        "threads": torch.get_num_threads(),
    }


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = slope·x + intercept`` and the worst residual relative to the largest
    ``y`` (0 for one point, read as a constant: no line through it can be checked)."""
    if len(xs) == 1:
        return 0.0, ys[0], 0.0
    slope, intercept = statistics.linear_regression(xs, ys)
    worst = max(abs(y - (slope * x + intercept)) for x, y in zip(xs, ys, strict=True))
    return slope, intercept, worst / max(abs(y) for y in ys)


def at_batch(rows: list[dict], key: str, batch: int) -> tuple[float, float]:
    """``key`` at ``batch``: measured if it was, else read off the line through the batches
    measured (one point: proportional to the batch). Returns the value and the fit's worst
    relative residual."""
    by_batch = {row["batch"]: row[key] for row in rows}
    if batch in by_batch:
        return float(by_batch[batch]), 0.0
    xs = sorted(by_batch)
    if len(xs) == 1:
        return by_batch[xs[0]] * batch / xs[0], 0.0
    slope, intercept, worst = linear_fit(xs, [by_batch[x] for x in xs])
    return slope * batch + intercept, worst


def full_model_bytes(
    frozen_total: int,
    adapter_bytes: float,
    kept_bytes: float,
    layer_transient: float,
    head_transient: float,
    layers: int,
) -> float:
    """The peak of a training step of the whole model.

    Every layer's adapters (parameters, gradients, AdamW state) and what it keeps for backward
    are live together at the start of backward; above them, one transient at a time: the
    head's loss and its gradient, or one layer's backward, whichever is larger.
    """
    if min(frozen_total, adapter_bytes, kept_bytes, layer_transient, head_transient) < 0:
        raise ValueError("memory parts must be non-negative; a negative one is a bad measurement")
    return (
        frozen_total + layers * (adapter_bytes + kept_bytes) + max(layer_transient, head_transient)
    )


def estimate(
    rows: list[dict], frozen_total: int, layers: int, batch: int, ckpt: bool
) -> list[dict]:
    """Table 6 per (method, rank, path) from the measured rows, at ``batch``."""
    head_rows = [r for r in rows if r["part"] == "head"]
    head_peak, head_fit = at_batch(head_rows, "peak_bytes", batch) if head_rows else (0.0, 0.0)
    out = []
    keys = sorted({(r["method"], r["rank"], r["path"]) for r in rows if r["part"] == "layer"})
    for method, rank, path in keys:
        mine = [
            r
            for r in rows
            if (r["part"], r["method"], r["rank"], r["path"]) == ("layer", method, rank, path)
        ]
        saved, saved_fit = at_batch(mine, "saved_bytes", batch)
        peak, peak_fit = at_batch(mine, "peak_bytes", batch)
        inputs, _ = at_batch(mine, "input_bytes", batch)
        adapter = mine[0]["trainable"] * 4 * 4  # fp32 parameter, gradient, exp_avg, exp_avg_sq
        kept, transient = (inputs, peak) if ckpt else (saved, peak - saved)
        total = full_model_bytes(frozen_total, adapter, kept, transient, head_peak, layers)
        out.append({
            "method": method, "rank": rank, "path": path, "batch": batch,
            "checkpointing": ckpt, "total_bytes": total, "frozen_bytes": frozen_total,
            "adapter_bytes": layers * adapter, "kept_bytes": layers * kept,
            "transient_bytes": max(transient, head_peak), "layer_saved_bytes": saved,
            "layer_peak_bytes": peak, "head_peak_bytes": head_peak,
            "fit_worst_residual": max(saved_fit, peak_fit, head_fit),
        })  # fmt: skip
    return out


def report_rows(estimates: list[dict], path: str) -> list[dict]:
    """The rows ``sinelr.report`` sets beside the paper's Table 6: GiB, one path, the paper's
    setting (no gradient checkpointing)."""
    return [
        {"method": e["method"], "rank": e["rank"], "value": round(e["total_bytes"] / GIB, 2)}
        for e in estimates
        if e["path"] == path and not e["checkpointing"]
    ]


def child_args(
    part: str, method: str, rank: int, batch: int, args: argparse.Namespace, fused: bool
) -> list[str]:
    return [
        "--one", part, method, str(rank), str(batch), "--seq", str(args.seq),
        *([] if fused else ["--naive"]),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8])
    parser.add_argument("--batches", type=int, nargs="+", default=[TASK["batch_size"]])
    parser.add_argument("--target-batch", type=int, default=TASK["batch_size"])
    parser.add_argument("--seq", type=int, default=TASK["max_length"])
    parser.add_argument("--paths", nargs="+", default=["fused"], choices=["fused", "naive"])
    parser.add_argument(
        "--head-batches", type=int, nargs="*", help="the head's batches (default --batches)"
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
        part, method, rank, batch = args.one
        config = llama_config(num_hidden_layers=1)
        row = measure(config, part, method, int(rank), int(batch), args.seq, not args.naive)
        print(json.dumps(row))
        return 0
    rows = []
    head_batches = args.batches if args.head_batches is None else args.head_batches
    jobs = [("head", "none", 0, batch, True) for batch in head_batches]
    jobs += [
        ("layer", method, rank, batch, path == "fused")
        for path in args.paths
        for method in args.methods
        for rank in args.ranks
        for batch in args.batches
        if path == "fused" or method != "lora"  # LoRA never builds its update: one path
    ]
    for part, method, rank, batch, fused in jobs:
        row = json_child(
            __spec__.name, child_args(part, method, rank, batch, args, fused), pin=True
        )
        rows.append(row)
        print(
            f"{part:5s} {method:9s} k={rank:<3d} {row['path']:5s} batch {batch:3d}: saved "
            f"{row['saved_bytes'] / GIB:7.3f} GiB  peak {row['peak_bytes'] / GIB:7.3f} GiB  "
            f"built {row['built_bytes'] / GIB:6.3f} GiB  "
            f"AdamW state {row['state_bytes'] / 2**20:6.1f} MiB",
            flush=True,
        )
    result = summarise(rows, args.target_batch, args.seq)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"]))
    return 0


def summarise(rows: list[dict], batch: int, seq: int) -> dict:
    """The whole model's estimates from the measured ``rows``, printed and as the JSON."""
    config = llama_config()
    frozen = frozen_model_bytes(config)
    layers = config.num_hidden_layers
    estimates = [e for ckpt in (False, True) for e in estimate(rows, frozen, layers, batch, ckpt)]
    lora = {
        (e["rank"], e["checkpointing"]): e["total_bytes"]
        for e in estimates
        if e["method"] == "lora"
    }
    for e in estimates:
        base = lora.get((e["rank"], e["checkpointing"]), math.nan)
        print(
            f"LLaMA-3-8B {e['method']:9s} k={e['rank']:<3d} {e['path']:5s} "
            f"{'checkpointing' if e['checkpointing'] else 'all kept':13s}: "
            f"{e['total_bytes'] / GIB:6.1f} GiB, {e['total_bytes'] / base:.3f}x LoRA"
        )
    summary = {
        "model": MODEL,
        "seq": seq,
        "target_batch": batch,
        "measured_batches": sorted({r["batch"] for r in rows if r["part"] == "layer"}),
        "frozen_model_bytes": frozen,
        "device": "cpu",
    }
    return {
        "rows": rows,
        "estimates": estimates,
        "summary": summary,
        "report": {"table": "Table 6", "unit": "GiB", "rows": report_rows(estimates, "fused")},
    }


if __name__ == "__main__":
    sys.exit(main())
