"""Operations on one time series: segments, trends, binning and robust scatter.

The finders share these. Every function takes arrays and returns new arrays;
none changes its input. Times are in days and must be sorted where a function
says so; values are relative fluxes (about 1) unless stated otherwise.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "MAD_TO_SIGMA",
    "bin_series",
    "binned_scatter",
    "clipped_std",
    "detrend",
    "median",
    "point_to_point_scatter",
    "robust_std",
    "running_trend",
    "segment_bounds",
    "spline_trend",
]

#: Ratio of the standard deviation to the median absolute deviation of a normal distribution.
MAD_TO_SIGMA = 1.4826

DetrendMethod = Literal["window", "spline", "none"]


def median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array, the same number, without numpy's general path.

    NaN if the array is empty or holds a NaN. On a light curve's hundred values
    it takes about a fifth of ``np.median``'s 8 microseconds; a source's checks,
    finders and properties take about forty medians.

    Examples
    --------
    >>> median(np.array([3.0, 1.0, 2.0, 10.0])), median(np.array([2.0, np.nan])), median([])
    (2.5, nan, nan)
    """
    values = np.asarray(values, dtype=float)
    size = len(values)
    if size == 0:
        return float("nan")
    half = size // 2
    part = np.partition(values, [half - 1, half, size - 1] if size % 2 == 0 else [half, size - 1])
    if np.isnan(part[-1]):          # NaN sorts last
        return float("nan")
    return float(part[half]) if size % 2 else float((part[half - 1] + part[half]) / 2)


def robust_std(values: np.ndarray) -> float:
    """1.4826 times the median absolute deviation of the finite values (NaN if none).

    Examples
    --------
    >>> round(robust_std(np.array([1.0, 2.0, 3.0, 4.0, 100.0])), 3)
    1.483
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * median(np.abs(values - median(values))))


def point_to_point_scatter(values: np.ndarray) -> float:
    """White-noise scatter per point from successive differences (insensitive to slow trends).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> trend = np.linspace(0, 50, 10_000)              # a trend 50 times the noise
    >>> round(float(point_to_point_scatter(trend + rng.standard_normal(10_000))), 1)
    1.0
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 3:
        return float("nan")
    return robust_std(np.diff(values)) / np.sqrt(2.0)


