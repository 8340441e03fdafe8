"""Tables from results.json files: one row per (task, data, rank, ω), one column per method.

Seeds are pooled: each cell is ``mean ± std (n)``. Where a plain method and its sine variant ran
at the same rank, ``sine − plain`` gives the difference of means, the paper's comparison. An ω
sweep gets one row per ω, each repeating the rank's plain and dense cells beside it.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sinelr.bjontegaard import bd_psnr, bd_rate

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


def summarise(results: list[dict]) -> list[Row]:
    groups: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    info: dict[tuple, tuple[int, str]] = {}
    for r in results:
        key = (r["task"], data_name(r), r["rank"])
        groups[key][(r["method"], r["omega"])].append(r["metric"]["value"])
        info[key] = (r["params"]["total"], r["metric"]["name"])
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


def print_table(rows: list[Row], scale: float = 1.0, title: str | None = None) -> None:
    """A terminal table; columns that are the same on every row move into the title."""
    from rich.console import Console
    from rich.table import Table

    header = _header(rows)
    body = [_cells(row, _methods(rows), scale) for row in rows]
    constant = [i for i in (0, 4) if len({line[i] for line in body}) == 1]
    keep = [i for i in range(len(header)) if i not in constant]
    shared = " · ".join(body[0][i] for i in constant)
    scaled = f" (×{scale:g})" if scale != 1 else ""
    table = Table(
        *(header[i] for i in keep), title=" · ".join(filter(None, [shared + scaled, title]))
    )
    for line in body:
        table.add_row(*(line[i] for i in keep))
    Console().print(table)
