"""A sweeper for paper tables: Hydra's basic grid, each dense baseline run once, no job lost.

A table sweeps ``rank=null,1,2 omega=null,paper``; ``rank=null`` ignores ω, so the plain grid
would train the same full-rank network once per ω. This sweeper sets ω to null in the
``rank=null`` jobs and drops the repeats, so a table's multirun runs each of its rows once.

Hydra's basic sweeper re-raises the first failed job's exception after its batch, so with
``max_batch_size`` set the batches after it never run, and either way only the first failure is
named. A table of hours of runs should not hinge on one bad cell: this sweeper runs every batch,
then fails with :class:`MultirunFailed` naming each failed job (whose results.json holds the
error). Any launcher (basic, joblib, submitit) reports failures as ``JobReturn``s, so this holds
for all of them.

``hydra.sweeper.optional`` maps an override to a file it needs (``task.shape=thai: ${paths.
data_dir}/meshes/thai.ply``): where that file is missing, the jobs with that override are left
out with one warning, so a table can list data that not every machine has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from sinelr.keys import canonical_job

log = logging.getLogger(__name__)


class MultirunFailed(CompactHydraException):
    """Some jobs of a multirun failed; the others ran to the end.

    A compact Hydra exception: Hydra prints its message alone, without a traceback of the
    sweeper (each job's own error is in the message and in its results.json).
    """


def unique_jobs(jobs: list[list[str]]) -> list[list[str]]:
    seen: set[tuple[str, ...]] = set()
    kept = []
    for job in map(canonical_job, jobs):
        if tuple(job) not in seen:
            seen.add(tuple(job))
            kept.append(job)
    return kept


def failure_report(failed: Sequence[JobReturn], total: int) -> str:
    """One line per failed job: its overrides, its error, and where its results.json is."""
    lines = [f"{len(failed)} of {total} jobs failed (the others ran to the end):"]
    for ret in failed:
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") or "?"
        lines.append(
            f"  {' '.join(ret.overrides or [])}: {ret._return_value} "
            f"(see {Path(output_dir) / 'results.json'})"
        )
    return "\n".join(lines)


def available_jobs(jobs: list[list[str]], optional: Mapping[str, str]) -> list[list[str]]:
    """The jobs whose ``optional`` overrides' files exist; one warning per override that is not."""
    missing = {o: path for o, path in optional.items() if not Path(path).expanduser().is_file()}
    for override, path in missing.items():
        skipped = sum(override in job for job in jobs)
        if skipped:
            log.warning("%s: %d job(s) left out, %s does not exist", override, skipped, path)
    return [job for job in jobs if not missing.keys() & set(job)]


class TableSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        optional: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(max_batch_size, params)
        self.optional = dict(optional or {})

    @staticmethod
    def split_arguments(
        overrides: list[Override],
        max_batch_size: int | None,
        optional: Mapping[str, str] | None = None,
    ) -> list[list[list[str]]]:
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        jobs = available_jobs(unique_jobs(jobs), optional or {})
        size = max_batch_size or len(jobs) or 1
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Run every batch, whatever fails; then raise :class:`MultirunFailed` if any job did."""
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        self.overrides = self.split_arguments(overrides, self.max_batch_size, self.optional)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=job_idx)
            job_idx += len(batch)
            returns.append(results)
        failed = [r for batch in returns for r in batch if r.status != JobStatus.COMPLETED]
        if failed:
            raise MultirunFailed(failure_report(failed, job_idx))
        return returns
