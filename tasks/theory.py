"""Task ``theory``: the paper's Figures 2–3 from the factory's own layers.

Draws ``U``, ``V`` exactly as a from-scratch layer initialises them, then measures the numerical
and stable rank of ``f(ω·UV)`` for the sine (against ω, for several ``k`` and layer shapes) and
for sigmoid, tanh and ReLU at the same ω. Its metric is the rank the sine reaches at the
frequencies the paper trains with, as a fraction of full rank, averaged over the paper's
``(task, k, ω)`` settings for layers of that task's shape.

``rank=K`` restricts the study to ``k = K``; ``omega=<ω>`` evaluates the paper's settings at
that ω instead of the paper's (``omega=null`` or ``paper``: the paper's).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.progress import track
from torch import Tensor

from sinelr.accounting import rank_stats
from sinelr.errors import InputError
from sinelr.layers import LowRankLinear, sine_weight
from sinelr.paper import PAPER
from sinelr.task import RunContext, Task, TaskOutput

log = logging.getLogger(__name__)

NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "sine": torch.sin,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


@dataclass
class RankRow:
    d_out: int
    d_in: int
    k: int
    nonlinearity: str
    omega: float
    trial: int
    numerical_rank: int
    stable_rank: float


@dataclass
class PaperPoint:
    task: str
    d_out: int
    d_in: int
    k: int
    omega: float
    numerical_rank: int
    stable_rank: float
    max_rank: int


def draw_factors(d_out: int, d_in: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """``U``, ``V`` in float64, initialised by the factory's from-scratch layer."""
    torch.manual_seed(seed)
    layer = LowRankLinear(d_in, d_out, k, bias=False, dtype=torch.float64)
    return layer.U.detach(), layer.V.detach()


def apply_nonlinearity(name: str, U: Tensor, V: Tensor, omega: float) -> Tensor:
    if name == "sine":
        return sine_weight(U, V, omega, 1.0)  # the gain scales the matrix, not its rank
    return NONLINEARITIES[name](omega * (U @ V))


@dataclass(kw_only=True, eq=False)
class TheoryTask(Task):
    """``conf/task/theory.yaml``'s keys; ``rank`` and ``omega`` are the command line's."""

    metric = "theory/rank_fraction_at_paper_omega"
    factorises = False
    method = "sine_lowrank"

    name: str
    shapes: Sequence[Sequence[int]]
    ranks: Sequence[int]
    omegas: Sequence[float]
    nonlinearities: Sequence[str]
    trials: int
    paper_tasks: Sequence[str]
    heatmap_size: int
    rank: int | None = None
    omega: float | str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.nonlinearities) - set(NONLINEARITIES))
        if unknown:
            raise InputError(f"unknown non-linearities {unknown}; known: {sorted(NONLINEARITIES)}")
        missing = sorted(set(self.paper_tasks) - set(PAPER))
        if missing:
            raise InputError(f"paper_tasks {missing} have no paper table; known: {sorted(PAPER)}")
        if self.rank is not None and self.rank < 1:
            raise InputError(f"rank must be a positive integer or null, got {self.rank}")
        self.shapes = [(int(a), int(b)) for a, b in self.shapes]
        self.ranks = [self.rank] if self.rank is not None else list(self.ranks)
        if self.omega == "auto":
            raise InputError(
                "omega=auto chooses ω for the layers of a network it trains; task=theory has "
                "none and sweeps ω itself: pass omega=<number>, paper or null"
            )
        self.fixed_omega = None if self.omega in (None, "paper") else float(self.omega)
        self.omegas = sorted(
            {*map(float, self.omegas), *([self.fixed_omega] if self.fixed_omega else [])}
        )

    # -- measurements -------------------------------------------------------------------------
    def sweep(self, seed: int) -> list[RankRow]:
        """Rank of ``f(ω·UV)`` for every shape, k, ω and trial (non-sines at the smallest k)."""
        rows: list[RankRow] = []
        jobs = [
            (shape, k, trial)
            for shape in self.shapes
            for k in self.ranks
            if k < min(shape)
            for trial in range(self.trials)
        ]
        for (d_out, d_in), k, trial in track(jobs, description="rank vs ω", transient=True):
            U, V = draw_factors(d_out, d_in, k, seed + trial)
            names = self.nonlinearities if k == min(self.ranks) else ["sine"]
            for name in names:
                for omega in self.omegas:
                    stats = rank_stats(apply_nonlinearity(name, U, V, omega))
                    rows.append(RankRow(d_out, d_in, k, name, omega, trial, **stats))
        return rows

    def paper_points(self, seed: int) -> list[PaperPoint]:
        """The rank the sine reaches at each of the paper's (task, k, ω), at that task's shape."""
        points: list[PaperPoint] = []
        for task in self.paper_tasks:
            setting = PAPER[task]
            d_out, d_in = setting.layer_shape
            for k, paper_w in setting.omega.items():
                if k not in self.ranks or k >= min(d_out, d_in):
                    continue
                omega = self.fixed_omega or float(paper_w)
                U, V = draw_factors(d_out, d_in, k, seed)
                stats = rank_stats(sine_weight(U, V, omega, 1.0))
                points.append(
                    PaperPoint(task, d_out, d_in, k, omega, max_rank=min(d_out, d_in), **stats)
                )
        if not points:
            have = sorted({k for t in self.paper_tasks for k in PAPER[t].omega})
            raise InputError(
                f"the paper trains none of {self.paper_tasks} at rank={self.rank}; "
                f"ranks it uses: {have}"
            )
        return points

    # -- outputs ------------------------------------------------------------------------------
    def run(self, model: None, ctx: RunContext) -> TaskOutput:
        rows = self.sweep(ctx.seed)
        points = self.paper_points(ctx.seed)
        out = ctx.output_dir
        write_csv(out / "rank_vs_omega.csv", [asdict(r) for r in rows])
        write_csv(out / "paper_frequencies.csv", [asdict(p) for p in points])
        for field in ("numerical_rank", "stable_rank"):
            plot_rank_vs_omega(rows, field, out / f"{field}_vs_omega.png", min(self.ranks))
        plot_heatmaps(self.heatmap_size, self.omegas, ctx.seed, out / "heatmaps.png")
        metrics = {
            self.metric: sum(p.numerical_rank / p.max_rank for p in points) / len(points),
            "theory/plain_rank_fraction": sum(p.k / p.max_rank for p in points) / len(points),
        }
        for p in points:
            metrics[f"theory/{p.task}/k{p.k}_rank"] = float(p.numerical_rank)
            log.info(
                "%s k=%d ω=%g (%dx%d): rank %d of %d, stable rank %.1f",
                p.task,
                p.k,
                p.omega,
                p.d_out,
                p.d_in,
                p.numerical_rank,
                p.max_rank,
                p.stable_rank,
            )
        return TaskOutput(metrics=metrics)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _mean_by(rows: list[RankRow], field: str, **match) -> tuple[list[float], list[float]]:
    """Mean of ``field`` over trials, per ω, for the rows matching ``match``."""
    by_omega: dict[float, list[float]] = {}
    for r in rows:
        if all(getattr(r, k) == v for k, v in match.items()):
            by_omega.setdefault(r.omega, []).append(getattr(r, field))
    omegas = sorted(by_omega)
    return omegas, [sum(by_omega[w]) / len(by_omega[w]) for w in omegas]


