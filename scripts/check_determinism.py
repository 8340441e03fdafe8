"""Does the same seed give the same result? One configuration, trained again and again.

Each run is a fresh ``run.py`` process started from this one, as a user or a test would start
it, in its own run directory; every run's ``metric`` and ``train/loss`` are collected. With
several ``--root`` checkouts (say, a worktree of an older commit) runs alternate between them,
so both see the same machine load.

    python -m scripts.check_determinism [--runs N] [--root PATH ...] [-- override ...]

The default configuration is the resume test's: ``bof`` smoke at 32³, rank 2, ω = 100, four
epochs. Progress goes to stderr; the last line printed is one JSON object: per checkout, the
number of runs and how many gave each distinct value.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = [
    "task=bof", "rank=2", "omega=100", "preset=smoke", "task.resolution=32",
    "task.batch_size=256", "trainer.max_epochs=4", "trainer.enable_progress_bar=false",
]  # fmt: skip


def one_run(root: Path, overrides: list[str], run_dir: Path, env: dict[str, str]) -> dict:
    cmd = [sys.executable, str(root / "run.py"), *overrides, f"hydra.run.dir={run_dir}"]
    env = {**env, "PYTHONPATH": str(root / "src")}  # that checkout's sinelr, not the installed one
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    code = subprocess.run(cmd, cwd=root, env=env, check=False, **quiet).returncode
    if code != 0:
        raise SystemExit(f"run failed (exit {code}); see {run_dir}/run.log")
    return json.loads((run_dir / "results.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="per checkout")
    parser.add_argument("--root", type=Path, action="append", help="checkout (default: this one)")
    parser.add_argument("overrides", nargs="*", help="run.py overrides (default: see above)")
    args = parser.parse_args()
    roots = [r.resolve() for r in args.root or [ROOT]]
    overrides = args.overrides or CONFIG
    values = {str(r): {"metric": Counter(), "train/loss": Counter()} for r in roots}
    with tempfile.TemporaryDirectory(prefix="sinelr-determinism-") as tmp:
        env = {**os.environ, "SINELR_CACHE": f"{tmp}/cache", "WANDB_MODE": "offline"}
        for i in range(args.runs):
            for k, root in enumerate(roots):
                result = one_run(root, overrides, Path(tmp) / f"{k}_{i}", env)
                seen = values[str(root)]
                seen["metric"][repr(result["metric"]["value"])] += 1
                seen["train/loss"][repr(result["metrics"].get("train/loss"))] += 1
            summary = "; ".join(
                f"{root.name}: {len(values[str(root)]['metric'])} distinct" for root in roots
            )
            print(f"{i + 1}/{args.runs}: metric values {summary}", file=sys.stderr)
    report = {
        root: {"runs": args.runs, **{key: dict(c) for key, c in seen.items()}}
        for root, seen in values.items()
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
