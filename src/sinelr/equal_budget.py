"""The equal-budget protocol's choice: which of an arm's trials won on validation, and why.

The sweeper that runs the protocol (``hparams_search=equal_budget``,
:mod:`hydra_plugins.sinelr_sweeper.equal_budget_sweeper`) launches the jobs; this decides among
their results.json, so that the rule can be read and tested without a multirun.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import CompactHydraException

from sinelr.keys import override_key


class ProtocolError(CompactHydraException):
    """The protocol as configured cannot be fair (unequal budgets, a seed searched and tested)."""


@dataclass
class Trial:
    """One setting of one arm, scored at the search seeds by its validation metric."""

    overrides: list[str]
    selection: str | None
    scores: list[float | None]
    higher_is_better: bool = True

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


def read_selection(output_dir: Path) -> tuple[str | None, float | None, bool]:
    """``selection`` of the results.json in ``output_dir``: name, value (None unless completed)
    and direction."""
    try:
        data = json.loads((output_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None, None, True
    selection = data.get("selection") or {}
    value = selection.get("value") if data.get("status") == "completed" else None
    return selection.get("name"), value, selection.get("higher_is_better", True)


def merged(cell: Sequence[str], setting: Sequence[str]) -> list[str]:
    """The cell's overrides with the arm's setting on top: a dense arm's ``rank=null`` replaces
    the cell's rank (Hydra refuses one key given twice)."""
    keys = {override_key(o) for o in setting}
    return [*(o for o in cell if override_key(o) not in keys), *setting]
