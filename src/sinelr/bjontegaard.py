"""Bjøntegaard deltas between two rate–quality curves (BD-PSNR and BD-rate).

The paper compares sine and plain low-rank NeRFs over their (parameters, PSNR) curves with
Akima interpolation (Bjøntegaard, 2001; Herglotz et al., 2022): each curve's quality is
interpolated against log10(rate), and the delta is the mean vertical (BD-PSNR) or horizontal
(BD-rate) gap over the range both curves cover. Akima's piecewise cubic does not overshoot
between points as the original cubic polynomial fit does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import Akima1DInterpolator


def _curve(x: np.ndarray, y: np.ndarray) -> Akima1DInterpolator:
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"a curve's points need distinct values to interpolate over, got {x}")
    return Akima1DInterpolator(x, y)


def _mean_gap(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> float:
    """Mean of ``f2 - f1`` over the interval both curves span."""
    low, high = max(x1.min(), x2.min()), min(x1.max(), x2.max())
    if not high > low:
        raise ValueError(
            f"the curves do not overlap ([{x1.min():g}, {x1.max():g}] and "
            f"[{x2.min():g}, {x2.max():g}]): there is no range to compare them over"
        )
    area1 = _curve(x1, y1).integrate(low, high)
    area2 = _curve(x2, y2).integrate(low, high)
    return float((area2 - area1) / (high - low))


def _points(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    rate_arr, quality_arr = np.asarray(rate, float), np.asarray(quality, float)
    if rate_arr.shape != quality_arr.shape or rate_arr.ndim != 1 or len(rate_arr) < 2:
        raise ValueError("a curve needs at least two (rate, quality) points, as equal-length lists")
    if np.any(rate_arr <= 0) or not np.all(np.isfinite(quality_arr)):
        raise ValueError("rates must be positive and qualities finite")
    return np.log10(rate_arr), quality_arr


def bd_psnr(
    rate_ref: Sequence[float],
    psnr_ref: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Mean PSNR gain (dB) of the test curve over the reference at equal rate."""
    x1, y1 = _points(rate_ref, psnr_ref)
    x2, y2 = _points(rate_test, psnr_test)
    return _mean_gap(x1, y1, x2, y2)


def bd_rate(
    rate_ref: Sequence[float],
    psnr_ref: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Mean rate change (%) of the test curve against the reference at equal PSNR.

    Negative: the test curve needs fewer parameters for the same quality.
    """
    x1, y1 = _points(rate_ref, psnr_ref)
    x2, y2 = _points(rate_test, psnr_test)
    return (10 ** _mean_gap(y1, x1, y2, x2) - 1) * 100
