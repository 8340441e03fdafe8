"""results.json files, and what the report reads off one run: its data item, its settings, the
parameters it counts.

A run names its data item (a mesh, a scene, a data set) in ``task.<key>``, and the key is its
Task class's ``data_key``, which the run records in results.json: the report needs no edit for a
new task, and imports none.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sinelr.keys import flatten
from sinelr.report.model import AUTO, FIXED, LEARNT, LEARNT_FROM_AUTO
from sinelr.results import rank_text

ITEM = "report_item"  # set by grouping.per_item on the copies of a run it makes, one per column

#: Fingerprint entries a table lays out itself: its rows (method, rank, ω) and the seeds a cell
#: pools. The data item (``task.<data_key>``) is its columns.
LAID_OUT = ("rank", "omega", "adapter", "seed", "preset")

#: The data key of each task that had one when runs did not yet record it in results.json
#: (before commit 1d5620b): what those files' ``task_config._target_`` names. Frozen, as
#: those files are; a run since records its key, so a new task never belongs here.
LEGACY_DATA_KEYS = {
    "tasks.bof.BofTask": "shape",
    "tasks.glue.GlueTask": "name",
    "tasks.nerf.NerfTask": "scene",
    "tasks.vision.VisionTask": "dataset",
}


def load_results(paths: Iterable[str | Path], completed_only: bool = True) -> list[dict]:
    """Every results.json under ``paths`` (files or directories, searched recursively)."""
    found: list[dict] = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob("results.json"))
        for file in files:
            result = json.loads(file.read_text())
            if not completed_only or result.get("status") == "completed":
                found.append(result)
    return found


def data_key(result: dict) -> str | None:
    """The ``task.<key>`` that names the run's data item: its Task class's ``data_key`` as the
    run recorded it, or for a results.json written before runs recorded it, as
    :data:`LEGACY_DATA_KEYS` has it.

    None for a task with one fixed data set (commonsense, theory), whose runs record no key, and
    for a results.json that records none and names no task of :data:`LEGACY_DATA_KEYS` (one
    written by hand). Such a run is one column named after its task, and a ``task.<key>`` that
    differs between runs then sets them apart as a setting (:func:`settings`), in tables of
    their own, rather than pooling them in one cell.
    """
    if "data_key" in result:
        return result["data_key"]
    return LEGACY_DATA_KEYS.get((result.get("task_config") or {}).get("_target_"))


def data_name(result: dict) -> str:
    """The run's data item: the column its metric goes in (the task's name for a task without
    a data key); none for a run that failed before it recorded its settings (an empty
    ``task_config``, docs/contract.md)."""
    if ITEM in result:  # one column of a run that scores several (see grouping.per_item)
        return result[ITEM]
    config = result.get("task_config") or {}
    key = data_key(result)
    if key is None:
        return str(result.get("task", "")) if config else ""
    return str(config.get(key, ""))


def settings(result: dict) -> dict[str, Any]:
    """A run's settings other than those its table lays out, flat (``task.lr``, ``trainer.
    max_epochs``, ...). A results.json from before the ``fingerprint`` key offers its task's
    settings only."""
    nested = result.get("fingerprint") or {"task": result.get("task_config", {})}
    key = data_key(result)
    column = None if key is None else f"task.{key}"
    return {
        name: value
        for name, value in flatten(nested).items()
        if name.split(".")[0] not in LAID_OUT and name != column
    }


def omega_mode(result: dict) -> str:
    """How the run's ω was had (:data:`~sinelr.report.model.OMEGA_MODES`): ``omega=auto`` as
    its fingerprint records the command line, a learnt ω as ``lowrank.learn_omega`` or the
    ``omega_start_per_layer`` only a learnt run writes (docs/contract.md). A results.json from
    before either existed is a given ω."""
    fingerprint = result.get("fingerprint") or {}
    auto = fingerprint.get("omega") == "auto"
    learnt = bool((fingerprint.get("lowrank") or {}).get("learn_omega"))
    if learnt or result.get("omega_start_per_layer"):
        return LEARNT_FROM_AUTO if auto else LEARNT
    return AUTO if auto else FIXED


def row_omega(result: dict) -> tuple[float | None, str]:
    """(ω, ω mode) of the row a run goes in. A given ω, learnt or not, is the row's; the ω of
    ``omega=auto`` is not, as the rule gives each data item (a GLUE task's step count) its own:
    its runs share one row, each cell with its own ω (``Cell.omega``)."""
    mode = omega_mode(result)
    return (None if mode in (AUTO, LEARNT_FROM_AUTO) else result["omega"]), mode


def omega_end(result: dict) -> float | None:
    """Where a learnt ω ended: the median over the run's sine layers, as ``omega`` is of where
    they started; None where ω is not learnt."""
    if omega_mode(result) not in (LEARNT, LEARNT_FROM_AUTO) or not result.get("omega_per_layer"):
        return None
    return statistics.median(result["omega_per_layer"].values())


def shown_params(result: dict) -> int:
    """The parameters a table prints for a run: an adapter's factors for a fine-tuning run, as
    the paper counts them (Table 1's 36.9K·k), the whole network otherwise."""
    params = result["params"]
    adapted = result.get("adapter") is not None and result["rank"] is not None
    return params["lowrank"] if adapted else params["total"]


def scored(results: list[dict]) -> list[dict]:
    """The completed runs that have a metric value: the runs a table shows."""
    return [
        r for r in results if r.get("status") == "completed" and r["metric"]["value"] is not None
    ]


def run_label(result: dict) -> list[str]:
    """A run's identity as table cells (:data:`RUN_HEADER`), for lists of runs (failed ones)."""
    omega = result.get("omega")
    rank = result.get("rank")
    return [
        str(result.get("task", "")),
        data_name(result),
        str(result.get("method", "")),
        rank_text(rank),
        " ".join(filter(None, [omega_mode(result), "" if omega is None else f"{omega:g}"])),
        str(result.get("seed", "")),
        str(result.get("preset", "")),
    ]


RUN_HEADER = ["task", "data", "method", "k", "ω", "seed", "preset"]
