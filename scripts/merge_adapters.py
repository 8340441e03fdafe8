"""Export a fine-tuned run: adapters merged into a plain transformers checkpoint, or PEFT adapters.

    python -m scripts.merge_adapters outputs/runs/<run> --out merged/         # merged weights
    python -m scripts.merge_adapters outputs/runs/<run>/checkpoints/last.ckpt --out lora/ --peft

The run (a directory with ``checkpoints/last.ckpt``, or the checkpoint itself) is rebuilt from
the configuration its checkpoint carries, which needs its base model (``task.model``) at hand.
The merged checkpoint loads with ``AutoModelFor...from_pretrained(out)``; ``--peft`` (adapter runs)
with ``PeftModel.from_pretrained(base, out)``: plain LoRA, DoRA, HiRA and VeRA in PEFT's own
format, PiSSA as the rank-2r LoRA PEFT converts it to (for the original base model), sine LoRA
and sine DoRA in sinelr.peft's, which loads after ``import sinelr.peft`` (docs/peft.md). Other
variants are refused with the reason; a merged checkpoint works for every variant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sinelr.export import load_run, save_merged, save_peft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory or a .ckpt file")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument(
        "--peft", action="store_true", help="PEFT adapters (sine: sinelr.peft's) instead of merged"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run = load_run(args.run)
        if args.peft:
            saved = save_peft(run.model, run.lowrank, args.out, run.start)
            how = f" ({saved.note})" if saved.note else ""
            variant = run.lowrank.variant
            print(f"{len(saved.layers)} {variant} adapters in PEFT's format{how}: {args.out}")
        else:
            names = save_merged(run.model, args.out)
            print(f"{len(names)} layers merged; a plain transformers checkpoint: {args.out}")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
