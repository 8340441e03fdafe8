"""The dashboard on disk: ``index.html`` (self-contained), ``report.md`` and ``plots/*.png``."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sinelr.report.layout import TaskTable, layout
from sinelr.report.load import load_results
from sinelr.report.plots import plot_omega, plot_params
from sinelr.report.render import render_html, render_markdown


def write_plots(tables: list[TaskTable], out: Path) -> dict[str, list[Path]]:
    """Each table's figures under ``out/plots`` (emptied first: no stale plot of an earlier
    report stays), by table slug."""
    shutil.rmtree(out / "plots", ignore_errors=True)
    plots: dict[str, list[Path]] = {}
    for table in tables:
        made = [
            plot_params(table, out / "plots" / f"{table.slug}_params.png"),
            plot_omega(table, out / "plots" / f"{table.slug}_omega.png"),
        ]
        plots[table.slug] = [p for p in made if p is not None]
    return plots


def write_dashboard(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Every results.json under ``paths`` as ``out/index.html``, ``out/report.md`` and
    ``out/plots/*.png``; returns the path of index.html."""
    paths = list(paths)
    out = Path(out)
    results = load_results(paths, completed_only=False)
    failed = [r for r in results if r.get("status") == "failed"]
    tables = layout(results)
    plots = write_plots(tables, out)
    counts = Counter(str(r.get("status")) for r in results)
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
