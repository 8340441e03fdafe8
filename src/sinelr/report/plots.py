"""The dashboard's figures: metric against parameters, and metric against ω for an ω sweep,
our runs as lines and the paper's numbers as hollow markers."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from sinelr.report.layout import TaskTable
from sinelr.report.model import (
    AUTO,
    FIXED,
    LEARNT,
    LEARNT_FROM_AUTO,
    OMEGA_MODES,
    Row,
    method_order,
)
from sinelr.results import DENSE, SINE_PREFIX
from sinelr.rounding import round_significant

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOT_COLORS = {"dense": "black", "plain": "tab:blue", "sine": "tab:red"}

#: How runs of each ω mode are drawn on the parameters plot: a given ω as always, ``omega=auto``
#: with stars, a learnt ω with diamonds (plus signs where it started from the auto ω), each in a
#: line style of its own.
MODE_STYLE: dict[str, dict] = {
    FIXED: {"marker": "o"},
    AUTO: {"marker": "*", "markersize": 11, "ls": "--"},
    LEARNT: {"marker": "D", "ls": ":"},
    LEARNT_FROM_AUTO: {"marker": "P", "markersize": 8, "ls": "-."},
}

#: The ω plot's legend for the markers of :func:`_mode_markers`, one entry per kind.
AUTO_LABEL = "ω of omega=auto"
START_LABEL = "learnt ω: start"
END_LABEL = "learnt ω: end"


def _family(method: str) -> str:
    return "dense" if method == DENSE else "sine" if method.startswith(SINE_PREFIX) else "plain"


def plot_params(table: TaskTable, path: Path) -> Path | None:
    """Metric against parameters, one panel per data item, a line per method (mean ± std over
    seeds; a sine method's best given ω per rank, and a line of its own in a style of its own
    for ``omega=auto`` and for a learnt ω, :data:`MODE_STYLE`), the paper's numbers as hollow
    markers."""
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
        best: dict[tuple[str, str, int | None], Row] = {}
        for row in table.rows:
            if item in row.cells and row.params is not None:
                key = (row.method, row.omega_mode, row.rank)
                if key not in best or row.cells[item].mean > best[key].cells[item].mean:
                    best[key] = row
        for method, mode in itertools.product(method_order(), OMEGA_MODES):
            points = sorted(
                (r for (m, o, _), r in best.items() if (m, o) == (method, mode)),
                key=lambda r: r.params,
            )
            if not points:
                continue
            color = PLOT_COLORS[_family(method)]
            x = [r.params for r in points]
            y = [r.cells[item].mean * table.scale for r in points]
            err = [r.cells[item].std * table.scale for r in points]
            label = f"{method} ({mode})" if mode else method
            ax.errorbar(x, y, yerr=err, capsize=3, color=color, label=label, **MODE_STYLE[mode])
            paper = [
                (r.params, r.paper.values[item])
                for r in points
                if r.paper and item in r.paper.values and not mode
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


def _mode_markers(
    ax: Axes, table: TaskTable, colors: dict[tuple, str]
) -> list[tuple[float, float | None]]:
    """Where the runs of ``omega=auto`` and of a learnt ω fell on the ω plot, at the metric
    they scored: a star at the ω the rule gave; for a learnt ω a hollow diamond where it
    started and a filled one where it ended, an arrow between. Each in the colour of its (data
    item, method, rank)'s swept curve (``colors``), or where none was swept in a colour of its
    own, named in the legend. Returns each marker's (start, end) ω, end None where ω is not
    learnt."""
    kinds: set[str] = set()
    marked: list[tuple[float, float | None]] = []
    for row in table.rows:
        for item, cell in row.cells.items():
            if not row.omega_mode or cell.omega is None:
                continue
            key = (item, row.method, row.rank)
            y = cell.mean * table.scale
            auto = row.omega_mode == AUTO
            style = {"marker": "*", "markersize": 14} if auto else {"marker": "D", "mfc": "none"}
            label = "_" if key in colors else f"{item} {row.method} k={row.rank}"
            (start,) = ax.plot(
                [cell.omega], [y], ls="none", zorder=3, color=colors.get(key), label=label, **style
            )
            colors.setdefault(key, start.get_color())
            marked.append((cell.omega, None if auto else cell.omega_end))
            kinds.add(AUTO if auto else LEARNT)
            if auto or cell.omega_end is None:
                continue
            ax.plot([cell.omega_end], [y], ls="none", marker="D", zorder=3, color=colors[key])
            arrow = {"arrowstyle": "->", "color": colors[key], "shrinkA": 6, "shrinkB": 6}
            ax.annotate("", xy=(cell.omega_end, y), xytext=(cell.omega, y), arrowprops=arrow)
    legend = {AUTO: [(AUTO_LABEL, {"marker": "*", "markersize": 12})]}
    legend[LEARNT] = [(START_LABEL, {"marker": "D", "mfc": "none"}), (END_LABEL, {"marker": "D"})]
    for kind in sorted(kinds, key=OMEGA_MODES.index):
        for label, style in legend[kind]:
            ax.plot([], [], ls="none", color="grey", label=label, **style)
    return marked


def omega_figure(table: TaskTable) -> Figure | None:
    """Metric against ω where a sine method ran at several given ω for one rank (an ω sweep),
    and where runs of ``omega=auto`` and a learnt ω fell against it (:func:`_mode_markers`);
    None where there is neither."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str, int | None], list[tuple[float, float]]] = defaultdict(list)
    for row in table.rows:
        for item, cell in row.cells.items():
            if row.omega is not None and not row.omega_mode:
                curves[(item, row.method, row.rank)].append((row.omega, cell.mean * table.scale))
    curves = {k: sorted(v) for k, v in curves.items() if len(v) > 1}
    marked = {item for row in table.rows if row.omega_mode for item in row.cells}
    if not curves and not marked:
        return None
    # With markers the legend grows by their kinds: beside the axes, not over the curves.
    fig, ax = plt.subplots(figsize=(8.5, 4) if marked else (6, 4), layout="constrained")
    colors: dict[tuple, str] = {}
    for (item, method, rank), points in sorted(curves.items(), key=str):
        (line,) = ax.plot(*zip(*points, strict=True), marker="o", label=f"{item} {method} k={rank}")
        colors[(item, method, rank)] = line.get_color()
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
    marked_omegas = _mode_markers(ax, table, colors)
    items = {item for item, _, _ in curves} | marked
    for item in sorted(items & table.floors.keys()):
        floor = table.floors[item] * table.scale
        ax.axhline(floor, color="grey", ls=":", label=f"{item} flat colour")
    ax.set_xscale("log")
    # The ω that ran, in plain numbers: log-scale minor labels (3×10²) run into each other. The
    # swept ω where there is a sweep (a marker between them needs no label of its own).
    omegas = sorted({w for points in curves.values() for w, _ in points})
    if not omegas:
        # No sweep: the ω the marked runs started at, on an axis a factor 2 wider each way
        # than where they fell, so that a learnt ω that barely moved is seen to barely move.
        omegas = sorted({round_significant(start) for start, _ in marked_omegas})
        found = [w for pair in marked_omegas for w in pair if w is not None]
        ax.set_xlim(min(found) / 2, max(found) * 2)
        ax.margins(y=0.2)
    ax.set_xticks(omegas, [f"{w:g}" for w in omegas])
    ax.minorticks_off()
    ax.set_xlabel("ω")
    scaled = f" ×{table.scale:g}" if table.scale != 1 else ""
    ax.set_ylabel(next(iter(table.metrics.values()), "") + scaled)
    ax.set_title(f"{table.title}: metric against ω", wrap=True)
    ax.grid(alpha=0.3)
    if marked:
        fig.legend(loc="outside right center", fontsize="small")
    else:
        ax.legend(fontsize="small")
    return fig


def plot_omega(table: TaskTable, path: Path) -> Path | None:
    """The ω plot (:func:`omega_figure`) as a PNG at ``path``; None where there is none."""
    import matplotlib.pyplot as plt

    fig = omega_figure(table)
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
