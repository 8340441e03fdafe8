"""The equal-budget protocol's choice: which of an arm's trials won on validation, and why.

The sweeper that runs the protocol (``hparams_search=equal_budget``,
:mod:`hydra_plugins.sinelr_sweeper.equal_budget_sweeper`) launches the jobs; this decides among
their results.json, so that the rule can be read and tested without a multirun, and reads a
finished sweep back for its tables (scripts/equal_budget_summary.py, scripts/findings.py).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from sinelr.keys import canonical_job, override_key


class ProtocolError(CompactHydraException):
    """The protocol cannot be run fairly as configured (unequal budgets, a seed both searched
    and tested), or an arm has no trial to choose (every one failed)."""


@dataclass
class Trial:
    """One setting of one arm, scored at the search seeds by its validation metric."""

    overrides: list[str]
    selection: str | None
    scores: list[float | None]
    higher_is_better: bool = True
    #: Whether ``selection`` is scored on data apart from the test data (bof: it is not).
    independent: bool = True

    @property
    def mean(self) -> float | None:
        """The mean over the search seeds; None if any of them failed (ranked last)."""
        finite = [s for s in self.scores if s is not None and math.isfinite(s)]
        if not finite or len(finite) < len(self.scores):
            return None
        return statistics.fmean(finite)


def best_trial(trials: Sequence[Trial]) -> Trial:
    """The trial with the best mean selection score; the first of equals (the grid's order)."""
    scored = [t for t in trials if t.mean is not None]
    if not scored:
        raise ProtocolError(
            "every trial of an arm failed: "
            + "; ".join(" ".join(t.overrides) for t in trials)
            + " (see their results.json)"
        )
    sign = 1 if scored[0].higher_is_better else -1
    return max(scored, key=lambda t: sign * t.mean)  # max keeps the first of equals


def reason(winner: Trial, trials: Sequence[Trial]) -> str:
    """One line: what won, on which metric, against what."""
    ranked = sorted(
        (t for t in trials if t.mean is not None),
        key=lambda t: t.mean,
        reverse=winner.higher_is_better,
    )
    others = ", ".join(f"{' '.join(t.overrides)}: {t.mean:.4g}" for t in ranked if t is not winner)
    failed = len(trials) - len(ranked)
    direction = "highest" if winner.higher_is_better else "lowest"
    line = f"{direction} mean {winner.selection} over the search seeds: {winner.mean:.4g}"
    line += f" (others: {others})" if others else ""
    return line + (f"; {failed} trial(s) failed" if failed else "")


def read_selection(output_dir: Path) -> dict[str, Any]:
    """``selection`` of the results.json in ``output_dir`` (name, value, higher_is_better,
    independent), its value None unless the run completed; empty where there is none."""
    try:
        data = json.loads((output_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    selection = dict(data.get("selection") or {})
    if data.get("status") != "completed":
        selection["value"] = None
    return selection


def score(setting: list[str], selections: Sequence[dict[str, Any]]) -> Trial:
    """``setting`` as a trial, from the selections of its runs at the search seeds."""
    found = [s for s in selections if s.get("name")]
    first = found[0] if found else {}
    return Trial(
        setting,
        first.get("name"),
        [s.get("value") for s in selections],
        first.get("higher_is_better", True),
        all(s.get("independent", False) for s in found) if found else False,
    )


def merged(cell: Sequence[str], setting: Sequence[str]) -> list[str]:
    """The cell's overrides with the arm's setting on top: a dense arm's ``rank=null`` replaces
    the cell's rank (Hydra refuses one key given twice)."""
    keys = {override_key(o) for o in setting}
    return [*(o for o in cell if override_key(o) not in keys), *setting]


def computed(overrides: list[str] | set[str], excluded: set[str]) -> set[str]:
    """The overrides that change what a job computes: not those in ``excluded``, the keys the
    sweep's ``override_dirname`` leaves out (``skip_done``, the logger, paths, ...)."""
    return {o for o in overrides if override_key(o) not in excluded}


def winner_runs(sweep: Path, cell: list[str], arm: dict) -> list[dict]:
    """The completed test runs of an arm's winner, by seed: the directories the sweeper
    recorded, or (a record without them) each test job whose overrides as typed
    (``provenance.command``) hold the cell's and the winner's."""
    if "tests" in arm:
        paths = [Path(d) / "results.json" for d in arm["tests"]]
        runs = [json.loads(p.read_text()) for p in paths if p.is_file()]
    else:
        settings = OmegaConf.load(sweep / "multirun.yaml").hydra.job.config.override_dirname
        excluded = set(settings.exclude_keys)
        expected = computed(canonical_job(merged(cell, arm["winner"])), excluded)
        runs = [
            result
            for path in sorted((sweep / "test").glob("*/results.json"))
            if expected <= computed((result := json.loads(path.read_text()))
                                    .get("provenance", {}).get("command", []), excluded)
        ]  # fmt: skip
    return sorted((r for r in runs if r["status"] == "completed"), key=lambda r: r["seed"])


def chose_on_validation(cell: dict, tested: dict[str, list[dict]]) -> bool:
    """Whether the trials were chosen on data apart from the test data: the record's word, or
    (a record from before it said) the test runs' ``selection.independent``."""
    trials = [t for arm in cell["arms"].values() for t in arm["trials"]]
    if all("independent" in t for t in trials):
        return all(t["independent"] for t in trials)
    runs = [r for rs in tested.values() for r in rs]
    return bool(runs) and all((r.get("selection") or {}).get("independent") for r in runs)


def at_edge(arm: dict) -> bool:
    """Whether an arm's winner is the first or last setting of a grid of three or more: its
    best may lie outside what was searched."""
    settings = [t["overrides"] for t in arm["trials"]]
    tied = len({t.get("mean") for t in arm["trials"]}) == 1  # no best: the grid's first won
    return len(settings) >= 3 and not tied and arm["winner"] in (settings[0], settings[-1])


def stable_rank(result: dict) -> float | None:
    layers = result.get("diagnostics", {}).get("rank", {})
    ranks = [d["stable_rank"] for d in layers.values()]
    return statistics.fmean(ranks) if ranks else None
