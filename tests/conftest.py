"""Shared fixtures: the real data in ../shared/data (skipped when absent) and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SINELR_SHARED_DATA", ROOT.parent / "shared" / "data"))


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
    ) -> CliRun:
        run_dir = run_dir or tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        env = {
            **os.environ,
            "SINELR_CACHE": str(tmp_path / "cache"),
            "SINELR_DATA": str(data_dir or tmp_path / "no-data"),
            "WANDB_MODE": "offline",
            **(env or {}),
        }
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "run.py"),
                *overrides,
                f"hydra.run.dir={run_dir}",
                "trainer.enable_progress_bar=false",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliRun(proc.returncode, proc.stdout + proc.stderr, run_dir)

    return run
