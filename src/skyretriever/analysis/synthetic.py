"""Synthetic light curves with known truth, for tests, benchmarks and sensitivity studies.

:func:`sector_lightcurve` makes one table in the standard reduced columns
(``mjd, flux, flux_err, mag, mag_err, filter, quality, qflag, exptime``) that
looks like a TESS sector: a regular cadence, the gap between the two orbits,
white noise, optionally correlated (red) noise and stellar variability, a few
cadences with quality bits set and a few with no flux. Signals from
:mod:`skyretriever.analysis.simulator` (transits, flares, dips) multiply it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from skyretriever.models.datasets import Lightcurve

__all__ = ["TESS_ZEROPOINT", "as_lightcurve", "red_noise", "sector_lightcurve", "signal_times"]

#: TESS magnitude of a star giving 1 e-/s (Vanderspek et al. 2018).
TESS_ZEROPOINT = 20.44
_MJD_OF_TESS_SECTOR_1 = 58325.3  # 2018-07-25, start of sector 1


def red_noise(rng: np.random.Generator, times: np.ndarray, sigma: float, timescale: float
              ) -> np.ndarray:
    """Correlated noise: an Ornstein-Uhlenbeck process of standard deviation ``sigma``.

    Successive values decorrelate as ``exp(-dt / timescale)`` (days), so on
    time scales shorter than ``timescale`` the noise does not average down.

    Examples
    --------
    >>> noise = red_noise(np.random.default_rng(0), np.arange(0, 2000, 0.01), 1.0, 0.5)
    >>> round(float(noise.std()), 1), round(float(np.corrcoef(noise[:-1], noise[1:])[0, 1]), 2)
    (1.0, 0.98)
    """
    steps = np.exp(-np.diff(times, prepend=times[0]) / timescale)
    kicks = rng.standard_normal(len(times)) * sigma * np.sqrt(1 - steps**2)
    values = np.empty(len(times))
    value = rng.standard_normal() * sigma
    for index, (step, kick) in enumerate(zip(steps.tolist(), kicks.tolist())):
        value = step * value + kick if index else value
        values[index] = value
    return values


def sector_lightcurve(rng: np.random.Generator, *, start: float = _MJD_OF_TESS_SECTOR_1,
                      days: float = 27.0, cadence_minutes: float = 2.0,
                      gaps: tuple[tuple[float, float], ...] = ((13.2, 14.2),),
                      mag: float = 10.0, noise_ppm: float = 1000.0, red_ppm: float = 0.0,
                      red_timescale: float = 0.1, variability_ppm: float = 0.0,
                      rotation_period: float = 3.0, flagged_fraction: float = 0.01,
                      missing_fraction: float = 0.005, signal: np.ndarray | None = None,
                      band: str = "TESS") -> pd.DataFrame:
    """One sector-like light curve in the standard reduced columns.

    Parameters
    ----------
    rng
        The random generator (fix its seed for repeatable data).
    start, days, cadence_minutes, gaps
        First time (MJD), length (days), cadence, and (start, end) gaps in days
        from ``start`` (default: the mid-sector gap for the data downlink).
    mag, noise_ppm, red_ppm, red_timescale
        Magnitude (sets the flux), white noise per cadence, and correlated noise
        (standard deviation, decorrelation time in days).
    variability_ppm, rotation_period
        Semi-amplitude and period (days) of spot-like stellar variability.
    flagged_fraction, missing_fraction
        Cadences with a quality bit set (as a momentum dump would), and with no flux.
    signal
        Relative flux to multiply by, at the times this function makes (get
        them from :func:`signal_times` with the same arguments).
    band
        Filter name.

    Returns
    -------
    pandas.DataFrame
        The table, with ``qflag`` set where the quality bits are.

    Examples
    --------
    >>> frame = sector_lightcurve(np.random.default_rng(1))
    >>> len(frame), round(float(frame["mjd"].diff().median() * 1440), 1)
    (18720, 2.0)
    >>> round(float(np.nanstd(frame["flux"] / np.nanmedian(frame["flux"])) * 1e6), -2)
    1000.0
    """
    times = signal_times(start, days, cadence_minutes, gaps)
    n = len(times)
    relative = 1 + noise_ppm * 1e-6 * rng.standard_normal(n)
    if red_ppm:
        relative += red_noise(rng, times, red_ppm * 1e-6, red_timescale)
    if variability_ppm:
        phase = rng.uniform(0, 2 * np.pi)
        relative += variability_ppm * 1e-6 * np.sin(2 * np.pi * (times - start) / rotation_period
                                                     + phase)
    if signal is not None:
        relative *= signal
    level = 10 ** (-0.4 * (mag - TESS_ZEROPOINT))
    flux = level * relative
    flux_err = np.full(n, level * noise_ppm * 1e-6)
    quality = np.where(rng.random(n) < flagged_fraction, 32, 0).astype(np.int32)  # 32: Desat
    flux[rng.random(n) < missing_fraction] = np.nan
    with np.errstate(invalid="ignore"):
        magnitude = TESS_ZEROPOINT - 2.5 * np.log10(flux)
    return pd.DataFrame({
        "mjd": times,
        "flux": flux,
        "flux_err": flux_err,
        "mag": magnitude,
        "mag_err": 2.5 / np.log(10) * flux_err / flux,
        "filter": band,
        "quality": quality,
        "qflag": quality != 0,
        "exptime": np.full(n, cadence_minutes * 60.0),
    })


def signal_times(start: float = _MJD_OF_TESS_SECTOR_1, days: float = 27.0,
                 cadence_minutes: float = 2.0,
                 gaps: tuple[tuple[float, float], ...] = ((13.2, 14.2),)) -> np.ndarray:
    """The times :func:`sector_lightcurve` makes with the same arguments.

    Examples
    --------
    >>> times = signal_times(days=1.0, cadence_minutes=60.0, gaps=((0.2, 0.5),))
    >>> ((times - times[0]) * 24).round().astype(int).tolist()
    [0, 1, 2, 3, 4, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
    """
    offsets = np.arange(0.0, days, cadence_minutes / 1440.0)
    keep = np.ones(len(offsets), dtype=bool)
    for low, high in gaps:
        keep &= (offsets < low) | (offsets > high)
    return start + offsets[keep]


def as_lightcurve(frame: pd.DataFrame, observatory: str = "tess", series_number: int = 1
                  ) -> Lightcurve:
    """A Lightcurve object holding ``frame`` (not saved anywhere), as a reducer would make it.

    Examples
    --------
    >>> lc = as_lightcurve(sector_lightcurve(np.random.default_rng(1), days=2.0, gaps=()))
    >>> lc.filter, lc.exptime, lc.num_points
    ('TESS', 120.0, 1440)
    """
    band = frame["filter"].iloc[0] if "filter" in frame and len(frame) else None
    return Lightcurve(data=frame, observatory=observatory, filter=band,
                      series_number=series_number, series_total=series_number,
                      was_processed=True, is_simulated=False)
