"""A sweeper for paper tables: Hydra's basic grid, each dense baseline run once.

A table sweeps ``rank=null,1,2 omega=null,paper``; ``rank=null`` ignores ω, so the plain grid
would train the same full-rank network once per ω. This sweeper sets ω to null in the
``rank=null`` jobs and drops the repeats, so a table's multirun runs each of its rows once.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def canonical_job(job: list[str]) -> list[str]:
    """The job with ``omega=null`` where ``rank=null`` (the dense baseline takes no ω)."""
    if "rank=null" not in job:
        return job
    return [f"{o.partition('=')[0]}=null" if _key(o) == "omega" else o for o in job]


def unique_jobs(jobs: list[list[str]]) -> list[list[str]]:
    seen: set[tuple[str, ...]] = set()
    kept = []
    for job in map(canonical_job, jobs):
        if tuple(job) not in seen:
            seen.add(tuple(job))
            kept.append(job)
    return kept


class TableSweeper(BasicSweeper):
    @staticmethod
    def split_arguments(
        overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        jobs = unique_jobs(jobs)
        size = max_batch_size or len(jobs) or 1
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]
