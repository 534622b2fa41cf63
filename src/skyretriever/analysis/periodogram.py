"""The Lomb-Scargle periodogram peak of a source: rotation, pulsation, ellipsoidal variation.

The good epochs of all the source's light curves, each divided by its own
median, go into one Lomb-Scargle periodogram from ``min_period`` to
``max_period`` (default: half the span). The grid is computed by ``nifty-ls``
(a non-uniform FFT, the same floating-mean, error-weighted ``standard``
periodogram as :class:`astropy.timeseries.LombScargle`, equal to its exact
method to about 1e-9 in power and some 40 times faster than its ``fast``
method on two seasons of data); the best peak is then refined on a fine grid
and given a false-alarm probability (Baluev's bound) by astropy. Data sampled
much faster than ``min_period`` (2-min TESS cadence) are first binned to a
tenth of it, which leaves the periodogram over the periods searched as it was
at a fraction of the cost. The highest peak gives ``ls_period`` and
``ls_power`` in Properties, and its false-alarm probability ``ls_false_alarm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skyretriever.analysis.series import bin_series
from skyretriever.parameters import Parameters, parameter

__all__ = ["PeriodogramParameters", "lomb_scargle_peak"]


class PeriodogramParameters(Parameters):
    """The Lomb-Scargle periodogram of each source."""

    enabled: bool = parameter(True, "Compute the periodogram peak of each source.")
    min_period: float = parameter(0.05, "Shortest period searched (days).", gt=0)
    max_period: float | None = parameter(
        None, "Longest period searched (days); default half the span of the data.", gt=0
    )
    samples_per_peak: int = parameter(5, "Frequencies per peak width (1 / span).", ge=1)
    max_frequencies: int = parameter(
        200_000, "Most trial frequencies; a finer grid over a long span is made coarser.", ge=10
    )


def lomb_scargle_peak(times: np.ndarray, values: np.ndarray, errors: np.ndarray | None = None,
                      pars: PeriodogramParameters | None = None) -> dict[str, Any]:
    """Period, power and false-alarm probability of the highest Lomb-Scargle peak.

    Returns ``None`` values when there are too few points or too short a span.

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> t = np.sort(rng.uniform(0, 30, 600))
    >>> y = 1 + 0.01 * np.sin(2 * np.pi * t / 3.7) + 0.005 * rng.standard_normal(600)
    >>> peak = lomb_scargle_peak(t, y)
    >>> round(peak["ls_period"], 2), peak["ls_false_alarm"] < 1e-10
    (3.7, True)
    """
    import nifty_ls
    from astropy.timeseries import LombScargle

    pars = pars or PeriodogramParameters()
    empty = {"ls_period": None, "ls_power": None, "ls_false_alarm": None}
    finite = np.isfinite(times) & np.isfinite(values)
    if errors is not None:
        finite &= np.isfinite(errors) & (errors > 0)
    order = np.argsort(times[finite], kind="stable")
    times = np.asarray(times[finite][order], dtype=np.float64)
    values = np.asarray(values[finite][order], dtype=np.float64)
    errors = np.asarray(errors[finite][order], dtype=np.float64) if errors is not None else None
    if len(times) < 10:
        return empty
    width = pars.min_period / 10
    if np.median(np.diff(times)) < width / 2:
        weights = errors if errors is not None else np.ones(len(times))
        times, values, binned_errors = bin_series(times, values, weights, width)
        errors = binned_errors if errors is not None else None
    span = float(times.max() - times.min())
    max_period = pars.max_period if pars.max_period is not None else span / 2
    if not (span > 0 and max_period > pars.min_period):
        return empty
    low, high = 1.0 / max_period, 1.0 / pars.min_period
    count = int(np.ceil((high - low) * span * pars.samples_per_peak)) + 1
    frequency = np.linspace(low, high, min(count, pars.max_frequencies))
    # One thread: the pipeline already runs one worker process per core.
    power = nifty_ls.lombscargle(times, values, errors, fmin=low, fmax=high, Nf=len(frequency),
                                 backend="finufft", nthreads=1).power
    best = int(np.nanargmax(power))
    # the grid samples each peak a few times only: look again, finely, around the best
    model = LombScargle(times, values, errors)
    step = frequency[1] - frequency[0]
    fine = np.linspace(frequency[best] - step, frequency[best] + step, 41)
    fine = fine[fine > 0]
    fine_power = model.power(fine, method="cython")
    peak = int(np.nanargmax(fine_power))
    return {
        "ls_period": float(1.0 / fine[peak]),
        "ls_power": float(fine_power[peak]),
        "ls_false_alarm": float(model.false_alarm_probability(
            fine_power[peak], minimum_frequency=low, maximum_frequency=high
        )),
    }
