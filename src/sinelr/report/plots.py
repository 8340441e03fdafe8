"""The dashboard's figures: metric against parameters, and metric against ω for an ω sweep,
our runs as lines and the paper's numbers as hollow markers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sinelr.report.layout import TaskTable
from sinelr.report.model import METHOD_ORDER, Row

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
        best: dict[tuple[str, int | None], Row] = {}
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
            err = [r.cells[item].std * table.scale for r in points]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
