"""The README's tour, run as written: each command of "Commands that show the range" exits 0
and writes the results.json (or the report) the README promises (issue #39, item 5).

Single runs get ``preset=smoke`` and sweeps ``dry_run=true`` unless the README sets them, so the
tour takes minutes, not hours; what is checked is that every command a newcomer copies is
accepted as typed and writes what it says. The tour reads its data from ``$SINELR_DATA`` (the
bunny, RTE), so the test runs on ../shared/data and skips without it; ``make docs`` is
tests/test_docs.py's strict build.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def tour() -> list[list[str]]:
    """The commands of the README's "Commands that show the range" block, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Commands that show the range", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's tour has no bash block"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line]


def sized(args: list[str], out: Path) -> list[str]:
    """``args`` made small and written under ``out``: a sweep counts, a single run trains on the
    smoke preset; a sweep directory the README names is moved under ``out``."""
    multirun = "-m" in args
    kept = [a for a in args if not a.startswith("hydra.sweep.dir=")]
    given = {a.split("=", 1)[0] for a in kept}
    extra = [] if "preset" in given else (["dry_run=true"] if multirun else ["preset=smoke"])
    where = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
    return [*kept, *extra, where, "trainer.enable_progress_bar=false"]


def test_the_readme_tour_runs_as_written(tmp_path: Path, shared_data: Path) -> None:
    commands = tour()
    assert len(commands) >= 10, "the README promises a tour of ten commands or more"
    env = {**os.environ, "SINELR_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    env["SINELR_DATA"] = str(shared_data)
    sweeps: list[Path] = []
    for number, args in enumerate(commands):
        out = tmp_path / f"step{number}"
        if args[:2] == ["python", "run.py"]:
            command = [sys.executable, "run.py", *sized(args[2:], out)]
        elif args[:3] == ["python", "-m", "scripts.report"]:
            assert sweeps, "the tour reports a sweep before running one"
            command = [sys.executable, "-m", "scripts.report", str(sweeps[0]), "--out", str(out)]
        else:
            assert args[:2] == ["make", "docs"], f"a tour command this test does not know: {args}"
            continue
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        tail = (proc.stdout + proc.stderr)[-3000:]
        assert proc.returncode == 0, f"{shlex.join(args)}:\n{tail}"
        if "scripts.report" in command:
            assert (out / "index.html").is_file() and (out / "report.md").is_file()
            continue
        written = sorted(out.rglob("results.json"))
        assert written, f"{shlex.join(args)} wrote no results.json"
        statuses = {json.loads(path.read_text())["status"] for path in written}
        assert statuses <= {"completed", "dry_run"}, f"{shlex.join(args)}: {statuses}"
        if "-m" in args:
            sweeps.append(out)
