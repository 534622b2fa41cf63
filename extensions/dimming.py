"""DimmingFinder: slow dimming episodes, such as dipper stars' days-long fades.

An example of a Finder subclass with parameters of its own, listed in a
configuration as ``module:Class`` and configured under its name::

    analysis:
      finders: [peak, "extensions.dimming:DimmingFinder"]
      dimming: {bin_days: 2.0, min_depth: 0.05}

The good epochs of each light curve are averaged in bins of ``bin_days``;
a bin is dim when its mean is at least ``min_depth`` below the light curve's
median and its S/N (against the robust scatter of the epochs over the root of
the number in the bin) reaches ``snr_threshold``. Runs of dim bins are events.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from skyretriever.analysis import Finder, FinderParameters
from skyretriever.analysis.finder import good_epochs
from skyretriever.analysis.series import robust_std
from skyretriever.parameters import parameter

__all__ = ["DimmingFinder", "DimmingParameters"]


class DimmingParameters(FinderParameters):
    """Parameters of the dimming finder (and the common ones of every finder)."""

    bin_days: float = parameter(1.0, "Width of the time bins averaged (days).", gt=0)
    min_depth: float = parameter(0.05, "Fraction of the flux a bin must lose to be dim.", gt=0)


class DimmingFinder(Finder):
    """Days-long fades, found in the light curve averaged over bins of ``bin_days``.

    Examples
    --------
    >>> t = np.arange(0.0, 60.0, 0.1)
    >>> flux = 1 + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    >>> flux[(t > 20) & (t < 24)] *= 0.9                    # a four-day, 10% fade
    >>> frame = pd.DataFrame({"mjd": t, "flux": flux, "qflag": np.zeros(len(t), bool)})
    >>> events, _ = DimmingFinder(bin_days=2).find(frame)
    >>> [(round(d["time_start"], 1), round(d["time_end"], 1), d["sign"]) for d in events]
    [(20.0, 23.9, -1)]
    """

    name: ClassVar[str] = "dimming"
    Parameters = DimmingParameters

    def recovers(self, event_type: str) -> bool:
        return event_type == "dip"

    def find(self, frame: pd.DataFrame) -> tuple[list[dict[str, Any]], None]:
        """Dimming events in one light curve; this finder scores bins, not epochs."""
        good = good_epochs(frame)
        if good.sum() < self.pars.min_points:
            return [], None
        times = frame["mjd"].to_numpy(dtype=float)[good]
        flux = frame["flux"].to_numpy(dtype=float)[good]
        median = np.median(flux)
        scatter = robust_std(flux / median)
        if not (median > 0 and scatter > 0):
            return [], None
        index = np.floor((times - times.min()) / self.pars.bin_days).astype(np.int64)
        counts = np.bincount(index)
        means = np.bincount(index, flux / median) / np.maximum(counts, 1)
        depth = 1.0 - means
        snr = depth / (scatter / np.sqrt(np.maximum(counts, 1)))
        dim = (counts > 0) & (depth >= self.pars.min_depth) & (snr >= self.pars.snr_threshold)
        detections = []
        padded = np.r_[False, dim, False].astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        for first, last in zip(edges[::2], edges[1::2]):
            members = (index >= first) & (index < last)
            inside = np.flatnonzero(members)
            deepest = inside[np.argmin(flux[inside])]
            best = float(snr[first:last].max())
            detections.append({
                "finder": self.name,
                "snr": best,
                "score": best,
                "sign": -1,
                "time_start": float(times[inside].min()),
                "time_end": float(times[inside].max()),
                "time_peak": float(times[deepest]),
                "peak_flux": float(flux[deepest]),
                "num_points": int(members.sum()),
                "depth": float(depth[first:last].max()),
            })
        return detections, None
