"""Finder: excursions (flares, and dips if asked) by robust signal-to-noise.

Each light curve's good epochs are normalised by their median flux; the
scatter is 1.4826 times the median absolute deviation, so a few large events
do not inflate it. An event is a run of consecutive good epochs beyond the
threshold; it is reported with its time window, its peak and its S/N.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from skyretriever.parameters import Parameters, parameter

__all__ = ["Finder", "FinderParameters", "robust_snr"]

MAD_TO_SIGMA = 1.4826


class FinderParameters(Parameters):
    """Parameters of the peak finder."""

    snr_threshold: float = parameter(5.0, "Robust S/N an epoch must reach to be part of an event.", gt=0)
    find_dips: bool = parameter(False, "Also report dimming events (negative S/N).")
    min_event_points: int = parameter(1, "Fewest consecutive epochs beyond threshold in an event.", ge=1)
    min_points: int = parameter(10, "Fewest good epochs a light curve needs to be searched.", ge=3)


def robust_snr(flux: np.ndarray, good: np.ndarray, flux_err: np.ndarray | None = None
               ) -> tuple[np.ndarray, float]:
    """Robust S/N of each epoch and the robust scatter of the normalised flux.

    Epochs that are not ``good`` get NaN. Where the scatter is zero (constant
    data), the median relative error is used instead.

    Examples
    --------
    >>> flux = np.array([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 2.0])
    >>> snr, scatter = robust_snr(flux, np.ones(7, bool))
    >>> int(np.argmax(snr)), round(float(scatter), 4)
    (6, 0.0148)
    """
    snr = np.full(len(flux), np.nan)
    values = flux[good]
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return snr, float("nan")
    median = np.median(values)
    if not np.isfinite(median) or median == 0:
        return snr, float("nan")
    normalised = flux / median
    scatter = MAD_TO_SIGMA * np.median(np.abs(normalised[good & np.isfinite(normalised)] - 1.0))
    if not scatter > 0 and flux_err is not None:
        relative = flux_err[good] / np.abs(median)
        relative = relative[np.isfinite(relative) & (relative > 0)]
        scatter = float(np.median(relative)) if len(relative) else float("nan")
    if not scatter > 0:
        return snr, float("nan")
    snr[good] = (normalised[good] - 1.0) / scatter
    return snr, float(scatter)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True in ``mask``."""
    if not mask.any():
        return []
    padded = np.r_[False, mask, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


class Finder:
    """Single- and multi-epoch excursions by robust S/N.

    Examples
    --------
    >>> frame = pd.DataFrame({"mjd": np.arange(20.0), "flux": np.r_[np.ones(10), 3.0, 2.0, np.ones(8)],
    ...                       "qflag": np.zeros(20, bool)})
    >>> frame.loc[::2, "flux"] += 0.01
    >>> detections, snr = Finder(snr_threshold=5).find(frame)
    >>> [(d["time_start"], d["time_end"], d["num_points"]) for d in detections]
    [(10.0, 11.0, 2)]
    """

    name: ClassVar[str] = "peak"
    Parameters = FinderParameters

    def __init__(self, pars: FinderParameters | None = None, **kwargs: Any) -> None:
        self.pars = pars if pars is not None else self.Parameters.build(
            kwargs, where=f"analysis.{self.name}"
        )

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """The score of every epoch (robust S/N; NaN where not searched)."""
        good = ~frame["qflag"].to_numpy(dtype=bool) if "qflag" in frame else np.ones(len(frame), bool)
        flux = frame["flux"].to_numpy(dtype=float)
        flux_err = frame["flux_err"].to_numpy(dtype=float) if "flux_err" in frame else None
        good &= np.isfinite(flux)
        if good.sum() < self.pars.min_points:
            return np.full(len(frame), np.nan)
        snr, _ = robust_snr(flux, good, flux_err)
        return snr

    def find(self, frame: pd.DataFrame) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Events in one light curve (dictionaries of Detection columns) and the epoch scores."""
        snr = self.scores(frame)
        searched = np.isfinite(snr)
        if not searched.any():
            return [], snr
        order = np.argsort(frame["mjd"].to_numpy(dtype=float), kind="stable")
        order = order[searched[order]]
        signs = (1, -1) if self.pars.find_dips else (1,)
        detections = []
        times = frame["mjd"].to_numpy(dtype=float)
        mags = frame["mag"].to_numpy(dtype=float) if "mag" in frame else None
        fluxes = frame["flux"].to_numpy(dtype=float)
        for sign in signs:
            beyond = sign * snr[order] >= self.pars.snr_threshold
            for start, stop in _runs(beyond):
                if stop - start < self.pars.min_event_points:
                    continue
                members = order[start:stop]
                peak = members[np.argmax(sign * snr[members])]
                detections.append({
                    "finder": self.name,
                    "snr": float(abs(snr[peak])),
                    "score": float(abs(snr[peak])),
                    "sign": sign,
                    "time_start": float(times[members[0]]),
                    "time_end": float(times[members[-1]]),
                    "time_peak": float(times[peak]),
                    "peak_mag": float(mags[peak]) if mags is not None else None,
                    "peak_flux": float(fluxes[peak]),
                    "num_points": int(stop - start),
                })
        return detections, snr
