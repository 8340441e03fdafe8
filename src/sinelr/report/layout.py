"""Our runs laid out as the paper's tables: per task, preset and settings, a row per (method,
rank, ω) and a column per data item, the paper's rows included even where we have no run, so
that a page has the paper's shape and shows what is still missing."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from sinelr.report.grouping import (
    Delta,
    bd_deltas,
    paper_columns,
    summarise,
    table_groups,
    table_notes,
)
from sinelr.report.load import data_name, scored
from sinelr.report.model import AVG, FIXED, Row, row_order
from sinelr.report.numbers import PaperTable, paper_row, paper_tables


@dataclass
class TaskTable:
    """A task's runs at one preset, laid out as the paper's table (rows method × rank)."""

    task: str
    preset: str
    settings: str  # what sets this table's runs apart from the task's other tables at the preset
    scale: float
    columns: list[str]
    metrics: dict[str, str]  # our metric name per data item
    rows: list[Row]
    paper: list[PaperTable]
    deltas: list[Delta]
    floors: dict[str, float] = field(default_factory=dict)  # flat-colour score per item
    notes: list[str] = field(default_factory=list)  # grouping.table_notes: provenance, selection

    @property
    def reproduction(self) -> bool:
        return self.preset == "paper"

    @property
    def title(self) -> str:
        return " · ".join(filter(None, [self.task, f"preset={self.preset}", self.settings]))

    @property
    def slug(self) -> str:
        suffix = re.sub(r"[^\w.=-]+", "_", self.settings)
        return "_".join(filter(None, [self.task, self.preset, suffix]))


#: A run may record ``<metric>_flat`` beside its metric (NeRF: ``test/psnr_flat``, the PSNR of
#: each test view's own mean colour): the score of an output with no structure. A cell with a
#: run less than ``FLAT_MARGIN`` (in the metric's unit, dB) above it is flagged with
#: ``FLAT_MARK``: 1 dB is 21 % less squared error than the flat colour, and more than the
#: seed-to-seed spread of the NeRF mini (std <= 0.4 dB, a range of 0.64 dB for plain k = 1);
#: such a network has learnt little beyond a colour, so comparisons with it say nothing about
#: the methods.
FLAT_MARGIN = 1.0
FLAT_MARK = " ⚑"


def flat_floors(results: list[dict]) -> dict[str, float]:
    """Per data item, the mean ``<metric>_flat`` of the runs that record one."""
    found: dict[str, list[float]] = defaultdict(list)
    for r in results:
        flat = r.get("metrics", {}).get(f"{r['metric']['name']}_flat")
        if flat is not None:
            found[data_name(r)].append(flat)
    return {item: statistics.fmean(values) for item, values in found.items()}


def near_flat(table: TaskTable, row: Row, column: str) -> bool:
    """Whether a run of this cell is not clearly above the flat-colour floor."""
    floor = table.floors.get(column)
    cell = row.cells.get(column)
    return floor is not None and cell is not None and min(cell.values) < floor + FLAT_MARGIN


def with_paper_rows(task: str, rows: list[Row], tables: list[PaperTable]) -> list[Row]:
    """``rows`` each beside its paper row (:func:`paper_row`), and the paper rows no run faces
    as rows without cells, all in the paper's order (rank, method, ω); a row of ``omega=auto``
    or a learnt ω faces the paper's row of its method and rank, as a run at another ω does."""
    keyed = {(row.method, row.rank, row.omega, row.omega_mode): row for row in rows}
    for key, row in keyed.items():
        match = paper_row(tables, *key[:3])
        if match:
            row.paper_table, row.paper = match[0].table, match[1]
    matched = {id(row.paper) for row in rows}
    for table in tables:
        for p in table.rows:
            key = (p.method, p.rank, p.omega, FIXED)
            if id(p) not in matched and key not in keyed:
                keyed[key] = Row(task, *key, paper=p, paper_table=table.table)
    return [keyed[key] for key in sorted(keyed, key=row_order)]


def layout(results: list[dict]) -> list[TaskTable]:
    """The completed runs as one table per (task, preset, settings) (:func:`table_groups`),
    each with the paper's rows and columns."""
    out = []
    for (task, preset, label), runs in table_groups(scored(results)):
        tables = paper_tables().get(task, [])
        rows = summarise(runs)
        found = {item: cell.metric for row in rows for item, cell in row.cells.items()}
        metrics = {item: found[item] for item in sorted(found)}
        columns = list(dict.fromkeys(paper_columns(task)))
        columns += sorted(set(metrics) - set(columns))
        if any(AVG in t.columns for t in tables):
            columns.append(AVG)
        out.append(
            TaskTable(
                task,
                preset,
                label,
                tables[0].scale if tables else 1.0,
                columns,
                metrics,
                with_paper_rows(task, rows, tables),
                tables,
                bd_deltas(rows),
                flat_floors(runs),
                table_notes(rows, runs),
            )
        )
    return out
