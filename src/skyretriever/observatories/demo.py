"""VirtualDemoObs: deterministic synthetic photometry, for demos, tests and benchmarks.

The same source name and parameters always give the same data. A chosen
fraction of sources has no data; another fraction has one flare (fast rise,
exponential decay) in one of its series.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.observatories.base import (
    AB_ZEROPOINT_MICROJANSKY,
    ObservatoryParameters,
    VirtualObservatory,
    register_observatory,
)
from skyretriever.parameters import parameter

__all__ = ["DemoParameters", "VirtualDemoObs"]

BAD_EPOCH_BIT = 1
_FILTER_OFFSETS = {"g": 0.35, "r": 0.0, "i": -0.2, "B": 0.6, "V": 0.2, "R": 0.0}


class DemoParameters(ObservatoryParameters):
    """Parameters of the demo observatory's synthetic archive."""

    wait_time: float = parameter(
        0.0, "Seconds each download waits, imitating an archive's latency.", critical=False, ge=0
    )
    empty_fraction: float = parameter(
        0.1, "Fraction of sources for which the archive has no data.", ge=0, le=1
    )
    filters: list[str] = parameter(["g", "r"], "Filters observed.", min_length=1)
    num_seasons: int = parameter(2, "Observing seasons (one year apart).", ge=1)
    num_points: int = parameter(100, "Epochs per filter and season.", ge=1)
    season_length: float = parameter(90.0, "Length of one season (days).", gt=0)
    start_mjd: float = parameter(58000.0, "Start of the first season (MJD).")
    exptime: float = parameter(30.0, "Exposure time of every epoch (seconds).", gt=0)
    flare_fraction: float = parameter(0.2, "Fraction of sources with one flare.", ge=0, le=1)
    flare_amplitude: list[float] = parameter(
        [0.5, 2.5], "Range of flare peak amplitudes (magnitudes brighter).", min_length=2, max_length=2
    )
    flare_decay: list[float] = parameter(
        [1.0, 4.0], "Range of flare decay times (days).", min_length=2, max_length=2
    )
    bad_epoch_fraction: float = parameter(
        0.01, "Fraction of epochs with the bad-epoch quality bit (1).", ge=0, le=1
    )
    seed: int = parameter(0, "Random seed mixed with each source name.")


def _source_rng(name: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def magnitude_error(mag: np.ndarray | float) -> np.ndarray:
    """Photometric error of the demo archive as a function of magnitude."""
    return np.clip(0.005 + 0.002 * (np.asarray(mag, dtype=float) - 12.0) ** 2, 0.005, 0.5)


@register_observatory
class VirtualDemoObs(VirtualObservatory):
    """A synthetic archive: deterministic light curves with noise, bad epochs and flares.

    Examples
    --------
    >>> obs = VirtualDemoObs(empty_fraction=0, filters=["r"], num_seasons=1, num_points=20)
    >>> frame, altdata = obs.download_from_observatory({"name": "a", "ra": 1.0, "dec": 2.0})
    >>> len(frame), altdata["archive"]
    (20, 'demo')
    """

    name = "demo"
    Parameters = DemoParameters
    #: Every parameter of the simulated archive changes the data (wait_time only the pace).
    download_parameters = ("empty_fraction", "filters", "num_seasons", "num_points",
                           "season_length", "start_mjd", "exptime", "flare_fraction",
                           "flare_amplitude", "flare_decay", "bad_epoch_fraction", "seed")
    QUALITY_PRESETS = {"none": 0, "default": BAD_EPOCH_BIT, "hard": BAD_EPOCH_BIT,
                       "hardest": 0xFFFFFFFF}

    def fetch(self, cat_row: dict[str, Any]) -> dict[str, Any]:
        """The archive's answer time (on a download thread), and what the data is made from.

        Like a real archive's files, the table is made in a worker process
        (:meth:`parse`), not on the driver's download threads, and only the
        source's name and magnitude travel there.
        """
        if self.pars.wait_time:
            time.sleep(self.pars.wait_time)
        return {"name": str(cat_row["name"]), "mag": cat_row.get("mag")}

    def parse(self, fetched: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        """The source's synthetic table and provenance, from what :meth:`fetch` returned."""
        return self._synthesize(fetched)

    def download_from_observatory(self, cat_row: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        return self.parse(self.fetch(cat_row))

    def _synthesize(self, cat_row: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        pars = self.pars
        name = str(cat_row["name"])
        rng = _source_rng(name, pars.seed)
        altdata = {"archive": "demo", "seed": pars.seed}
        if rng.random() < pars.empty_fraction:
            return pd.DataFrame(), altdata
        base_mag = cat_row.get("mag")
        base_mag = 15.0 if base_mag is None or not np.isfinite(base_mag) else float(base_mag)
        has_flare = rng.random() < pars.flare_fraction
        n = pars.num_points
        times, mags, filters = [], [], []
        for season in range(pars.num_seasons):
            start = pars.start_mjd + 365.25 * season
            for band in pars.filters:
                times.append(np.sort(start + pars.season_length * rng.random(n)))
                mags.append(np.full(n, base_mag + _FILTER_OFFSETS.get(band, 0.0)))
                filters.append(np.full(n, band, dtype=object))
        mjd, mag, band = np.concatenate(times), np.concatenate(mags), np.concatenate(filters)
        if has_flare:
            series = rng.integers(len(times))
            peak_time = times[series][0] + (times[series][-1] - times[series][0]) * rng.uniform(0.1, 0.8)
            amplitude = rng.uniform(*pars.flare_amplitude)
            decay = rng.uniform(*pars.flare_decay)
            after = mjd >= peak_time
            in_series = band == band[series * n]
            dimming = np.zeros_like(mjd)
            dimming[after & in_series] = amplitude * np.exp(
                -(mjd[after & in_series] - peak_time) / decay
            )
            mag = mag - dimming
            altdata["flare"] = {"peak_mjd": float(peak_time), "amplitude": float(amplitude),
                                "decay_days": float(decay), "filter": str(band[series * n])}
        error = magnitude_error(mag)
        mag = mag + error * rng.standard_normal(len(mag))
        quality = np.where(rng.random(len(mag)) < pars.bad_epoch_fraction, BAD_EPOCH_BIT, 0)
        order = np.argsort(mjd, kind="stable")
        flux = 10 ** (-0.4 * (mag - AB_ZEROPOINT_MICROJANSKY))
        frame = pd.DataFrame(
            {
                "mjd": mjd[order],
                "mag": mag[order],
                "mag_err": error[order],
                "flux": flux[order],
                "flux_err": (flux * error * np.log(10) / 2.5)[order],
                "filter": band[order],
                "quality": quality[order].astype(np.int32),
                "exptime": np.full(len(mag), pars.exptime),
            }
        )
        return frame, altdata
