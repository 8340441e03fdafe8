"""The equal-budget protocol: every arm of a comparison tuned as hard as its rival, chosen on
validation, then scored on test at fresh seeds.

A sine low-rank layer whose ω was swept, against a plain one run at one learning rate, compares
a tuned arm with an untuned one; and a "best ω" read off the test metric flatters the arm that
was searched. Here each *cell* (one point of ``hydra.sweeper.params``: a task, data, rank) runs
two stages:

1. **search**: every arm's trials (the grid of its ``arms.<name>`` values, the same number N
   for every arm) at ``search_seeds``, each scored by its results.json ``selection`` (the
   validation metric; docs/contract.md). The arm's winner is the trial with the best mean over
   those seeds; a failed or diverged trial ranks last.
2. **test**: each arm's winner at ``seeds`` (fresh: none of them searched), reported as usual.

Jobs land in ``<sweep dir>/search/`` and ``<sweep dir>/test/`` (each named by its overrides, so
``skip_done=true`` resumes either stage job by job), and ``<sweep dir>/equal_budget.json``
records every trial's scores, each arm's winner and why. ``scripts/report.py <sweep
dir>/test`` compares the arms at their chosen settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.sinelr_sweeper.table_sweeper import (
    MultirunFailed,
    canonical_job,
    failure_report,
)
from sinelr.equal_budget import (
    ProtocolError,
    best_trial,
    merged,
    read_selection,
    reason,
    score,
)
from sinelr.io import atomic_write_json
from sinelr.keys import override_key

log = logging.getLogger(__name__)

RECORD = "equal_budget.json"
SEARCH, TEST = "search", "test"


def _seeds(values: Any, what: str) -> list[int]:
    seeds = [int(s) for s in (values or [])]
    if not seeds:
        raise ProtocolError(f"hydra.sweeper.{what} is empty: give at least one seed")
    return seeds


class EqualBudgetSweeper(BasicSweeper):
    def __init__(
        self,
        arms: Mapping[str, Mapping[str, Any]],
        search_seeds: Sequence[int],
        seeds: Sequence[int],
        params: dict[str, str] | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(max_batch_size, params or {})
        self.arms = {name: dict(values or {}) for name, values in arms.items()}
        self.search_seeds = _seeds(search_seeds, "search_seeds")
        self.seeds = _seeds(seeds, "seeds")
        if reused := set(self.search_seeds) & set(self.seeds):
            raise ProtocolError(
                f"seeds {sorted(reused)} are both searched and tested: a setting chosen on a seed "
                "is scored at that seed; make hydra.sweeper.seeds and search_seeds disjoint"
            )
        if len(self.arms) < 2:
            raise ProtocolError(
                "hydra.sweeper.arms: a comparison needs at least two arms "
                "(conf/experiment/equal_budget_*.yaml define them per task)"
            )

    def _grid(self, overrides: list[str]) -> list[list[str]]:
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)
        return jobs

    def arm_trials(self) -> dict[str, list[list[str]]]:
        """Each arm's settings; the same number for every arm, or the budgets are not equal."""
        trials = {
            name: self._grid([f"{key}={value}" for key, value in values.items()])
            if values
            else [[]]
            for name, values in self.arms.items()
        }
        sizes = {name: len(jobs) for name, jobs in trials.items()}
        if len(set(sizes.values())) > 1:
            raise ProtocolError(
                f"unequal tuning budgets {sizes}: give every arm the same number of trials "
                "(hydra.sweeper.arms)"
            )
        return trials

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        cells = self._grid([*self._parse_config(), *arguments])
        if any(override_key(o) == "seed" for o in cells[0]):
            raise ProtocolError("seed= is the protocol's: set hydra.sweeper.seeds/search_seeds")
        trials = self.arm_trials()
        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        def job(stage: str, cell: list[str], *overrides: str) -> list[str]:
            return canonical_job([*merged(cell, overrides), f"hydra.sweep.dir={sweep_dir / stage}"])

        searches = [
            job(SEARCH, cell, *setting, f"seed={seed}")
            for cell in cells
            for settings in trials.values()
            for setting in settings
            for seed in self.search_seeds
        ]
        returns = [self._launch(searches, 0)]
        if OmegaConf.select(self.config, "dry_run"):
            # A dry run counts parameters and scores nothing: there is no winner to choose.
            log.info(
                "dry_run=true: %d search trials counted; no winner chosen or tested", len(searches)
            )
            return returns
        # A launcher returns its jobs' results in the order it was given them.
        dirs = {
            tuple(overrides): Path(OmegaConf.select(r.hydra_cfg, "hydra.runtime.output_dir"))
            for overrides, r in zip(searches, returns[0], strict=True)
        }
        record = {
            "protocol": "equal tuning budget: each arm's trials at search_seeds, chosen on "
            "results.json's selection (the validation metric where independent is true), then "
            "the winner at seeds, scored on test",
            "search_seeds": self.search_seeds,
            "seeds": self.seeds,
            "trials_per_arm": len(next(iter(trials.values()))),
            "cells": [],
        }
        tests: list[list[str]] = []
        owners: list[dict[str, Any]] = []  # the arm record each test job reports to
        for cell in cells:
            arms = {
                name: self._choose(cell, name, settings, dirs, job)
                for name, settings in trials.items()
            }
            for arm in arms.values():
                for seed in self.seeds if arm["winner"] is not None else ():
                    tests.append(job(TEST, cell, *arm["winner"], f"seed={seed}"))
                    owners.append(arm)
            record["cells"].append({"cell": cell, "arms": arms})
            atomic_write_json(sweep_dir / RECORD, record)
        returns.append(self._launch(tests, len(searches)))
        for owner, ret in zip(owners, returns[-1], strict=True):
            owner["tests"].append(OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir"))
        atomic_write_json(sweep_dir / RECORD, record)
        # A diverged search trial is part of the protocol (it ranks last); a failed test run or
        # an arm with no trial left is not.
        failed = [r for r in returns[-1] if r.status != JobStatus.COMPLETED]
        unchosen = [
            f"{' '.join(c['cell'])} {name}: {arm['why']}"
            for c in record["cells"]
            for name, arm in c["arms"].items()
            if arm["winner"] is None
        ]
        if failed or unchosen:
            lines = [failure_report(failed, len(tests))] if failed else []
            raise MultirunFailed("\n".join([*lines, *unchosen]))
        return returns

    def _choose(
        self,
        cell: list[str],
        name: str,
        settings: list[list[str]],
        dirs: Mapping[tuple[str, ...], Path],
        job: Callable[..., list[str]],
    ) -> dict[str, Any]:
        """One arm's record in one cell: its trials as scored at the search seeds, its winner
        and why (no winner, and why, where every trial failed)."""
        scored = [
            score(
                s,
                [
                    read_selection(dirs[tuple(job(SEARCH, cell, *s, f"seed={seed}"))])
                    for seed in self.search_seeds
                ],
            )
            for s in settings
        ]
        trials = [asdict(t) | {"mean": t.mean} for t in scored]
        try:
            winner = best_trial(scored)
        except ProtocolError as error:  # this cell's arm has nothing to test
            log.warning("%s %s: %s", " ".join(cell), name, error)
            return {"winner": None, "why": str(error), "trials": trials}
        why = reason(winner, scored)
        log.info("%s %s: %s wins, %s", " ".join(cell), name, " ".join(winner.overrides), why)
        return {"winner": winner.overrides, "why": why, "trials": trials, "tests": []}

    def _launch(self, jobs: list[list[str]], first: int) -> Sequence[JobReturn]:
        assert self.launcher is not None
        self.validate_batch_is_legal(jobs)
        return self.launcher.launch(jobs, initial_job_idx=first)
