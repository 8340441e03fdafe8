"""Shared fixtures: the real data in ../shared/data (skipped when absent) and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests import helpers

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SINELR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """One CPU thread for the suite, in-process and in every run.py it starts (they inherit
    the variable), unless OMP_NUM_THREADS is set.

    The tests' networks are small. On a busy two-core machine a second OpenMP thread that is
    not scheduled holds each op at its barrier: a 256×256 multiply took 8 ms with two threads
    and 5 µs with one, which made a 512-step bof run take two minutes.
    """
    torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets; tests that need them skip, saying why, when they are not there."""
    if not (SHARED_DATA / "meshes").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SINELR_SHARED_DATA to its path)")
    return SHARED_DATA


@dataclass
class CliRun:
    returncode: int
    output: str
    run_dir: Path

    @property
    def results(self) -> dict:
        return json.loads((self.run_dir / "results.json").read_text())


@pytest.fixture
def run_cli(tmp_path: Path):
    """``run_cli("task=bof", ...)``: run.py in a subprocess, its run dir under ``tmp_path``."""

    def run(
        *overrides: str,
        data_dir: Path | None = None,
        run_dir: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        kill_at_first_checkpoint: bool = False,
    ) -> CliRun:
        """``kill_at_first_checkpoint``: SIGKILL the run once it has written a checkpoint (see
        :func:`tests.helpers.kill_at_first_checkpoint`); its output is not kept."""
        run_dir = run_dir or tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        env = {
            **os.environ,
            "SINELR_CACHE": str(tmp_path / "cache"),
            "SINELR_DATA": str(data_dir or tmp_path / "no-data"),
            "WANDB_MODE": "offline",
            **(env or {}),
        }
        command = [
            sys.executable,
            str(ROOT / "run.py"),
            *overrides,
            f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false",
        ]
        if kill_at_first_checkpoint:
            return CliRun(
                helpers.kill_at_first_checkpoint(command, run_dir, cwd=ROOT, env=env), "", run_dir
            )
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        return CliRun(proc.returncode, proc.stdout + proc.stderr, run_dir)

    return run
