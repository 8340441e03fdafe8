"""The paper's numbers, from ``paper_numbers.yaml`` (packaged with sinelr; every number there
says where in the paper it is from): the tables our runs are set beside, and the row of such a
table that faces a run."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml

from sinelr.report.model import method_order

PAPER_NUMBERS = "paper_numbers.yaml"  # in the sinelr package


@dataclass(frozen=True)
class PaperRow:
    method: str
    rank: int | None
    omega: float | None
    values: dict[str, float]
    params: str | None = None
    derived: bool = False  # stated in the paper's prose, not printed in the table


@dataclass(frozen=True)
class PaperTable:
    task: str
    table: str
    source: str
    metric: str
    scale: float  # paper value = our metric value × scale
    columns: list[str]
    rows: list[PaperRow]
    bd_psnr: float | None = None
    unit: str | None = None  # a benchmark table's unit, as printed
    baseline: str | None = None  # a benchmark table's rows are compared as ratios to this method


#: The key of ``paper_numbers.yaml`` whose tables come from scripts/bench_*.py, not from runs.
BENCHMARKS = "benchmarks"


def _paper_table(task: str, entry: dict) -> PaperTable:
    rows = [
        PaperRow(
            row["method"],
            row["rank"],
            None if row.get("omega") is None else float(row["omega"]),
            {k: float(v) for k, v in row["values"].items()},
            None if row.get("params") is None else str(row["params"]),
            bool(row.get("derived", False)),
        )
        for row in entry["rows"]
    ]
    for row in rows:
        unknown = set(row.values) - set(entry["columns"])
        if unknown or row.method not in method_order():
            raise ValueError(
                f"{PAPER_NUMBERS}: {task} {entry['table']} row {row.method} k={row.rank} "
                f"has method or columns {sorted(unknown) or row.method!r} that are not "
                f"among the methods {method_order()} or the columns {entry['columns']}"
            )
    return PaperTable(
        task,
        entry["table"],
        " ".join(entry["source"].split()),
        entry["metric"],
        float(entry["scale"]),
        list(entry["columns"]),
        rows,
        entry.get("bd_psnr"),
        entry.get("unit"),
        entry.get("baseline"),
    )


@functools.cache
def _paper_numbers() -> dict[str, list[PaperTable]]:
    raw = yaml.safe_load(resources.files("sinelr").joinpath(PAPER_NUMBERS).read_text())
    return {task: [_paper_table(task, entry) for entry in entries] for task, entries in raw.items()}


def paper_tables() -> dict[str, list[PaperTable]]:
    """The paper's tables per task, from ``paper_numbers.yaml`` (packaged with sinelr)."""
    return {task: t for task, t in _paper_numbers().items() if task != BENCHMARKS}


def paper_bench_tables() -> dict[str, PaperTable]:
    """The paper's tables that scripts/bench_*.py measure (memory), by table name."""
    return {t.table: t for t in _paper_numbers().get(BENCHMARKS, [])}


def paper_row(
    tables: list[PaperTable], method: str, rank: int | None, omega: float | None
) -> tuple[PaperTable, PaperRow] | None:
    """The paper's row for a run: same method and rank, and the same ω where the paper has
    several rows that differ only in ω (an ω ablation); a sine run at another ω than the
    paper's still faces the paper's row of its rank."""
    found = [(t, r) for t in tables for r in t.rows if (r.method, r.rank) == (method, rank)]
    same_omega = [(t, r) for t, r in found if r.omega == omega]
    if same_omega:
        return same_omega[0]
    return found[0] if len(found) == 1 else None
