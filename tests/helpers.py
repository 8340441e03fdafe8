"""Objects the CLI tests inject through Hydra overrides, and a run killed mid-training."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from lightning.pytorch.loggers.logger import Logger

ROOT = Path(__file__).resolve().parents[1]


def kill_at_first_checkpoint(overrides: list[str], run_dir: Path, env: dict[str, str]) -> Path:
    """Start run.py, SIGKILL it as soon as it has written a checkpoint; return that checkpoint.

    SIGKILL, not SIGTERM: nothing of the run's own code gets to clean up, as in a crash.
    """
    cmd = [sys.executable, "run.py", *overrides, f"hydra.run.dir={run_dir}"]
    cmd.append("trainer.enable_progress_bar=false")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, **quiet)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    return checkpoint


class BrokenLogger(Logger):
    """A logger whose backend fails on first use, like a wandb server dropping out."""

    @property
    def name(self) -> str:
        return "broken"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        raise ConnectionError("logging backend unreachable")

    def log_metrics(self, metrics, step=None) -> None:
        raise ConnectionError("logging backend unreachable")
