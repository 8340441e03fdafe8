"""Tables from results.json files: one row per (task, data, rank), one column per method.

Seeds are pooled: each cell is ``mean ± std (n)``. Where a plain method and its sine variant ran
at the same rank, ``sine − plain`` gives the difference of means, the paper's comparison.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

METHOD_ORDER = ["dense", "lowrank", "sine_lowrank", "lora", "sine_lora", "dora", "sine_dora"]
DATA_KEYS = ("shape", "scene", "name")  # the task_config key that names the dataset, per task


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
    config = result.get("task_config", {})
    return next((str(config[k]) for k in DATA_KEYS if k in config), "")


@dataclass
class Cell:
    values: list[float]
    omega: float | None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def text(self, scale: float) -> str:
        spread = statistics.stdev(self.values) * scale if len(self.values) > 1 else 0.0
        omega = f" ω={self.omega:g}" if self.omega else ""
        return f"{self.mean * scale:.2f} ± {spread:.2f} ({len(self.values)}){omega}"


@dataclass
class Row:
    task: str
    data: str
    rank: int | None
    params: int
    metric: str
    cells: dict[str, Cell]

    def delta(self) -> float | None:
        """Mean of the sine variant minus the mean of its plain method (one pair per row)."""
        for method, cell in self.cells.items():
            plain = method.removeprefix("sine_")
            if method.startswith("sine_") and plain in self.cells:
                return cell.mean - self.cells[plain].mean
        return None


def summarise(results: list[dict]) -> list[Row]:
    groups: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    info: dict[tuple, tuple[int, str]] = {}
    for r in results:
        key = (r["task"], data_name(r), r["rank"])
        groups[key][(r["method"], r["omega"])].append(r["metric"]["value"])
        info[key] = (r["params"]["total"], r["metric"]["name"])
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2])):
        cells = {
            method: Cell(values, omega)
            for (method, omega), values in sorted(
                groups[key].items(), key=lambda item: METHOD_ORDER.index(item[0][0])
            )
        }
        rows.append(Row(*key, *info[key], cells=cells))
    return rows


def _header(rows: list[Row]) -> list[str]:
    present = {m for row in rows for m in row.cells}
    methods = [m for m in METHOD_ORDER if m in present]
    return ["task", "data", "rank", "params", "metric", *methods, "sine − plain"]


def _cells(row: Row, header: list[str], scale: float) -> list[str]:
    delta = row.delta()
    return [
        row.task,
        row.data,
        "full" if row.rank is None else str(row.rank),
        f"{row.params:,}",
        row.metric,
        *[row.cells[m].text(scale) if m in row.cells else "" for m in header[5:-1]],
        "" if delta is None else f"{delta * scale:+.2f}",
    ]


def markdown(rows: list[Row], scale: float = 1.0) -> str:
    header = _header(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row, header, scale)) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows: list[Row], scale: float = 1.0, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    header = _header(rows)
    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*_cells(row, header, scale))
    Console().print(table)
