"""Tables from results.json files: one row per (task, data, rank, ω), one column per method.

Seeds are pooled: each cell is ``mean ± std (n)``; runs that differ in any other setting are
not (one table per preset and per combination of such settings, see :func:`table_groups`).
Where a plain method and its sine variant ran at the same rank, ``sine − plain`` gives the
difference of means, the paper's comparison. An ω sweep gets one row per ω, each repeating the
rank's plain and dense cells beside it.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sinelr.bjontegaard import bd_psnr, bd_rate
from sinelr.io import flatten

if TYPE_CHECKING:
    from rich.console import Console

METHOD_ORDER = ["dense", "lowrank", "sine_lowrank", "lora", "sine_lora", "dora", "sine_dora"]
# The task_config key that names a run's data item, per task: bof shape, nerf scene, vision
# dataset, glue task name (theory has only its name).
DATA_KEYS = ("shape", "scene", "dataset", "name")
ITEM = "report_item"  # set by per_item on the copies of a run it makes, one per column


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


def data_name(result: dict) -> str:
    if ITEM in result:  # one column of a run that scores several (see per_item)
        return result[ITEM]
    config = result.get("task_config", {})
    return next((str(config[k]) for k in DATA_KEYS if k in config), "")


def per_item(results: list[dict], columns: Iterable[str]) -> list[dict]:
    """A run that scores several of a table's columns at once, as ``<metric>/<column>`` in its
    metrics (commonsense's eight sets in one run), becomes one result per column; other runs
    stay as they are. ``columns`` are the paper table's, so per-view NeRF scores stay inside
    their scene's run."""
    out = []
    for r in results:
        name, metrics = r["metric"]["name"], r.get("metrics", {})
        items = {c: metrics[f"{name}/{c}"] for c in columns if f"{name}/{c}" in metrics}
        if not items:
            out.append(r)
        for column, value in items.items():
            out.append({**r, ITEM: column, "metric": {**r["metric"], "value": value}})
    return out


#: Fingerprint entries a table lays out itself: its rows (method, rank, ω) and the seeds a cell
#: pools. The data item (``task.<DATA_KEYS>``) is its columns.
LAID_OUT = ("rank", "omega", "adapter", "seed", "preset")


def _settings(result: dict) -> dict[str, Any]:
    """A run's settings other than those its table lays out, flat (``task.lr``, ``trainer.
    max_epochs``, ...). A results.json from before the ``fingerprint`` key offers its task's
    settings only."""
    nested = result.get("fingerprint") or {"task": result.get("task_config", {})}
    columns = {f"task.{key}" for key in DATA_KEYS}
    return {
        key: value
        for key, value in flatten(nested).items()
        if key.split(".")[0] not in LAID_OUT and key not in columns
    }


def table_groups(results: list[dict]) -> list[tuple[tuple[str, str, str], list[dict]]]:
    """``((task, preset, settings), runs)``, one per table the runs make.

    A cell pools the seeds of one configuration, so runs that would share a cell but differ in
    another setting (a learning-rate probe beside the seeds of the main grid) go to separate
    tables, each labelled by the settings that differ (``task.lr=5e-05``; ``""`` where nothing
    does). A setting only one of two runs records (an older results.json) is not a difference.
    """
    by_table: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        by_table[(r["task"], str(r.get("preset", "unknown")))].append(r)
    out = []
    for (task, preset), runs in sorted(by_table.items()):
        settings = [_settings(r) for r in runs]
        cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r, setting in zip(runs, settings, strict=True):
            cells[(data_name(r), r["method"], r["rank"], r["omega"])].append(setting)
        differ = sorted(
            {
                key
                for cell in cells.values()
                for a in cell
                for b in cell
                for key in a.keys() & b.keys()
                if a[key] != b[key]
            }
        )
        split: dict[str, list[dict]] = defaultdict(list)
        for r, setting in zip(runs, settings, strict=True):
            label = " ".join(f"{key}={setting.get(key, '?')}" for key in differ)
            split[label].append(r)
        for label in sorted(split, key=lambda label: (-len(split[label]), label)):
            out.append(((task, preset, label), split[label]))
    return out


@dataclass
class Cell:
    values: list[float]
    omega: float | None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def text(self, scale: float) -> str:
        if len(self.values) == 1:
            return f"{self.mean * scale:.2f}"
        spread = statistics.stdev(self.values) * scale
        return f"{self.mean * scale:.2f} ± {spread:.2f} ({len(self.values)})"


@dataclass
class Row:
    task: str
    data: str
    rank: int | None
    params: int
    metric: str
    cells: dict[str, Cell]

    def sine_pair(self) -> tuple[Cell, Cell] | None:
        """(plain, sine) cells of one method and its sine variant, if both ran."""
        for method, cell in self.cells.items():
            plain = method.removeprefix("sine_")
            if method.startswith("sine_") and plain in self.cells:
                return self.cells[plain], cell
        return None


def shown_params(result: dict) -> int:
    """The parameters a table prints for a run: an adapter's factors for a fine-tuning run, as
    the paper counts them (Table 1's 36.9K·k), the whole network otherwise."""
    params = result["params"]
    adapted = result.get("adapter") is not None and result["rank"] is not None
    return params["lowrank"] if adapted else params["total"]


def summarise(results: list[dict]) -> list[Row]:
    groups: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    info: dict[tuple, tuple[int, str]] = {}
    for r in results:
        key = (r["task"], data_name(r), r["rank"])
        groups[key][(r["method"], r["omega"])].append(r["metric"]["value"])
        info[key] = (shown_params(r), r["metric"]["name"])
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2])):
        runs = sorted(groups[key].items(), key=lambda item: METHOD_ORDER.index(item[0][0]))
        sine_omegas = sorted({omega for (method, omega), _ in runs if method.startswith("sine_")})
        for sine_omega in sine_omegas or [None]:
            cells = {
                method: Cell(values, omega)
                for (method, omega), values in runs
                if not method.startswith("sine_") or omega == sine_omega
            }
            rows.append(Row(*key, *info[key], cells=cells))
    return rows


