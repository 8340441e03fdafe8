"""What a run continues from: an earlier run of the same configuration, never another's.

* ``skip_done=true`` returns the run directory's completed results.json of this configuration
  (:func:`completed_result`), and otherwise continues from the ``last.ckpt`` a cut run of it
  left there;
* ``resume=true`` finds the newest checkpoint of a run with the same fingerprint, in this run's
  directory or under ``paths.runs_dir``; ``ckpt_path=<file>`` names one (and ``last`` is
  ``resume=true``).

Every candidate is compared by its fingerprint (:mod:`sinelr.fingerprint`); a named checkpoint
of another configuration is an error that lists what differs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinelr.checkpoint import CHECKPOINT_DIR, LAST, CheckpointError, run_checkpoint, saved_state
from sinelr.fingerprint import fingerprint_diff
from sinelr.results import RESULTS_FILE, RunResult

log = logging.getLogger(__name__)


def completed_result(output_dir: Path, expected: dict[str, Any]) -> RunResult | None:
    """The completed result in ``output_dir`` if a run with this fingerprint wrote it.

    ``skip_done=true`` asks this before running: a sweep run again into the same sweep
    directory finds each job's earlier results.json (job directories are named by their
    overrides), and anything but a completed run of the same configuration is run again.
    """
    path = output_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("skip_done: %s is unreadable (%s); running again", path, error)
        return None
    if data.get("status") != "completed":
        log.info("skip_done: %s says %s; running again", path, data.get("status"))
        return None
    diff = fingerprint_diff(data.get("fingerprint") or {}, expected, source="results.json")
    if diff:
        log.warning(
            "skip_done: %s is a completed run of another configuration (%s); running again",
            path,
            "; ".join(diff[:5]),
        )
        return None
    return RunResult.from_json(data)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from, and what of its run it records beside the weights."""

    path: Path
    #: The ω each sine layer of the checkpoint's run was built with; None where it records
    #: none (a run without sine layers, or a checkpoint written before checkpoints did). A
    #: resumed ``omega=auto`` run keeps these: the rule reads the step count, which a resumed
    #: run may change, and ω is not among the saved weights.
    start_omegas: dict[str, float] | None


def resume_point(
    output_dir: Path,
    expected: dict[str, Any],
    *,
    resume: bool,
    ckpt_path: str | None,
    skip_done: bool,
    runs_root: Path,
) -> ResumePoint | None:
    """The checkpoint this run continues from (checked against its fingerprint), if any:
    ``resume=true`` (or ``ckpt_path=last``) looks in ``output_dir`` and under ``runs_root``."""
    if resume or ckpt_path == "last":
        return find_resume_checkpoint(output_dir, runs_root, expected)
    if ckpt_path:
        return check_checkpoint(Path(ckpt_path).expanduser(), expected)
    if skip_done:
        return interrupted_checkpoint(output_dir, expected)
    return None


def _point(path: Path, state: dict[str, Any]) -> ResumePoint:
    return ResumePoint(path, state.get("omega_start") or None)


def check_checkpoint(path: Path, expected: dict[str, Any]) -> ResumePoint:
    """``path``, if it was written by a run with ``expected``; a :class:`CheckpointError` that
    says what to do otherwise."""
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist: check ckpt_path=, or pass resume=true to find "
            "the run's own last.ckpt"
        )
    state = saved_state(path) or {}
    if state.get("fingerprint") is None:
        raise CheckpointError(
            f"checkpoint {path} carries no sinelr run fingerprint (another program wrote it): "
            "pass the last.ckpt of a sinelr run as ckpt_path="
        )
    diff = fingerprint_diff(state["fingerprint"], expected)
    if diff:
        raise CheckpointError(
            f"checkpoint {path} is from a different configuration; differences: "
            + "; ".join(diff[:10])
            + ". Resume with the original overrides, or start a fresh run."
        )
    return _point(path, state)


def _candidates(output_dir: Path, runs_root: Path) -> Iterator[Path]:
    own = run_checkpoint(output_dir)
    if own.is_file():
        yield own
    if runs_root.is_dir():
        found = [p for p in runs_root.rglob(f"{CHECKPOINT_DIR}/{LAST}") if p != own]
        yield from sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_resume_checkpoint(
    output_dir: Path, runs_root: Path, expected: dict[str, Any]
) -> ResumePoint:
    """The newest ``last.ckpt`` written by a run with this fingerprint."""
    for path in _candidates(output_dir, runs_root):
        try:
            state = saved_state(path) or {}
            saved = state.get("fingerprint")
            if saved is not None and not fingerprint_diff(saved, expected):
                return _point(path, state)
        except CheckpointError as error:
            log.warning("skipping %s", error)
    raise CheckpointError(
        f"resume=true: no checkpoint of a run with this configuration in {output_dir} or under "
        f"{runs_root}. Run it without resume first, or pass ckpt_path=<file.ckpt>."
    )


def interrupted_checkpoint(output_dir: Path, expected: dict[str, Any]) -> ResumePoint | None:
    """The ``last.ckpt`` an interrupted run of this configuration left in ``output_dir``.

    ``skip_done=true`` continues from it, so a sweep run again into the same directory loses
    none of a cut job's steps (a 90-minute NeRF job stopped at minute 80 costs 10, not 90).
    A checkpoint of another configuration is left alone, and the job starts afresh.
    """
    path = run_checkpoint(output_dir)
    if not path.is_file():
        return None
    try:
        point = check_checkpoint(path, expected)
    except CheckpointError as error:
        log.warning("skip_done: not continuing from it (%s); starting afresh", error)
        return None
    log.info("skip_done: continuing the interrupted run from %s", path)
    return point
