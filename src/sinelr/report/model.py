"""The report's one row model: a (method, rank, ω) of a task, with a cell per data item.

The dashboard prints these rows as they are, the paper's row beside each; the comparison table
of ``scripts/report.py`` prints the same rows turned (:func:`lines`): a line per data item and
rank, a column per method. Both read the cells that :func:`sinelr.report.grouping.summarise`
makes, so they never disagree on what was pooled.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

from sinelr.layers import method_names

if TYPE_CHECKING:
    from sinelr.report.numbers import PaperRow


class MethodOrder(Sequence[str]):
    """results.json's methods in the order tables list them: :func:`sinelr.layers.method_names`,
    read from the registry at each use, so that a variant registered after this module was
    imported (a user's, a test's) has its place too."""

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return method_names()[index]

    def __len__(self) -> int:
        return len(method_names())

    def __iter__(self) -> Iterator[str]:
        return iter(method_names())

    def __repr__(self) -> str:
        return repr(method_names())


METHOD_ORDER = MethodOrder()
AVG = "avg"  # the column a paper table keeps for the mean over its other columns


@dataclass
class Cell:
    """The runs of one (task, data item, method, rank, ω) that differ only in their seed."""

    values: list[float]
    omega: float | None = None
    params: int | None = None  # as a table prints them (load.shown_params)
    metric: str = ""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """The seeds' standard deviation; 0 for a single run."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self, scale: float) -> str:
        if len(self.values) == 1:
            return f"{self.mean * scale:.2f}"
        return f"{self.mean * scale:.2f} ± {self.std * scale:.2f} ({len(self.values)})"


@dataclass
class Row:
    """One (method, rank, ω) of a task: our cells per data item and the paper's row, if any."""

    task: str
    method: str
    rank: int | None
    omega: float | None
    cells: dict[str, Cell] = field(default_factory=dict)
    paper: PaperRow | None = None
    paper_table: str | None = None

    @property
    def params(self) -> int | None:
        """The parameters of the last data item that ran (the same for every item, but for a
        fine-tuned network whose head differs per data set); None for a paper-only row."""
        counts = [cell.params for cell in self.cells.values() if cell.params is not None]
        return counts[-1] if counts else None

    def ours(self, column: str, columns: list[str]) -> float | None:
        """Our mean in ``column``; for ``avg``, the mean over every other column, if all ran."""
        if column in self.cells:
            return self.cells[column].mean
        items = [c for c in columns if c != AVG]
        if column == AVG and items and all(c in self.cells for c in items):
            return statistics.fmean(self.cells[c].mean for c in items)
        return None


def rank_text(rank: int | None) -> str:
    return "full" if rank is None else str(rank)


def row_order(key: tuple[str, int | None, float | None]) -> tuple:
    """Sort key of a (method, rank, ω): by rank (full rank first), then method, then ω."""
    method, rank, omega = key
    return (-1 if rank is None else rank, METHOD_ORDER.index(method), omega or 0.0)


def sine_pair(cells: dict[str, Cell]) -> tuple[Cell, Cell] | None:
    """(plain, sine) cells of one method and its sine variant, if both ran."""
    for method, cell in cells.items():
        plain = method.removeprefix("sine_")
        if method.startswith("sine_") and plain in cells:
            return cells[plain], cell
    return None


def lines(rows: list[Row]) -> Iterator[tuple[str, str, int | None, dict[str, Cell]]]:
    """The rows turned for a comparison table: ``(task, data item, rank, cells by method)``
    for each data item and rank, and per ω where a sine method ran at several (an ω sweep),
    each such line repeating the rank's plain and dense cells."""
    turned: dict[tuple, dict[tuple[str, float | None], Cell]] = {}
    for row in rows:
        for item, cell in row.cells.items():
            turned.setdefault((row.task, item, row.rank), {})[(row.method, row.omega)] = cell
    for key in sorted(turned, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2])):
        cells = sorted(turned[key].items(), key=lambda kv: METHOD_ORDER.index(kv[0][0]))
        sine_omegas = sorted({omega for (method, omega), _ in cells if method.startswith("sine_")})
        for sine_omega in sine_omegas or [None]:
            yield (
                *key,
                {
                    method: cell
                    for (method, omega), cell in cells
                    if not method.startswith("sine_") or omega == sine_omega
                },
            )