@dataclass
class Delta:
    """Bjøntegaard deltas of the sine curve over the plain one, parameters as the rate."""

    task: str
    data: str
    metric: str
    ranks: list[int]
    bd_metric: float
    bd_rate: float

    def text(self, scale: float = 1.0) -> str:
        """The deltas in words, BD-metric on the scale of the table beside it (the metric's
        unit × ``scale``); BD-rate is a change in parameters, which no metric scale touches."""
        scaled = f" ×{scale:g}" if scale != 1 else ""
        return (
            f"sine over plain at ranks {self.ranks} (Akima, parameters as rate): "
            f"BD-{self.metric}{scaled} {self.bd_metric * scale:+.3g}, BD-rate {self.bd_rate:+.1f} %"
        )


def bd_deltas(rows: list[Row]) -> list[Delta]:
    """Per (task, data): BD-metric and BD-rate of sine over plain across the ranks where both
    ran (at least two, each with a single ω). The delta is in the metric's own unit: dB for
    NeRF's PSNR, as the paper's 2.72 dB."""
    by_data: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row.rank is not None and row.sine_pair():
            by_data[(row.task, row.data)].append(row)
    deltas = []
    for (task, data), group in by_data.items():
        ranks = [row.rank for row in group]
        if len(group) < 2 or len(set(ranks)) != len(ranks):
            continue
        plain_params, plain, sine_params, sine = [], [], [], []
        for row in group:
            low, high = row.sine_pair()  # type: ignore[misc]
            plain_params.append(row.params)
            sine_params.append(row.params)
            plain.append(low.mean)
            sine.append(high.mean)
        try:
            gain = bd_psnr(plain_params, plain, sine_params, sine)
            rate = bd_rate(plain_params, plain, sine_params, sine)
        except ValueError:  # e.g. a curve that is not monotonic in the metric
            continue
        ranks_run = [r for r in ranks if r is not None]
        deltas.append(Delta(task, data, group[0].metric, ranks_run, gain, rate))
    return deltas


def _methods(rows: list[Row]) -> list[str]:
    present = {m for row in rows for m in row.cells}
    return [m for m in METHOD_ORDER if m in present]


def _header(rows: list[Row]) -> list[str]:
    return ["task", "data", "rank", "params", "metric", *_methods(rows), "ω", "sine − plain"]


def _cells(row: Row, methods: list[str], scale: float) -> list[str]:
    pair = row.sine_pair()
    return [
        row.task,
        row.data,
        "full" if row.rank is None else str(row.rank),
        f"{row.params:,}",
        row.metric,
        *[row.cells[m].text(scale) if m in row.cells else "" for m in methods],
        f"{pair[1].omega:g}" if pair and pair[1].omega else "",
        f"{(pair[1].mean - pair[0].mean) * scale:+.2f}" if pair else "",
    ]


