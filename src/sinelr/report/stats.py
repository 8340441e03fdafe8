"""Intervals: a cell's mean over its seeds, and the sine − plain gap between two cells.

A cell's interval is the Student t interval of its mean. A gap is paired by seed where the two
cells ran the same seeds (each once): seed s of the sine against seed s of the plain method,
which removes what the seed does to both (its data order, its initialisation); the interval is
then the t interval of the mean per-seed difference. Where the seeds differ, the cells are two
independent samples and the interval is Welch's, which does not assume equal spreads. Every
interval is at :data:`LEVEL` and needs two runs a side (two pairs); a gap without one is the
difference of means alone. docs/report.md states the rules.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # the report already loads scipy (sinelr.bjontegaard)

LEVEL = 0.95  # the coverage of every interval the report prints
NOT_RESOLVED = "n.r."  # a gap whose interval holds 0: the runs do not tell sine from plain
UNPAIRED = "unpaired"  # a gap between cells of different seeds: Welch's interval


def t_quantile(df: float) -> float:
    """The two-sided :data:`LEVEL` quantile of Student's t with ``df`` degrees of freedom (any
    positive real: Welch's are not whole)."""
    return float(stdtrit(df, 0.5 + LEVEL / 2))


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The Student t interval of the mean of ``values``; None below two values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """Welch's interval of ``mean(b) − mean(a)`` (Welch–Satterthwaite degrees of freedom);
    None unless each side has two values. Zero spread on both sides is a point."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(b) - statistics.fmean(a)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(df) * math.sqrt(va + vb)
    return diff - half, diff + half


def paired_seeds(a: Sequence[int | None], b: Sequence[int | None]) -> bool:
    """Whether two cells ran the same seeds, each once, so that their runs pair by seed."""
    once = None not in a and len(set(a)) == len(a) == len(b)
    return once and set(a) == set(b)


@dataclass(frozen=True)
class Gap:
    """``sine − plain``: the mean difference, its :data:`LEVEL` interval where the runs give
    one, and whether it is paired by seed."""

    mean: float
    interval: tuple[float, float] | None
    paired: bool

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0 (decided before rounding); a gap without an
        interval is not called resolved either, but prints no mark: it has no brackets."""
        return self.interval is not None and not self.interval[0] <= 0 <= self.interval[1]

    def text(self, scale: float = 1.0) -> str:
        """``+1.23 [0.41, 2.05]``, then ``(unpaired)`` for Welch's interval and ``(n.r.)``
        where it holds 0; the bare difference ``+1.23`` where there is no interval."""
        text = f"{self.mean * scale:+.2f}"
        if self.interval is None:
            return text
        low, high = (bound * scale for bound in self.interval)
        marks = [] if self.paired else [UNPAIRED]
        marks += [] if self.resolved else [NOT_RESOLVED]
        return f"{text} [{low:.2f}, {high:.2f}]" + (f" ({', '.join(marks)})" if marks else "")


def gap(
    plain: Sequence[float],
    sine: Sequence[float],
    plain_seeds: Sequence[int | None],
    sine_seeds: Sequence[int | None],
) -> Gap:
    """``sine − plain`` of two cells' runs (values in the order of their seeds' lists)."""
    if paired_seeds(plain_seeds, sine_seeds):
        by_seed = dict(zip(plain_seeds, plain, strict=True))
        diffs = [value - by_seed[seed] for seed, value in zip(sine_seeds, sine, strict=True)]
        return Gap(statistics.fmean(diffs), mean_interval(diffs), True)
    return Gap(statistics.fmean(sine) - statistics.fmean(plain), welch_interval(plain, sine), False)


#: Bootstrap resamples for a share's interval, and their fixed seed: the same runs always print
#: the same interval.
RESAMPLES, BOOTSTRAP_SEED = 10_000, 0


@dataclass(frozen=True)
class Share:
    """How much of the best setting's gain over plain an arm recovers:
    ``(arm − plain) / (ceiling − plain)``, with a bootstrap interval over the seeds."""

    value: float
    interval: tuple[float, float] | None
    ceiling: int  # the index of the candidate that is the ceiling

    def text(self) -> str:
        """``87 % [52, 130]``; ``87 % [no interval]`` where the resamples give none."""
        if self.interval is None:
            return f"{100 * self.value:.0f} % [no interval]"
        low, high = self.interval
        return f"{100 * self.value:.0f} % [{100 * low:.0f}, {100 * high:.0f}]"


def share(
    plain: dict[int, float],
    arm: dict[int, float],
    candidates: Sequence[dict[int, float]],
    chosen_by: Sequence[dict[int, float]] | None = None,
    higher_is_better: bool = True,
    chosen_higher_is_better: bool | None = None,
) -> Share | None:
    """The share of the best candidate's gain that ``arm`` recovers, each a ``seed → value`` map.

    The ceiling is the candidate with the best mean of ``chosen_by`` (its validation scores,
    results.json's ``selection``; the candidates' own values where there are none, which the
    caller must say), over the seeds every map shares; the share is of means over those seeds.
    The interval resamples the seeds with replacement, all maps together (a resample keeps the
    pairing by seed), and chooses the ceiling again in each, so the choice's luck is in the
    interval; the 2.5th and 97.5th percentiles of the resamples whose ceiling gains over plain.
    None where the seeds shared are fewer than two or the ceiling does not gain over plain.
    ``higher_is_better`` is the values' direction, ``chosen_higher_is_better`` that of
    ``chosen_by`` (a validation loss: False; None: the values').
    """
    chosen_by = chosen_by if chosen_by is not None else candidates
    maps = [plain, arm, *candidates, *chosen_by]
    seeds = sorted(set.intersection(*(set(m) for m in maps)))
    if len(seeds) < 2 or not candidates:
        return None

    def table(m: dict[int, float]) -> np.ndarray:
        return np.array([m[s] for s in seeds])

    # Negated where lower is better: the best is then the largest, the gain positive, and the
    # ratio of two gains unchanged.
    sign = 1.0 if higher_is_better else -1.0
    chosen_sign = (
        sign if chosen_higher_is_better is None else (1.0 if chosen_higher_is_better else -1.0)
    )
    p, a = sign * table(plain), sign * table(arm)
    c = sign * np.stack([table(m) for m in candidates])
    v = chosen_sign * np.stack([table(m) for m in chosen_by])

    def shares(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best = v[:, index].mean(axis=-1).argmax(axis=0)
        ceiling = np.take_along_axis(c[:, index].mean(axis=-1), best[None], axis=0)[0]
        base = p[index].mean(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):  # no gain: dropped below
            return (a[index].mean(axis=-1) - base) / (ceiling - base), ceiling - base

    whole = np.arange(len(seeds))
    value, gain = shares(whole)
    if gain <= 0:
        return None
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(seeds), (RESAMPLES, len(seeds)))
    values, gains = shares(draws)
    kept = values[gains > 0]
    interval = None
    if len(kept) >= RESAMPLES // 2:  # most resamples have a gain to share
        low, high = np.percentile(kept, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
        interval = (float(low), float(high))
    best = int(v.mean(axis=-1).argmax())
    return Share(float(value), interval, best)
