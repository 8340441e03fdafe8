"""Runs into tables and cells: the one grouping behind the comparison table of
``scripts/report.py``, the dashboard and the W&B summary.

Seeds are pooled: each cell is ``mean ± std (n) [95 % interval]``; runs that differ in any
other setting are not (one table per preset and per combination of such settings, see
:func:`table_groups`). A run that scores several of its paper table's columns at once
(commonsense's eight sets) is one cell per column (:func:`per_item`), in every view. Where a
plain method and its sine variant ran at the same rank, ``sine − plain`` gives the gap, paired
by seed where it can be, with its interval (:mod:`sinelr.report.stats`); across ranks,
:func:`bd_deltas` gives the Bjøntegaard deltas. Under each table, :func:`table_notes` says
where its runs ran (:mod:`sinelr.report.provenance`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sinelr.bjontegaard import bd_psnr, bd_rate
from sinelr.report.load import ITEM, data_name, omega_end, row_omega, settings, shown_params
from sinelr.report.model import AVG, FIXED, Cell, Row, lines, row_order, sine_pair
from sinelr.report.numbers import paper_tables
from sinelr.report.provenance import mixed_notes, provenance_lines, source


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
        found = [settings(r) for r in runs]
        cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r, setting in zip(runs, found, strict=True):
            cells[(data_name(r), r["method"], r["rank"], *row_omega(r))].append(setting)
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
        for r, setting in zip(runs, found, strict=True):
            label = " ".join(f"{key}={setting.get(key, '?')}" for key in differ)
            split[label].append(r)
        for label in sorted(split, key=lambda label: (-len(split[label]), label)):
            out.append(((task, preset, label), split[label]))
    return out


def paper_columns(task: str) -> list[str]:
    """The data items of the task's paper tables, ``avg`` left out."""
    return [c for t in paper_tables().get(task, []) for c in t.columns if c != AVG]


def _median(values: Iterable[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def summarise(results: list[dict]) -> list[Row]:
    """The runs as rows, one per (task, method, rank, ω, ω mode), seeds pooled in a cell per
    data item (a run scoring several paper columns first split by :func:`per_item`): runs of
    ``omega=auto`` or a learnt ω are rows of their own, never pooled with a given ω."""
    pooled: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for task in dict.fromkeys(r["task"] for r in results):
        runs = [r for r in results if r["task"] == task]
        for r in per_item(runs, paper_columns(task)):
            pooled[(task, r["method"], r["rank"], *row_omega(r))][data_name(r)].append(r)
    rows = []
    for key in sorted(pooled, key=lambda k: (k[0], *row_order(k[1:]))):
        cells = {}
        for item in sorted(pooled[key]):
            runs = pooled[key][item]
            cells[item] = Cell(
                [r["metric"]["value"] for r in runs],
                key[3] if key[4] == FIXED else _median(r["omega"] for r in runs),
                shown_params(runs[-1]),
                runs[-1]["metric"]["name"],
                key[4],
                _median(map(omega_end, runs)),
                [r.get("seed") for r in runs],
                [source(r) for r in runs],
            )
        rows.append(Row(*key, cells=cells))
    return rows


def selection_notes(runs: list[dict]) -> list[str]:
    """A line per selection metric (results.json's ``selection``) that is not independent of
    the reported one: a "best" setting chosen on it has read the number it is scored by (bof,
    which fits one shape, docs/contract.md)."""
    found = {
        r["metric"]["name"]
        for r in runs
        if r.get("selection") and r["selection"].get("independent") is False
    }
    return [
        f"selection: these runs have no data apart from their test data, so a setting chosen "
        f"among them is chosen on the reported {metric}"
        for metric in sorted(found)
    ]


def table_notes(rows: list[Row], runs: list[dict]) -> list[str]:
    """The lines under a table, in every view: where its runs ran, the cells that pool runs of
    different commits, machines or precisions, and a selection that reads the test data."""
    return [*provenance_lines(rows), *selection_notes(runs)]


def mixed_cells(results: list[dict]) -> list[str]:
    """A line per cell, over every table the runs make, that pools runs of different commits,
    machines or precisions: what ``scripts/report.py --strict-provenance`` refuses."""
    return [
        f"{' · '.join(filter(None, [task, f'preset={preset}', label]))}: {note}"
        for (task, preset, label), runs in table_groups(results)
        for note in mixed_notes(summarise(runs))
    ]


@dataclass
class Delta:
    """Bjøntegaard deltas of the sine curve over the plain one, parameters as the rate."""

    task: str
    data: str
    metric: str
    ranks: list[int]
    bd_metric: float
    bd_rate: float
    omega_mode: str = FIXED  # the sine curve's: its ω given, auto or learnt

    def text(self, scale: float = 1.0) -> str:
        """The deltas in words, BD-metric on the scale of the table beside it (the metric's
        unit × ``scale``); BD-rate is a change in parameters, which no metric scale touches."""
        scaled = f" ×{scale:g}" if scale != 1 else ""
        sine = f"sine ({self.omega_mode})" if self.omega_mode else "sine"
        return (
            f"{sine} over plain at ranks {self.ranks} (Akima, parameters as rate): "
            f"BD-{self.metric}{scaled} {self.bd_metric * scale:+.3g}, BD-rate {self.bd_rate:+.1f} %"
        )


def bd_deltas(rows: list[Row]) -> list[Delta]:
    """Per (task, data) and ω mode: BD-metric and BD-rate of sine over plain across the ranks
    where both ran (at least two, each with a single ω), so that ``omega=auto`` and a learnt ω
    get curves of their own beside the given ω's. The delta is in the metric's own unit: dB
    for NeRF's PSNR, as the paper's 2.72 dB."""
    by_data: dict[tuple[str, str, str], list[tuple[int, Cell, Cell]]] = defaultdict(list)
    for task, data, rank, cells in lines(rows):
        pair = sine_pair(cells)
        if rank is not None and pair:
            by_data[(task, data, pair[1].omega_mode)].append((rank, *pair))
    deltas = []
    for (task, data, mode), curve in by_data.items():
        ranks = [rank for rank, _, _ in curve]
        if len(curve) < 2 or len(set(ranks)) != len(ranks):
            continue
        params = [plain.params for _, plain, _ in curve]
        plain = [low.mean for _, low, _ in curve]
        sine = [high.mean for _, _, high in curve]
        try:
            gain = bd_psnr(params, plain, params, sine)
            rate = bd_rate(params, plain, params, sine)
        except ValueError:  # two points at one size, or curves whose sizes do not overlap
            continue
        deltas.append(Delta(task, data, curve[0][1].metric, ranks, gain, rate, mode))
    return deltas