def segment_bounds(times: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the stretches of sorted ``times`` without gaps over ``gap``.

    Examples
    --------
    >>> segment_bounds(np.array([0.0, 0.1, 0.2, 5.0, 5.1]), gap=1.0)
    [(0, 3), (3, 5)]
    """
    if len(times) == 0:
        return []
    breaks = np.flatnonzero(np.diff(times) > gap) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(times)]
    return [(int(a), int(b)) for a, b in zip(starts, stops)]


def running_trend(times: np.ndarray, values: np.ndarray, window: float, clip: float = 3.0,
                  knots_per_window: int = 8, at: np.ndarray | None = None) -> np.ndarray:
    """Robust running mean of ``values`` in a sliding time window, at every time.

    In each window, points further than ``clip`` robust standard deviations
    from the median are left out and the rest averaged. Unlike a running
    median, this is hardly pulled by shallow dips hidden in the noise (a
    median shifts by about 1.25 times the noise times the fraction of points
    in a dip, whatever its depth), while deep dips and flares are clipped.

    The mean is evaluated on knots ``window / knots_per_window`` apart and
    interpolated linearly: the cost is one window per knot instead of one per
    point. Each mean is placed at the mean time of the points it averaged, so
    near the ends of the data, where windows are cut short, a sloping trend is
    followed instead of flattened; beyond the first and last of those times the
    trend goes on straight. ``times`` must be sorted and ``values`` finite;
    the trend is returned at ``at`` (default: ``times``).

    Examples
    --------
    >>> t = np.linspace(0, 10, 1001)
    >>> bool(np.max(np.abs(running_trend(t, 0.1 * t, window=1.0) - 0.1 * t)) < 1e-12)
    True
    >>> dip = np.where(np.abs(t - 5) < 0.05, -1.0, 0.0)     # a short, deep dip is clipped
    >>> bool(np.max(np.abs(running_trend(t, 0.1 * t + dip, window=1.0) - 0.1 * t)) < 1e-12)
    True
    """
    at = times if at is None else at
    if len(times) == 0:
        return np.full(len(at), np.nan)
    step = window / knots_per_window
    knots = np.arange(times[0], times[-1] + step, step)
    low = np.searchsorted(times, knots - window / 2, side="left")
    high = np.searchsorted(times, knots + window / 2, side="right")
    centres, means = [], []
    for a, b in zip(low, high):
        if b <= a:
            continue
        chunk = values[a:b]
        middle = median(chunk)
        spread = MAD_TO_SIGMA * median(np.abs(chunk - middle))
        kept = np.abs(chunk - middle) <= clip * spread if spread > 0 else np.ones(b - a, bool)
        centres.append(np.mean(times[a:b][kept]))
        means.append(np.mean(chunk[kept]))
    centres, first = np.unique(np.asarray(centres), return_index=True)
    means = np.asarray(means)[first]
    trend = np.interp(at, centres, means)
    if len(centres) > 1:
        # straight on beyond the first and last centres, with the slope over half a window
        for edge, other, outside in ((0, np.searchsorted(centres, centres[0] + window / 2),
                                      at < centres[0]),
                                     (-1, np.searchsorted(centres, centres[-1] - window / 2) - 1,
                                      at > centres[-1])):
            other = int(np.clip(other, 0, len(centres) - 1))
            if other != edge % len(centres) and outside.any():
                slope = (means[other] - means[edge]) / (centres[other] - centres[edge])
                trend[outside] = means[edge] + slope * (at[outside] - centres[edge])
    return trend


def _spline_knots(times: np.ndarray, spacing: float, min_points: int = 5) -> np.ndarray:
    """Interior knots about ``spacing`` apart, each interval holding data (no knot in a gap)."""
    knots: list[float] = []
    previous_index = 0
    for knot in np.arange(times[0] + spacing, times[-1] - spacing / 2, spacing):
        index = int(np.searchsorted(times, knot))
        if index - previous_index >= min_points and len(times) - index >= min_points:
            knots.append(float(knot))
            previous_index = index
    return np.asarray(knots)


def spline_trend(times: np.ndarray, values: np.ndarray, knot_spacing: float,
                 clip: float = 3.0, iterations: int = 3, fit: np.ndarray | None = None
                 ) -> np.ndarray:
    """A cubic spline with knots ``knot_spacing`` apart, fitted with outliers clipped.

    Points more than ``clip`` robust standard deviations from the fit are left
    out of the next fit, so transits and flares do not pull the trend; points
    where ``fit`` is false are left out from the start. ``times`` must be sorted
    and ``values`` finite.

    Examples
    --------
    >>> t = np.linspace(0, 10, 2001)
    >>> dip = np.where(np.abs(t - 5) < 0.1, -0.01, 0.0)
    >>> trend = spline_trend(t, 1 + 0.001 * np.sin(t) + dip, knot_spacing=1.0)
    >>> bool(np.max(np.abs(trend - 1 - 0.001 * np.sin(t))) < 2e-4)
    True
    """
    from scipy.interpolate import LSQUnivariateSpline  # 0.6 s to import: only when used

    n = len(times)
    keep = np.ones(n, dtype=bool) if fit is None else fit.copy()
    if keep.sum() < 8:
        return np.full(n, median(values))
    trend = np.full(n, median(values))
    for _ in range(iterations):
        knots = _spline_knots(times[keep], knot_spacing)
        try:
            spline = LSQUnivariateSpline(times[keep], values[keep], knots, k=3)
        except ValueError:  # too few points between knots after clipping: keep the last trend
            break
        trend = spline(times)
        residuals = values - trend
        scatter = robust_std(residuals[keep])
        if not scatter > 0:
            break
        new_keep = np.abs(residuals) < clip * scatter
        if fit is not None:
            new_keep &= fit
        if new_keep.sum() < 8 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return trend


def detrend(times: np.ndarray, flux: np.ndarray, method: DetrendMethod, window: float,
            segment_gap: float, ignore: np.ndarray | None = None) -> np.ndarray:
    """Flux divided by its trend, each segment (stretch between gaps) on its own.

    Parameters
    ----------
    times, flux
        Sorted times (days) and finite, positive fluxes.
    method
        ``window`` (robust running mean of width ``window``, see
        :func:`running_trend`), ``spline`` (robust cubic spline with knots
        ``window`` apart) or ``none`` (each segment divided by its median only).
    window
        Width of the window, or spacing of the knots (days).
    segment_gap
        Gaps longer than this (days) start a new segment.
    ignore
        Points left out of the trend fit (such as known transits); the trend
        is still evaluated there.

    Returns
    -------
    numpy.ndarray
        Relative flux, about 1 in every segment (a new array).

    Examples
    --------
    >>> t = np.r_[np.linspace(0, 5, 500), np.linspace(7, 12, 500)]
    >>> f = np.r_[np.full(500, 100.0), np.full(500, 200.0)] * (1 + 0.01 * t)
    >>> relative = detrend(t, f, "window", window=1.0, segment_gap=0.5)
    >>> bool(np.max(np.abs(relative - 1)) < 1e-9)
    True
    """
    if method not in ("window", "spline", "none"):
        raise ValueError(f"unknown detrending method {method!r}; use window, spline or none")
    relative = np.empty(len(flux), dtype=float)
    for start, stop in segment_bounds(times, segment_gap):
        t, f = times[start:stop], flux[start:stop]
        fit = np.ones(len(t), bool) if ignore is None else ~ignore[start:stop]
        if fit.sum() < 3:
            fit[:] = True
        if method == "window":
            trend = running_trend(t[fit], f[fit], window, at=t)
        elif method == "spline":
            trend = spline_trend(t, f, window, fit=fit)
        else:
            trend = np.full(len(f), median(f[fit]))
        relative[start:stop] = f / trend
    return relative


def bin_series(times: np.ndarray, values: np.ndarray, errors: np.ndarray, width: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-variance weighted means in time bins of ``width`` (days); empty bins are left out.

    Returns the bins' mean times, mean values and errors of the means.

    Examples
    --------
    >>> t, v, e = bin_series(np.arange(6.0), np.array([1.0, 3, 2, 2, 5, 7]), np.ones(6), 2.0)
    >>> t.tolist(), v.tolist(), np.round(e, 3).tolist()
    ([0.5, 2.5, 4.5], [2.0, 2.0, 6.0], [0.707, 0.707, 0.707])
    """
    if len(times) == 0:
        return times.copy(), values.copy(), errors.copy()
    index = np.floor((times - times[0]) / width).astype(np.int64)
    weights = 1.0 / errors**2
    total = np.bincount(index, weights)
    filled = total > 0
    mean_time = np.bincount(index, weights * times)[filled] / total[filled]
    mean_value = np.bincount(index, weights * values)[filled] / total[filled]
    return mean_time, mean_value, 1.0 / np.sqrt(total[filled])


def clipped_std(values: np.ndarray, clip: float = 4.0) -> float:
    """Standard deviation after leaving out values over ``clip`` robust deviations from the median.

    Nearly as precise as the plain standard deviation on normal noise (the
    median absolute deviation needs almost three times the values for the same
    precision), yet not thrown by a few outliers.

    Examples
    --------
    >>> values = np.r_[np.random.default_rng(0).standard_normal(10_000), 1e3]
    >>> round(clipped_std(values), 2), round(float(values.std()), 1)
    (1.0, 10.0)
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan")
    spread = robust_std(values)
    if spread > 0:
        values = values[np.abs(values - median(values)) <= clip * spread]
    return float(np.std(values, ddof=1))


def binned_scatter(times: np.ndarray, values: np.ndarray, width: float,
                   min_fill: float = 0.5, offsets: int = 4) -> tuple[float, float]:
    """Scatter of the means of ``values`` in time bins of ``width``, and the points per bin.

    Only bins holding at least ``min_fill`` times the typical number of points
    count. Under white noise the scatter is the point scatter over the square
    root of the points per bin; correlated (red) noise makes it larger, which
    is what a search on that time scale must allow for. The bins are laid
    ``offsets`` times, shifted by a fraction of a bin each time, and the
    variances averaged, which makes the estimate steadier.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> scatter, per_bin = binned_scatter(np.arange(40_000) / 100, rng.standard_normal(40_000), 1.0)
    >>> per_bin, round(float(scatter * np.sqrt(per_bin)), 1)
    (100.0, 1.0)
    """
    if len(times) < 2:
        return float("nan"), float("nan")
    variances, typical_counts = [], []
    for shift in np.arange(offsets) / offsets:
        index = np.floor((times - times[0]) / width + shift).astype(np.int64)
        counts = np.bincount(index)
        sums = np.bincount(index, values)
        typical = float(np.median(counts[counts > 0]))
        full = counts >= max(1.0, min_fill * typical)
        if full.sum() >= 5:
            variances.append(clipped_std(sums[full] / counts[full]) ** 2)
            typical_counts.append(typical)
    if not variances:
        return float("nan"), float(np.median(np.bincount(
            np.floor((times - times[0]) / width).astype(np.int64))))
    return float(np.sqrt(np.mean(variances))), float(np.median(typical_counts))