def markdown(rows: list[Row], scale: float = 1.0) -> str:
    header = _header(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row, _methods(rows), scale)) + " |" for row in rows]
    return "\n".join(lines)


def _fit_widths(columns: list[list[str]], room: int) -> list[int]:
    """Text widths of table columns sharing ``room`` characters, no column narrower than its
    longest word, so that wrapping never cuts one (rich's own fitting does: ``sine_lowr…``).
    Space beyond those minima goes to the columns in proportion to how much wider their longest
    line is; a table whose minima exceed the room gets the minima."""
    from rich.cells import cell_len

    low = [max(cell_len(w) for text in texts for w in text.split()) for texts in columns]
    high = [max(low[i], *(cell_len(text) for text in texts)) for i, texts in enumerate(columns)]
    if sum(high) <= room:
        return high
    spare, want = max(room - sum(low), 0), sum(high) - sum(low)
    return [lo + (hi - lo) * spare // want for lo, hi in zip(low, high, strict=True)]


def print_table(
    rows: list[Row], scale: float = 1.0, title: str | None = None, console: Console | None = None
) -> None:
    """A terminal table; columns that are the same on every row move into the title.

    Lines wrap between words, never through one; a table whose longest words do not fit the
    terminal is printed whole, for the terminal to wrap, rather than cropped.
    """
    from rich.console import Console
    from rich.table import Column, Table

    header = _header(rows)
    body = [_cells(row, _methods(rows), scale) for row in rows]
    constant = [i for i in (0, 4) if len({line[i] for line in body}) == 1]
    keep = [i for i in range(len(header)) if i not in constant]
    shared = " · ".join(body[0][i] for i in constant)
    scaled = f" (×{scale:g})" if scale != 1 else ""
    console = console or Console()
    texts = [[header[i], *(line[i] for line in body)] for i in keep]
    frame = 3 * len(keep) + 1  # each column's padding (1 + 1) and border
    widths = _fit_widths(texts, console.width - frame)
    table = Table(
        *(Column(header[i], width=w) for i, w in zip(keep, widths, strict=True)),
        title=" · ".join(filter(None, [shared + scaled, title])),
        width=None if sum(widths) + frame <= console.width else sum(widths) + frame,
    )
    for line in body:
        table.add_row(*(line[i] for i in keep))
    console.print(table, crop=False)


# --- The paper's numbers -------------------------------------------------------------------

PAPER_NUMBERS = "paper_numbers.yaml"  # beside this module; every number says where it is from
AVG = "avg"  # the column a paper table keeps for the mean over its other columns


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
        if unknown or row.method not in METHOD_ORDER:
            raise ValueError(
                f"{PAPER_NUMBERS}: {task} {entry['table']} row {row.method} k={row.rank} "
                f"has method or columns {sorted(unknown) or row.method!r} that are not "
                f"among the methods {METHOD_ORDER} or the columns {entry['columns']}"
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


# --- Benchmarks: a scripts/bench_*.py JSON beside the paper's table ------------------------


def bench_markdown(result: dict, name: str = "benchmark JSON") -> str:
    """A benchmark's ``report`` (its paper table, unit, and rows of method, rank and value) as
    Markdown beside the paper's numbers. Each side is also divided by the table's baseline
    method at the same rank: the comparison that carries across devices and units."""
    report = result.get("report")
    if not isinstance(report, dict):
        raise ValueError(f"{name} has no 'report': write it with a bench script's --json")
    tables = paper_bench_tables()
    paper = tables.get(report.get("table"))
    if paper is None:
        raise ValueError(f"{name}: table {report.get('table')!r} is none of {sorted(tables)}")
    ours = {(r["method"], r["rank"]): float(r["value"]) for r in report["rows"]}
    theirs = {(r.method, r.rank): r.values[paper.columns[0]] for r in paper.rows}

    def cells(values: dict, key: tuple) -> list[str]:
        if key not in values:
            return ["", ""]
        base = values.get((paper.baseline, key[1]))
        return [f"{values[key]:,.1f}", "" if base is None else f"{values[key] / base:.3f}"]

    device = result.get("summary", {}).get("device")
    lines = [
        f"### {paper.table}: ours beside the paper's",
        "",
        paper.source,
        "",
        f"Ours in {report['unit']}{f' ({device})' if device else ''}, the paper's in "
        f"{paper.unit}; ratios are to {paper.baseline} at the same rank.",
        "",
        f"| method | k | ours | ours / {paper.baseline} | paper | paper / {paper.baseline} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(ours.keys() | theirs.keys(), key=lambda k: _row_order((*k, None))):
        row = [key[0], _rank(key[1]), *cells(ours, key), *cells(theirs, key)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# --- The dashboard: per task and preset, the paper's layout with ours beside it ------------


@dataclass
class TableRow:
    """One (method, rank, ω) of a task: our cells per data item and the paper's row."""

    method: str
    rank: int | None
    omega: float | None
    params: int | None
    cells: dict[str, Cell]
    paper: PaperRow | None = None
    paper_table: str | None = None

    def ours(self, column: str, columns: list[str]) -> float | None:
        """Our mean in ``column``; for ``avg``, the mean over every other column, if all ran."""
        if column in self.cells:
            return self.cells[column].mean
        items = [c for c in columns if c != AVG]
        if column == AVG and items and all(c in self.cells for c in items):
            return statistics.fmean(self.cells[c].mean for c in items)
        return None


@dataclass
class TaskTable:
    """A task's runs at one preset, laid out as the paper's table (rows method × rank)."""

    task: str
    preset: str
    settings: str  # what sets this table's runs apart from the task's other tables at the preset
    scale: float
    columns: list[str]
    metrics: dict[str, str]  # our metric name per data item
    rows: list[TableRow]
    paper: list[PaperTable]
    deltas: list[Delta]
    floors: dict[str, float] = field(default_factory=dict)  # flat-colour score per item

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


def near_flat(table: TaskTable, row: TableRow, column: str) -> bool:
    """Whether a run of this cell is not clearly above the flat-colour floor."""
    floor = table.floors.get(column)
    cell = row.cells.get(column)
    return floor is not None and cell is not None and min(cell.values) < floor + FLAT_MARGIN


def _row_order(key: tuple[str, int | None, float | None]) -> tuple:
    method, rank, omega = key
    return (-1 if rank is None else rank, METHOD_ORDER.index(method), omega or 0.0)


def layout(results: list[dict]) -> list[TaskTable]:
    """Completed runs as one table per (task, preset, settings) (:func:`table_groups`), paper
    rows included even where we have no run, so the page has the paper's shape and shows what
    is still missing."""
    completed = [
        r for r in results if r.get("status") == "completed" and r["metric"]["value"] is not None
    ]
    out = []
    for (task, preset, settings), runs in table_groups(completed):
        tables = paper_tables().get(task, [])
        summary = summarise(per_item(runs, [c for t in tables for c in t.columns if c != AVG]))
        ours: dict[tuple, dict[str, Cell]] = defaultdict(dict)
        params: dict[tuple, int] = {}
        metrics: dict[str, str] = {}
        for row in summary:
            metrics[row.data] = row.metric
            for method, cell in row.cells.items():
                key = (method, row.rank, cell.omega)
                ours[key][row.data] = cell
                params[key] = row.params
        rows: dict[tuple, TableRow] = {}
        for key in ours:
            row = rows[key] = TableRow(*key, params[key], ours[key])
            match = paper_row(tables, *key)
            if match:
                row.paper_table, row.paper = match[0].table, match[1]
        matched = {id(row.paper) for row in rows.values()}
        for table in tables:
            for p in table.rows:
                if id(p) not in matched:
                    rows[(p.method, p.rank, p.omega)] = TableRow(
                        p.method, p.rank, p.omega, None, {}, p, table.table
                    )
        columns = list(dict.fromkeys(c for t in tables for c in t.columns if c != AVG))
        columns += sorted(set(metrics) - set(columns))
        if any(AVG in t.columns for t in tables):
            columns.append(AVG)
        out.append(
            TaskTable(
                task,
                preset,
                settings,
                tables[0].scale if tables else 1.0,
                columns,
                metrics,
                [rows[k] for k in sorted(rows, key=_row_order)],
                tables,
                bd_deltas(summary),
                flat_floors(runs),
            )
        )
    return out


# --- Plots ---------------------------------------------------------------------------------

PLOT_COLORS = {"dense": "black", "plain": "tab:blue", "sine": "tab:red"}


def _family(method: str) -> str:
    return "dense" if method == "dense" else "sine" if method.startswith("sine_") else "plain"


def plot_params(table: TaskTable, path: Path) -> Path | None:
    """Metric against parameters, one panel per data item, a line per method (mean ± std over
    seeds; a sine method's best ω per rank), the paper's numbers as hollow markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [c for c in table.columns if any(c in row.cells for row in table.rows)]
    if not items or not any(row.params for row in table.rows):  # theory trains no network
        return None
    ncols = min(len(items), 4)
    nrows = -(-len(items) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.4 * ncols + 2, 3.6 * nrows), squeeze=False, layout="constrained"
    )
    for ax, item in zip(axes.flat, items, strict=False):
        best: dict[tuple[str, int | None], TableRow] = {}
        for row in table.rows:
            if item in row.cells and row.params is not None:
                key = (row.method, row.rank)
                if key not in best or row.cells[item].mean > best[key].cells[item].mean:
                    best[key] = row
        for method in METHOD_ORDER:
            points = sorted(
                (r for (m, _), r in best.items() if m == method), key=lambda r: r.params
            )
            if not points:
                continue
            color = PLOT_COLORS[_family(method)]
            x = [r.params for r in points]
            y = [r.cells[item].mean * table.scale for r in points]
            err = [
                statistics.stdev(r.cells[item].values) * table.scale
                if len(r.cells[item].values) > 1
                else 0.0
                for r in points
            ]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color, label=method)
            paper = [
                (r.params, r.paper.values[item])
                for r in points
                if r.paper and item in r.paper.values
            ]
            if paper:
                ax.scatter(
                    *zip(*paper, strict=True),
                    s=70,
                    facecolors="none",
                    edgecolors=color,
                    linewidths=1.5,
                    label=f"{method} (paper)",
                )
        params = [r.params for r in best.values()]
        if params and max(params) > 10 * min(params):
            ax.set_xscale("log")
        if item in table.floors:
            ax.axhline(table.floors[item] * table.scale, color="grey", ls=":", label="flat colour")
        ax.set_title(item)
        ax.set_xlabel("parameters")
        ax.set_ylabel(
            table.metrics.get(item, "") + (f" ×{table.scale:g}" if table.scale != 1 else "")
        )
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(items) :]:
        ax.set_visible(False)
    legend = {}  # every method of every panel, once
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(legend.values(), legend.keys(), loc="outside right center", fontsize="small")
    fig.suptitle(f"{table.title}: metric against parameters", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_omega(table: TaskTable, path: Path) -> Path | None:
    """Metric against ω where a sine method ran at several ω for one rank (an ω sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str, int | None], list[tuple[float, float]]] = defaultdict(list)
    for row in table.rows:
        for item, cell in row.cells.items():
            if row.omega is not None:
                curves[(item, row.method, row.rank)].append((row.omega, cell.mean * table.scale))
    curves = {k: sorted(v) for k, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for (item, method, rank), points in sorted(curves.items(), key=str):
        ax.plot(*zip(*points, strict=True), marker="o", label=f"{item} {method} k={rank}")
    for t in table.paper:
        sweep = defaultdict(list)
        for p in t.rows:
            if p.omega is not None:
                for item, value in p.values.items():
                    sweep[(item, p.method, p.rank)].append((p.omega, value))
        for (item, method, rank), points in sweep.items():
            if (item, method, rank) in curves and len(points) > 1:
                ax.plot(
                    *zip(*sorted(points), strict=True),
                    ls="--",
                    marker="s",
                    mfc="none",
                    label=f"{item} {method} k={rank} ({t.table})",
                )
    for item in sorted({item for item, _, _ in curves} & table.floors.keys()):
        floor = table.floors[item] * table.scale
        ax.axhline(floor, color="grey", ls=":", label=f"{item} flat colour")
    ax.set_xscale("log")
    # The ω that ran, in plain numbers: log-scale minor labels (3×10²) run into each other.
    omegas = sorted({w for points in curves.values() for w, _ in points})
    ax.set_xticks(omegas, [f"{w:g}" for w in omegas])
    ax.minorticks_off()
    ax.set_xlabel("ω")
    scaled = f" ×{table.scale:g}" if table.scale != 1 else ""
    ax.set_ylabel(next(iter(table.metrics.values()), "") + scaled)
    ax.set_title(f"{table.title}: metric against ω", wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- Pages: index.html (self-contained) and report.md --------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.method, th.method { text-align: left; }
td.paper { color: #555; background: #fafafa; } td.missing { color: #bbb; }
td.better { color: #070; } td.worse { color: #b00; }
.badge { display: inline-block; padding: 4px 10px; border-radius: 4px; font-weight: bold; }
.badge.warn { background: #fff3cd; border: 1px solid #e0b000; color: #6b5200; }
.badge.ok { background: #d4edda; border: 1px solid #28a745; color: #155724; }
.source { color: #555; font-size: 0.9em; max-width: 100em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.scroll { overflow-x: auto; }
pre { white-space: pre-wrap; margin: 0; text-align: left; max-width: 70em; }
"""

# Marks, once the page has loaded, how many images decoded and tables laid out, so a headless
# browser's DOM dump shows that the page rendered (tests/test_report.py reads these).
RENDER_CHECK = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const tables = Array.from(document.querySelectorAll("table"));
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.tablesRendered =
    tables.filter(t => t.getBoundingClientRect().height > 0).length;
});
"""


def _rank(rank: int | None) -> str:
    return "full" if rank is None else str(rank)


def _omega(row: TableRow) -> str:
    ours = "" if row.omega is None else f"{row.omega:g}"
    paper = row.paper.omega if row.paper else None
    if paper is not None and paper != row.omega and row.cells:
        return f"{ours} (paper {paper:g})"
    return ours if row.cells or paper is None else f"{paper:g}"


def _comparison(
    table: TaskTable, row: TableRow, column: str
) -> tuple[str, float | None, float | None]:
    """(our text, our mean on the paper's scale, the paper's value) of one cell."""
    ours = row.ours(column, table.columns)
    paper = row.paper.values.get(column) if row.paper else None
    scaled = None if ours is None else ours * table.scale
    if column in row.cells:
        text = row.cells[column].text(table.scale)
        text += FLAT_MARK if near_flat(table, row, column) else ""
    else:
        text = "" if scaled is None else f"{scaled:.2f}"
    return text, scaled, paper


def _badge(table: TaskTable) -> str:
    if table.reproduction:
        return "preset=paper — the paper's settings"
    return f"preset={table.preset} — not a reproduction"


def _header_note(table: TaskTable) -> str:
    sources = " ".join(f"Paper: {t.source}" for t in table.paper)
    return sources or "The paper prints no numbers for this task (figures only)."


def _html_table(table: TaskTable) -> str:
    head1 = ['<th class="method" rowspan="2">method</th>', '<th rowspan="2">k</th>']
    head1 += ['<th rowspan="2">ω</th>', '<th rowspan="2">params</th>']
    head2 = []
    for column in table.columns:
        metric = table.metrics.get(column, "")
        title = f' title="{escape(metric)}"' if metric else ""
        head1.append(f'<th colspan="3"{title}>{escape(column)}</th>')
        head2 += ["<th>ours</th>", "<th>paper</th>", "<th>Δ</th>"]
    lines = [f"<tr>{''.join(head1)}</tr>", f"<tr>{''.join(head2)}</tr>"]
    for row in table.rows:
        params = f"{row.params:,}" if row.params is not None else ""
        if row.paper and row.paper.params and not row.cells:
            params = f"({row.paper.params})"
        cells = [
            f'<td class="method">{escape(row.method)}</td>',
            f"<td>{_rank(row.rank)}</td>",
            f"<td>{escape(_omega(row))}</td>",
            f"<td>{params}</td>",
        ]
        for column in table.columns:
            text, ours, paper = _comparison(table, row, column)
            attrs = f'data-item="{escape(column)}"'
            ours_attr = "" if ours is None else f' data-value="{ours!r}"'
            paper_attr = "" if paper is None else f' data-value="{paper!r}"'
            cells.append(
                f'<td class="ours{"" if text else " missing"}" {attrs}{ours_attr}>'
                f"{escape(text) or '—'}</td>"
            )
            derived = (
                ' title="derived from the paper\'s text"' if row.paper and row.paper.derived else ""
            )
            cells.append(
                f'<td class="paper" {attrs}{paper_attr}{derived}>'
                f"{'' if paper is None else f'{paper:.2f}'}</td>"
            )
            if ours is None or paper is None:
                cells.append(f'<td class="delta" {attrs}></td>')
            else:
                diff = ours - paper
                cls = "better" if diff >= 0 else "worse"
                cells.append(
                    f'<td class="delta {cls}" {attrs} data-value="{diff!r}">{diff:+.2f}</td>'
                )
        lines.append(
            f'<tr data-method="{escape(row.method)}" data-rank="{_rank(row.rank)}" '
            f'data-omega="{"" if row.omega is None else f"{row.omega:g}"}" '
            f'data-ran="{str(bool(row.cells)).lower()}">{"".join(cells)}</tr>'
        )
    body = "\n".join(lines)
    task = escape(table.task)
    return f'<div class="scroll"><table class="task" data-task="{task}">\n{body}\n</table></div>'


def _deltas_text(table: TaskTable) -> list[str]:
    lines = [f"{d.data}: {d.text(table.scale)}" for d in table.deltas]
    lines += [f"paper ({t.table}): BD-PSNR {t.bd_psnr:+.2f} dB" for t in table.paper if t.bd_psnr]
    if table.floors:
        floors = ", ".join(f"{item} {v * table.scale:.2f}" for item, v in table.floors.items())
        lines.append(
            f"Flat colour (each test view's own mean colour, the best an output with no "
            f"structure scores): {floors}.{FLAT_MARK} marks a cell with a run less than "
            f"{FLAT_MARGIN:g} dB above it: that network has learnt little beyond a colour."
        )
    return lines


def _run_label(r: dict) -> list[str]:
    omega = r.get("omega")
    return [
        str(r.get("task", "")),
        data_name(r),
        str(r.get("method", "")),
        _rank(r.get("rank")),
        "" if omega is None else f"{omega:g}",
        str(r.get("seed", "")),
        str(r.get("preset", "")),
    ]


RUN_HEADER = ["task", "data", "method", "k", "ω", "seed", "preset"]


def render_html(tables: list[TaskTable], failed: list[dict], plots: dict, note: str) -> str:
    """The dashboard as one HTML file: inline CSS, plots embedded as data URIs, no network."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>sinelr report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>sinelr: our runs beside the paper's numbers</h1>",
        f"<p>{escape(note)}</p>",
    ]
    if not tables:
        parts.append("<p>No completed runs.</p>")
    for table in tables:
        cls = "ok" if table.reproduction else "warn"
        parts += [
            f'<h2 id="{escape(table.slug)}">{escape(table.title)}</h2>',
            f'<div class="badge {cls}">{escape(_badge(table))}</div>',
            f'<p class="source">{escape(_header_note(table))} '
            f"Ours: mean ± std (seeds) ×{table.scale:g}; Δ = ours − paper.</p>",
            _html_table(table),
        ]
        parts += [f"<p>{escape(line)}</p>" for line in _deltas_text(table)]
        for path in plots.get(table.slug, []):
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{escape(path.stem)}">')
    parts.append(f'<h2 id="failed">Failed runs ({len(failed)})</h2>')
    if failed:
        head = "".join(f"<th>{h}</th>" for h in [*RUN_HEADER, "output dir", "error"])
        rows = []
        for r in failed:
            error = str(r.get("error") or "(no error message)")
            first = error.strip().splitlines()[-1] if error.strip() else error
            cells = "".join(f"<td>{escape(c)}</td>" for c in _run_label(r))
            rows.append(
                f'<tr class="failed">{cells}'
                f'<td class="method">{escape(str(r.get("output_dir", "")))}</td>'
                f'<td class="method"><details><summary>{escape(first)}</summary>'
                f"<pre>{escape(error)}</pre></details></td></tr>"
            )
        parts.append(f'<table class="failed"><tr>{head}</tr>\n' + "\n".join(rows) + "</table>")
    else:
        parts.append("<p>None.</p>")
    parts += [f"<script>{RENDER_CHECK}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def render_markdown(tables: list[TaskTable], failed: list[dict], plots: dict, note: str) -> str:
    """report.md: the same tables, plots linked as files beside it."""
    lines = ["# sinelr: our runs beside the paper's numbers", "", note, ""]
    for table in tables:
        lines += [f"## {table.title}", "", f"> **{_badge(table)}**", ""]
        lines += [_header_note(table), ""]
        header = ["method", "k", "ω", "params"]
        for column in table.columns:
            header += [f"{column} ours", f"{column} paper", f"{column} Δ"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in table.rows:
            cells = [row.method, _rank(row.rank), _omega(row)]
            cells.append(f"{row.params:,}" if row.params is not None else "")
            for column in table.columns:
                text, ours, paper = _comparison(table, row, column)
                both = ours is not None and paper is not None
                cells += [text, "" if paper is None else f"{paper:.2f}"]
                cells.append(f"{ours - paper:+.2f}" if both else "")  # type: ignore[operator]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *(f"- {line}" for line in _deltas_text(table))]
        lines += [f"![{p.stem}](plots/{p.name})" for p in plots.get(table.slug, [])]
        lines.append("")
    lines += [f"## Failed runs ({len(failed)})", ""]
    if failed:
        lines += ["| " + " | ".join([*RUN_HEADER, "error"]) + " |", "|" + "---|" * 8]
        for r in failed:
            error = " ".join(str(r.get("error") or "(no error message)").split())
            lines.append("| " + " | ".join([*_run_label(r), error.replace("|", "\\|")]) + " |")
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def write_dashboard(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Every results.json under ``paths`` as ``out/index.html``, ``out/report.md`` and
    ``out/plots/*.png``; returns the path of index.html."""
    paths = list(paths)
    out = Path(out)
    results = load_results(paths, completed_only=False)
    failed = [r for r in results if r.get("status") == "failed"]
    tables = layout(results)
    shutil.rmtree(out / "plots", ignore_errors=True)  # no stale plot from an earlier report
    plots: dict[str, list[Path]] = {}
    for table in tables:
        made = [
            plot_params(table, out / "plots" / f"{table.slug}_params.png"),
            plot_omega(table, out / "plots" / f"{table.slug}_omega.png"),
        ]
        plots[table.slug] = [p for p in made if p is not None]
    counts = defaultdict(int)
    for r in results:
        counts[str(r.get("status"))] += 1
    note = (
        f"{len(results)} results.json under {', '.join(map(str, paths))}: "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        + f". Generated {datetime.now():%Y-%m-%d %H:%M}."
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_markdown(tables, failed, plots, note))
    index = out / "index.html"
    index.write_text(render_html(tables, failed, plots, note))
    return index


# --- W&B: the summary table of a sweep -----------------------------------------------------

SUMMARY_COLUMNS = [
    "task", "preset", "settings", "data", "method", "rank", "omega", "params", "metric",
    "mean", "std", "seeds", "paper", "delta", "paper_table",
]  # fmt: skip


def summary_rows(tables: list[TaskTable]) -> list[list]:
    """One row per run cell (task, preset, data item, method, rank, ω), on the paper's scale,
    with the paper's number and the difference where the paper has one."""
    rows = []
    for table in tables:
        for row in table.rows:
            for item, cell in row.cells.items():
                mean = cell.mean * table.scale
                std = statistics.stdev(cell.values) * table.scale if len(cell.values) > 1 else 0.0
                paper = row.paper.values.get(item) if row.paper else None
                rows.append([
                    table.task, table.preset, table.settings, item, row.method, row.rank,
                    row.omega, row.params, table.metrics.get(item, ""), mean, std,
                    len(cell.values), paper, None if paper is None else mean - paper,
                    row.paper_table,
                ])  # fmt: skip
    return rows


def upload_wandb(
    paths: Iterable[str | Path], save_dir: str | Path, project: str = "sinelr"
) -> Path:
    """Log the summary table (and the params plots, if the dashboard was written to
    ``save_dir``) as one W&B run. Online only with a key and a reachable server, as every run
    (``sinelr.loggers.wandb_logger``); otherwise an offline run under ``save_dir/wandb`` that
    ``wandb sync`` uploads later. Returns the run's directory."""
    import wandb

    from sinelr.loggers import wandb_logger

    results = load_results(paths, completed_only=False)
    tables = layout(results)
    logger = wandb_logger(
        offline=None, save_dir=str(save_dir), project=project, name="report", job_type="report"
    )
    run = logger.experiment
    payload: dict = {"summary": wandb.Table(columns=SUMMARY_COLUMNS, data=summary_rows(tables))}
    failed = [
        [*_run_label(r), str(r.get("error", ""))] for r in results if r.get("status") == "failed"
    ]
    payload["failed"] = wandb.Table(columns=[*RUN_HEADER, "error"], data=failed)
    for table in tables:
        plot = Path(save_dir) / "plots" / f"{table.slug}_params.png"
        if plot.is_file():
            payload[f"plots/{table.slug}"] = wandb.Image(str(plot))
    run.log(payload)
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
