"""Our adapters against Hugging Face PEFT's on one model and batch: step time and peak memory.

The model is a randomly initialised Llama, hidden 2048 and 4 layers by default, in LLaMA's
proportions (heads of 128, 4 query heads per key/value head, MLP 8/3 of the hidden size rounded
up to 256: 5632), with rank-8 adapters on q, k, v, up and down projections of every layer and a
batch of 4 × 256 tokens. One step is a forward and backward pass of the next-token loss and an
Adam step of the adapters. Side by side: PEFT's LoRA, our LoRA, our sine LoRA,
PEFT's DoRA, our DoRA, our sine DoRA (ω: the paper's commonsense value at the rank, or 200),
our two DoRAs with ``lowrank.detach_norm=true`` (``*_detached``: the weight norm a constant in
the backward pass, as PEFT's DoRA and ``preset=paper``; the others differentiate through it),
and PEFT with sinelr.peft's sine LoRA and sine DoRA (``peft_sine_*``: PEFT's layers, our sine).
Then the other low-rank methods, each plain and sine (docs/method.md), beside PEFT's own where
PEFT has it: PiSSA (``peft_pissa``: ``init_lora_weights="pissa"``), VeRA, LoRA-XS (no PEFT
implementation) and HiRA. PiSSA and LoRA-XS take an SVD of every targeted weight when the
model is built; their peak memory counts it wherever it exceeds the training step's (as it does
for PEFT's PiSSA).

Each variant runs in fresh processes, as in bench_layers.py: one times it (median of ``--reps``
steps after ``--warmup``), another measures its peak memory above a baseline taken after the
imports and before the model is built. So the peak counts the frozen weights (the same for every
variant, reported as ``weights_bytes``), the adapters, their gradients and Adam states, and the
activations kept for backward: on CUDA ``torch.cuda.max_memory_allocated``, on CPU the peak
resident set (VmHWM) with glibc's malloc returning freed tensors at once (``peak_bytes``).

``--memory-only`` skips the timing processes (peak memory does not depend on the machine being
quiet; times do).

The last line printed is one JSON object with the ratios the issues set targets for: our LoRA's
time over PEFT LoRA's (≤ 1.05), sine LoRA's peak over PEFT LoRA's (≤ 1.05), sine DoRA's peak over
PEFT DoRA's (≤ 1), PEFT + sinelr.peft's sine LoRA / sine DoRA peaks over PEFT LoRA's / DoRA's
(≤ 1.05).

    python -m scripts.bench_adapters [--device cuda] [--bf16] [--json out.json]
    python -m scripts.bench_adapters --hidden 256 --layers 1 --reps 1   # a check, seconds
    python -m scripts.bench_adapters --memory-only --variants peft_lora peft_sine_lora \
        peft_dora peft_sine_dora                                       # sinelr.peft's peaks
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from scripts.bench_layers import PeakMemory, adam_step, json_child, median_time

VARIANTS = [
    "peft_lora", "lora", "sine_lora",
    "peft_dora", "dora", "sine_dora", "dora_detached", "sine_dora_detached",
    "peft_sine_lora", "peft_sine_dora",
    "peft_pissa", "pissa", "sine_pissa",
    "peft_vera", "vera", "sine_vera",
    "loraxs", "sine_loraxs",
    "peft_hira", "hira", "sine_hira",
]  # fmt: skip
#: PEFT's implementation of each plain variant that has one, and how to configure it.
PEFT_METHODS = {"peft_pissa": "pissa", "peft_vera": "vera", "peft_hira": "hira"}
#: Parameters that start at zero (so that ΔW = 0) and are set to a trained state before timing.
ZERO_STARTS = ("lora_B", "lambda_b", "hira_B")
DETACHED = "_detached"
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def llama_config(hidden: int, layers: int, vocab: int, seq: int):
    from transformers import LlamaConfig

    heads = max(1, hidden // 128)
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=-(-8 * hidden // 3 // 256) * 256,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        max_position_embeddings=seq,
    )


def omega_for(variant: str, rank: int) -> float | None:
    """The paper's commonsense ω for a sine variant at ``rank`` (200 where it gives none,
    as for every method but LoRA and DoRA)."""
    from sinelr.paper import PAPER, paper_key

    variant = variant.removesuffix(DETACHED).removeprefix("peft_")
    if not variant.startswith("sine_"):
        return None
    family = variant.removeprefix("sine_")
    if family not in ("lora", "dora"):
        return 200.0
    table = PAPER[paper_key("commonsense", family)].omega
    return float(table.get(rank, 200.0))


def build(variant: str, args: argparse.Namespace):
    """The adapted model on ``args.device`` and its trainable parameters."""
    import torch
    from transformers import LlamaForCausalLM

    from sinelr.apply import apply_lowrank
    from sinelr.layers import LowRankConfig

    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(llama_config(args.hidden, args.layers, args.vocab, args.seq))
    model.requires_grad_(False)
    if variant in PEFT_METHODS:
        model = peft_model(model, PEFT_METHODS[variant], args)
    elif variant.startswith("peft_"):
        import peft

        options = {
            "r": args.rank,
            "lora_alpha": args.rank,
            "target_modules": TARGETS,
            "lora_dropout": 0.0,
            "use_dora": variant.endswith("dora"),
        }
        if variant.startswith("peft_sine_"):
            import sinelr.peft

            config = sinelr.peft.SineLoraConfig(**options, omega=omega_for(variant, args.rank))
        else:
            config = peft.LoraConfig(**options)
        model = peft.get_peft_model(model, config)
    else:
        config = LowRankConfig(
            variant.removesuffix(DETACHED),
            args.rank,
            omega=omega_for(variant, args.rank),
            detach_norm=variant.endswith(DETACHED),
        )
        apply_lowrank(model, TARGETS, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(zero in name for zero in ZERO_STARTS):  # a trained adapter, not ΔW = 0
                param.normal_(0.0, 0.02)
    return model, [p for p in model.parameters() if p.requires_grad]


def peft_model(model, method: str, args: argparse.Namespace):
    """PEFT's PiSSA, VeRA or HiRA on ``model``, at ``args.rank`` on the benchmark's targets."""
    import peft

    if method == "pissa":
        config = peft.LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=TARGETS,
                                 lora_dropout=0.0, init_lora_weights="pissa")  # fmt: skip
    elif method == "vera":
        config = peft.VeraConfig(r=args.rank, target_modules=TARGETS, vera_dropout=0.0)
    else:
        config = peft.HiraConfig(r=args.rank, target_modules=TARGETS, hira_dropout=0.0)
    return peft.get_peft_model(model, config)


def measure_one(variant: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    # Every library is imported before the baseline: its code is not what is measured.
    import peft  # noqa: F401
    from transformers import LlamaForCausalLM  # noqa: F401

    import sinelr.apply

    if variant.startswith("peft_sine_"):
        import sinelr.peft  # noqa: F401

    memory = PeakMemory(args.device)
    model, trainable = build(variant, args)
    ids = torch.randint(args.vocab, (args.batch, args.seq), device=args.device, generator=None)
    step = adam_step(
        trainable,
        lambda: model(input_ids=ids, labels=ids).loss,
        args.bf16,
        lr=1e-4,
        device=args.device,
    )
    time_s = median_time(step, args.warmup, args.reps)
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    return {
        "variant": variant,
        "time_s": time_s,
        "peak_bytes": memory.peak(),
        "weights_bytes": weights,
        "trainable": sum(p.numel() for p in trainable),
        "threads": torch.get_num_threads(),
    }


def run_isolated(variant: str, args: argparse.Namespace) -> dict:
    """Time from one process; peak memory from another (pinned allocator on CPU)."""
    shared = [
        "--one", variant, "--device", args.device, "--hidden", str(args.hidden),
        "--layers", str(args.layers), "--batch", str(args.batch), "--seq", str(args.seq),
        "--rank", str(args.rank), "--vocab", str(args.vocab),
        *(["--bf16"] if args.bf16 else []),
    ]  # fmt: skip
    one_step = ["--warmup", "1", "--reps", "1"]
    if args.memory_only:
        return {
            **json_child(__spec__.name, [*shared, *one_step], args.device == "cpu"),
            "time_s": None,
        }
    timing = ["--warmup", str(args.warmup), "--reps", str(args.reps)]
    row = json_child(__spec__.name, [*shared, *timing], pin=False)
    if args.device == "cpu":
        row["peak_bytes"] = json_child(__spec__.name, [*shared, *one_step], True)["peak_bytes"]
    return row


def summarise(rows: list[dict], args: argparse.Namespace) -> dict:
    by = {row["variant"]: row for row in rows}

    def ratio(a: str, b: str, key: str) -> float | None:
        if a not in by or b not in by or by[a][key] is None or by[b][key] is None:
            return None
        return round(by[a][key] / by[b][key], 4)

    pairs = [("lora", "peft_lora"), ("sine_lora", "peft_lora"), ("peft_sine_lora", "peft_lora")]
    pairs += [(dora, "peft_dora") for dora in VARIANTS if "dora" in dora and dora != "peft_dora"]
    for peft_variant, method in PEFT_METHODS.items():
        pairs += [(method, peft_variant), (f"sine_{method}", peft_variant)]
    summary: dict = {}
    for ours, theirs in pairs:
        summary[f"{ours}_vs_{theirs}_time"] = ratio(ours, theirs, "time_s")
        summary[f"{ours}_vs_{theirs}_peak_mem"] = ratio(ours, theirs, "peak_bytes")
    summary.update(
        device=args.device,
        bf16=args.bf16,
        shape=f"hidden {args.hidden}, {args.layers} layers, {args.batch}x{args.seq} tokens, "
        f"r={args.rank}",
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (weights stay fp32)")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--memory-only", action="store_true", help="peak memory, no timing")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args)))
        return 0
    rows = []
    for variant in args.variants:
        row = run_isolated(variant, args)
        rows.append(row)
        time_ms = "untimed" if row["time_s"] is None else f"{row['time_s'] * 1e3:.1f} ms"
        print(
            f"{variant:18s} {time_ms:>13s}  peak {row['peak_bytes'] / 2**20:9.1f} "
            f"MiB  (weights {row['weights_bytes'] / 2**20:.1f} MiB, {row['trainable']} trained, "
            f"{row['threads']} threads)",
            flush=True,
        )
    summary = summarise(rows, args)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