def plot_rank_vs_omega(rows: list[RankRow], field: str, path: Path, compare_k: int) -> None:
    """Figure 3: ``field`` (a rank) against ω per k (top), per non-linearity at one k (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({(r.d_out, r.d_in) for r in rows})
    fig, axes = plt.subplots(
        2, len(shapes), figsize=(5 * len(shapes), 8), squeeze=False, layout="constrained"
    )
    for col, (d_out, d_in) in enumerate(shapes):
        top, bottom = axes[0, col], axes[1, col]
        for k in sorted({r.k for r in rows if (r.d_out, r.d_in) == (d_out, d_in)}):
            w, rank = _mean_by(rows, field, d_out=d_out, d_in=d_in, k=k, nonlinearity="sine")
            (line,) = top.plot(w, rank, marker="o", label=f"sin, k={k}")
            top.axhline(k, color=line.get_color(), linestyle=":", linewidth=1)
        ylabel = field.replace("_", " ")
        top.set(xscale="log", xlabel="ω", ylabel=ylabel, title=f"sin(ω·UV), {d_out}×{d_in}")
        top.legend(fontsize=8)
        for name in sorted({r.nonlinearity for r in rows}):
            w, rank = _mean_by(rows, field, d_out=d_out, d_in=d_in, k=compare_k, nonlinearity=name)
            if w:
                bottom.plot(w, rank, marker="o", label=name)
        bottom.set(xscale="log", xlabel="ω", ylabel=ylabel, title=f"f(ω·UV), k={compare_k}")
        bottom.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmaps(size: int, omegas: Sequence[float], seed: int, path: Path) -> None:
    """Figure 2: a full-rank matrix, a rank-1 product, and its sine at a low and a high ω."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    full = torch.nn.Linear(size, size, dtype=torch.float64).weight.detach()
    U, V = draw_factors(size, size, 1, seed)
    low, high = omegas[len(omegas) // 3], omegas[-1]
    panels = [
        ("full rank", full),
        ("low rank UV (k=1)", U @ V),
        (f"sin({low:g}·UV)", sine_weight(U, V, low, 1.0)),
        (f"sin({high:g}·UV)", sine_weight(U, V, high, 1.0)),
    ]
    # Constrained layout makes room for the titles above the square images, which
    # tight_layout leaves cut off at this figure's height.
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), layout="constrained")
    for ax, (title, matrix) in zip(axes, panels, strict=True):
        ax.imshow(matrix.abs().numpy(), cmap="viridis")
        ax.set_title(f"{title}: rank {rank_stats(matrix)['numerical_rank']}")
        ax.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)
