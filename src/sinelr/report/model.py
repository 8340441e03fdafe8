"""The report's one row model: a (method, rank, ω) of a task, with a cell per data item.

The dashboard prints these rows as they are, the paper's row beside each; the comparison table
of ``scripts/report.py`` prints the same rows turned (:func:`lines`): a line per data item and
rank, a column per method. Both read the cells that :func:`sinelr.report.grouping.summarise`
makes, so they never disagree on what was pooled.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sinelr.report.stats import Gap, gap, mean_interval
from sinelr.results import SINE_PREFIX
from sinelr.rounding import round_significant

if TYPE_CHECKING:
    from sinelr.report.numbers import PaperRow
    from sinelr.report.provenance import Source


def method_order() -> list[str]:
    """results.json's methods in the order tables list them: the registry's order
    (:func:`sinelr.layers.method_names`), read at each call, so that a new variant needs no edit
    here and a variant registered after this module was imported (a user's, a test's) has its
    place too. The registry is imported here, by the first table that orders methods, not with
    the report: it is filled by importing every variant's module, and so torch, which
    ``import sinelr.report`` (a reader of results.json files) must not load."""
    from sinelr.layers import method_names

    return method_names()


AVG = "avg"  # the column a paper table keeps for the mean over its other columns

#: How a sine run got its ω, in the order rows list them: given (``""``: a number or
#: ``omega=paper``), chosen by ``omega=auto``, learnt from a given ω, or learnt from the auto ω
#: (``lowrank.learn_omega=true``). Runs of different modes are never pooled, even at one ω.
FIXED, AUTO, LEARNT, LEARNT_FROM_AUTO = "", "auto", "learnt", "learnt from auto"
OMEGA_MODES = (FIXED, AUTO, LEARNT, LEARNT_FROM_AUTO)

#: After a cell's text where it pools runs of different commits, machines or precisions
#: (:mod:`sinelr.report.provenance`).
MIXED_MARK = " ‡"


@dataclass
class Cell:
    """The runs of one (task, data item, method, rank, ω, ω mode) that differ only in their
    seed: ``values``, ``seeds`` and ``sources`` (where each ran) in the same order."""

    values: list[float]
    omega: float | None = None  # where ω started (the median of the runs' ``omega``)
    params: int | None = None  # as a table prints them (load.shown_params)
    metric: str = ""
    omega_mode: str = FIXED  # one of OMEGA_MODES
    omega_end: float | None = None  # a learnt ω: the median over the seeds of where it ended
    seeds: list[int | None] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """The seeds' standard deviation; 0 for a single run."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def differs_in(self) -> list[str]:
        """What the runs differ in, of ``commits``, ``machines`` and ``precisions`` (the fields
        of :class:`~sinelr.report.provenance.Source`): empty where the cell pools like runs."""
        kinds = ("commit", "machine", "precision")
        return [f"{k}s" for k in kinds if len({getattr(s, k) for s in self.sources}) > 1]

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95 % Student t interval of the mean; None for a single run."""
        return mean_interval(self.values)

    def text(self, scale: float) -> str:
        """``72.00 ± 2.83 (2) [46.59, 97.41]``: mean ± std (seeds) [95 % interval]; one run's
        value alone; :data:`MIXED_MARK` after it where the runs differ in where they ran."""
        mark = MIXED_MARK if self.differs_in else ""
        if self.interval is None:
            return f"{self.mean * scale:.2f}{mark}"
        low, high = (bound * scale for bound in self.interval)
        spread = f"{self.mean * scale:.2f} ± {self.std * scale:.2f} ({len(self.values)})"
        return f"{spread} [{low:.2f}, {high:.2f}]{mark}"


@dataclass
class Row:
    """One (method, rank, ω, ω mode) of a task: our cells per data item and the paper's row, if
    any. A row of ``omega=auto`` runs (learnt or not) has no ω of its own: each of its cells has
    the ω the rule gave for that data item."""

    task: str
    method: str
    rank: int | None
    omega: float | None
    omega_mode: str = FIXED
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


def omega_value_text(cell: Cell) -> str:
    """Where a cell's ω started, and for a learnt ω where it ended (``70.8 → 69.3``); 3
    significant figures after a learnt value, which is as precise as ``omega=auto`` is."""
    start = "" if cell.omega is None else f"{cell.omega:g}"
    if cell.omega_end is None:
        return start
    return f"{start} → {round_significant(cell.omega_end):g}"


def omega_text(cell: Cell) -> str:
    """A cell's ω as a table prints it: the number for a given ω, else led by how it was had
    (``auto 70.8``, ``learnt from auto 70.8 → 69.3``)."""
    return " ".join(filter(None, [cell.omega_mode, omega_value_text(cell)]))


def row_order(key: tuple) -> tuple:
    """Sort key of a (method, rank, ω[, ω mode]): by rank (full rank first), then method, then
    the ω mode (:data:`OMEGA_MODES`: a given ω first), then ω."""
    method, rank, omega, *mode = key
    modes = OMEGA_MODES.index(mode[0]) if mode else 0
    return (-1 if rank is None else rank, method_order().index(method), modes, omega or 0.0)


def sine_pair(cells: dict[str, Cell]) -> tuple[Cell, Cell] | None:
    """(plain, sine) cells of one method and its sine variant, if both ran."""
    for method, cell in cells.items():
        plain = method.removeprefix(SINE_PREFIX)
        if method.startswith(SINE_PREFIX) and plain in cells:
            return cells[plain], cell
    return None


def sine_gap(plain: Cell, sine: Cell) -> Gap:
    """``sine − plain`` of a :func:`sine_pair`, paired by seed where the cells ran the same
    seeds (:func:`sinelr.report.stats.gap`)."""
    return gap(plain.values, sine.values, plain.seeds, sine.seeds)


def lines(rows: list[Row]) -> Iterator[tuple[str, str, int | None, dict[str, Cell]]]:
    """The rows turned for a comparison table: ``(task, data item, rank, cells by method)``
    for each data item and rank, and per ω and ω mode where a sine method ran at several (an ω
    sweep; ``omega=auto``, a learnt ω), each such line repeating the rank's plain and dense
    cells."""
    turned: dict[tuple, dict[tuple[str, float | None, str], Cell]] = {}
    for row in rows:
        for item, cell in row.cells.items():
            key = (row.method, row.omega, row.omega_mode)
            turned.setdefault((row.task, item, row.rank), {})[key] = cell
    for key in sorted(turned, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2])):
        cells = sorted(turned[key].items(), key=lambda kv: method_order().index(kv[0][0]))
        sines = {
            (omega, mode) for (method, omega, mode), _ in cells if method.startswith(SINE_PREFIX)
        }
        order = sorted(sines, key=lambda s: (OMEGA_MODES.index(s[1]), s[0] or 0.0))
        for sine in order or [None]:
            yield (
                *key,
                {
                    method: cell
                    for (method, omega, mode), cell in cells
                    if not method.startswith(SINE_PREFIX) or (omega, mode) == sine
                },
            )
