"""Finder: excursions (flares, and dips if asked) by robust signal-to-noise.

Every finder has the same entry point, :meth:`Finder.find_source`, which gets
the quality-checked tables of one source's light curves and returns a
:class:`FinderResult`: detections (dictionaries of Detection columns, each
naming the light curve it came from), the score of every epoch where the
finder scores epochs, and values for the source's Properties row. The peak
finder searches each light curve on its own (:meth:`Finder.find`); a finder
that works on several light curves at once (the transit search) overrides
:meth:`Finder.find_source`.

The peak finder divides each light curve by its median (or by a robust
running mean, ``detrend_window``); the scatter is 1.4826 times the median absolute
deviation, so a few large events do not inflate it. An event is a run of
epochs beyond ``window_snr`` holding at least ``min_event_points`` epochs
beyond ``snr_threshold`` (single-epoch events); averages over
``multi_epoch_sizes`` consecutive epochs find longer, fainter events, each
average measured against the scatter of all averages of that size, so
correlated noise does not pass for events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from skyretriever.analysis.series import MAD_TO_SIGMA, detrend, median, robust_std
from skyretriever.parameters import Parameters, parameter

__all__ = [
    "MAD_TO_SIGMA",
    "Finder",
    "FinderParameters",
    "FinderResult",
    "PeakFinderParameters",
    "good_epochs",
    "robust_snr",
]


class FinderParameters(Parameters):
    """Parameters every finder has (the analysis' ``finder`` section sets them for all finders)."""

    snr_threshold: float = parameter(5.0, "S/N an event must reach to be reported.", gt=0)
    min_points: int = parameter(10, "Fewest good epochs a light curve needs to be searched.", ge=3)


class PeakFinderParameters(FinderParameters):
    """Parameters of the peak finder (single- and multi-epoch excursions)."""

    snr_threshold: float = parameter(
        5.5, "Robust S/N an event must reach (5.5 keeps false events to a few in a thousand "
        "light curves of a TESS sector's 19,000 epochs; 5.0 lets through over 1%).", gt=0,
    )

    find_dips: bool = parameter(False, "Also report dimming events (negative S/N).")
    min_event_points: int = parameter(
        1, "Fewest epochs beyond snr_threshold in a single-epoch event.", ge=1
    )
    window_snr: float = parameter(
        2.0, "An event's time window spans the neighbouring epochs down to this S/N.", ge=0
    )
    multi_epoch_sizes: list[int] = parameter(
        [4, 16],
        "Numbers of consecutive epochs averaged to find events too faint for one epoch "
        "(empty: single epochs only).",
    )
    detrend_window: float | None = parameter(
        None,
        "Divide each segment by a robust running mean this wide (days) before the search; "
        "None divides the light curve by its median only.",
        gt=0,
    )
    segment_gap: float = parameter(
        0.5, "Gaps longer than this (days) start a new segment for detrending.", gt=0
    )


@dataclass
class FinderResult:
    """What one finder found in one source.

    ``detections`` are dictionaries of Detection columns; each has
    ``lightcurve_index``: the position of its light curve in the list searched,
    or a list of positions for an event found in several light curves at once.
    ``scores`` holds each light curve's epoch scores (``None`` where the finder
    does not score epochs); ``properties`` holds values for the Properties row.
    ``searched`` holds what a periodic search ran on (the transit finder's
    :class:`~skyretriever.analysis.transit.StitchedSearch`, one per filter), so
    that the classifier scores its candidates without detrending again.
    """

    detections: list[dict[str, Any]] = field(default_factory=list)
    scores: list[np.ndarray | None] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    searched: list[Any] = field(default_factory=list)


def good_epochs(frame: pd.DataFrame) -> np.ndarray:
    """Epochs not flagged by the quality checks and with a finite time and flux."""
    good = ~frame["qflag"].to_numpy(dtype=bool) if "qflag" in frame else np.ones(len(frame), bool)
    good &= np.isfinite(frame["mjd"].to_numpy(dtype=float))
    return good & np.isfinite(frame["flux"].to_numpy(dtype=float))


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
    middle = median(values)
    if not np.isfinite(middle) or middle == 0:
        return snr, float("nan")
    normalised = flux / middle
    scatter = robust_std(normalised[good])
    if not scatter > 0 and flux_err is not None:
        relative = flux_err[good] / np.abs(middle)
        relative = relative[np.isfinite(relative) & (relative > 0)]
        scatter = median(relative)
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
    """Single- and multi-epoch excursions by robust S/N; also the base of every finder.

    A subclass sets ``name`` (its section in ``analysis``) and ``Parameters``,
    and overrides :meth:`find` (one light curve at a time) or
    :meth:`find_source` (all of a source's light curves at once).

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
    Parameters: ClassVar[type[FinderParameters]] = PeakFinderParameters

    def __init__(self, pars: FinderParameters | None = None, **kwargs: Any) -> None:
        if pars is None:
            pars = self.Parameters.build(kwargs, where=f"analysis.{self.name}")
        elif kwargs:
            pars = self.Parameters.build(pars.model_dump(), kwargs, where=f"analysis.{self.name}")
        self.pars = pars

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def recovers(self, event_type: str) -> bool:
        """True when this finder can recover injected events of ``event_type``.

        The analysis uses it to refuse injections no configured finder can find;
        a subclass with other events overrides it.
        """
        dips = getattr(self.pars, "find_dips", False)  # subclasses may not have the parameter
        return event_type == "flare" or (event_type == "dip" and dips)

    # -- one source ------------------------------------------------------------------------
    def find_source(self, frames: Sequence[pd.DataFrame]) -> FinderResult:
        """Search every light-curve table of one source; here, each on its own with :meth:`find`.

        Parameters
        ----------
        frames
            Quality-checked light-curve tables (standard columns); not modified.

        Returns
        -------
        FinderResult
            Detections (with ``lightcurve_index``), the epoch scores of each table
            and values for the Properties row.
        """
        result = FinderResult()
        for index, frame in enumerate(frames):
            found, scores = self.find(frame)
            for detection in found:
                detection["lightcurve_index"] = index
            result.detections += found
            result.scores.append(scores)
        return result

    # -- one light curve -------------------------------------------------------------------
    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """The score of every epoch (robust S/N; NaN where not searched)."""
        good = good_epochs(frame)
        if good.sum() < self.pars.min_points:
            return np.full(len(frame), np.nan)
        flux = frame["flux"].to_numpy(dtype=float)
        flux_err = frame["flux_err"].to_numpy(dtype=float) if "flux_err" in frame else None
        if self.pars.detrend_window is not None:
            flux, flux_err = self._detrended(frame, good, flux, flux_err)
        snr, _ = robust_snr(flux, good, flux_err)
        return snr

    def _detrended(self, frame: pd.DataFrame, good: np.ndarray, flux: np.ndarray,
                   flux_err: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Flux (and errors) divided by a robust running mean of each segment; NaN off ``good``."""
        times = frame["mjd"].to_numpy(dtype=float)
        index = np.flatnonzero(good)
        index = index[np.argsort(times[index], kind="stable")]
        relative = np.full(len(flux), np.nan)
        relative[index] = detrend(times[index], flux[index], "window", self.pars.detrend_window,
                                  self.pars.segment_gap)
        if flux_err is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                flux_err = flux_err * relative / flux
        return relative, flux_err

    def find(self, frame: pd.DataFrame) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Events in one light curve (dictionaries of Detection columns) and the epoch scores."""
        snr = self.scores(frame)
        searched = np.isfinite(snr)
        if not searched.any():
            return [], snr
        times = frame["mjd"].to_numpy(dtype=float)
        order = np.argsort(times, kind="stable")
        order = order[searched[order]]
        signs = (1, -1) if self.pars.find_dips else (1,)
        detections = []
        for sign in signs:
            values = sign * snr[order]
            events = self._single_epoch_events(values)
            taken = np.zeros(len(values), dtype=bool)
            for start, stop, _ in events:
                taken[start:stop] = True
            events += self._multi_epoch_events(values, taken)
            for start, stop, score in events:
                members = order[start:stop]
                peak = members[np.argmax(sign * snr[members])]
                detections.append(self._detection(frame, members, peak, sign, score))
        detections.sort(key=lambda d: d["time_start"])
        return detections, snr

    def _single_epoch_events(self, values: np.ndarray) -> list[tuple[int, int, float]]:
        """Runs of epochs above ``window_snr`` holding enough epochs above the threshold."""
        pars = self.pars
        events = []
        above = values >= pars.snr_threshold
        for start, stop in _runs(values >= min(pars.window_snr, pars.snr_threshold)):
            if above[start:stop].sum() >= pars.min_event_points:
                events.append((int(start), int(stop), float(values[start:stop].max())))
        return events

    def _multi_epoch_events(self, values: np.ndarray, taken: np.ndarray
                            ) -> list[tuple[int, int, float]]:
        """Windows of consecutive epochs whose mean S/N stands out among all such means.

        Windows touching a single-epoch event (``taken``) are left to that event;
        overlapping windows that pass merge into one event scored by its best window.
        """
        threshold = self.pars.snr_threshold
        best = np.zeros(len(values))
        for size in self.pars.multi_epoch_sizes:
            if size < 2 or len(values) < 5 * size:
                continue
            means = np.convolve(values, np.ones(size) / size, mode="valid")
            scatter = robust_std(means)
            if not scatter > 0:
                continue
            significance = (means - median(means)) / scatter
            touched = np.convolve(taken, np.ones(size), mode="valid") > 0
            for start in np.flatnonzero((significance >= threshold) & ~touched):
                window = slice(start, start + size)
                best[window] = np.maximum(best[window], significance[start])
        return [(int(start), int(stop), float(best[start:stop].max()))
                for start, stop in _runs(best > 0)]

    def _detection(self, frame: pd.DataFrame, members: np.ndarray, peak: int, sign: int,
                   score: float) -> dict[str, Any]:
        times = frame["mjd"].to_numpy(dtype=float)
        mag = float(frame["mag"].iloc[peak]) if "mag" in frame else None
        return {
            "finder": self.name,
            "snr": score,
            "score": score,
            "sign": sign,
            "time_start": float(times[members].min()),
            "time_end": float(times[members].max()),
            "time_peak": float(times[peak]),
            "peak_mag": mag,
            "peak_flux": float(frame["flux"].iloc[peak]),
            "num_points": int(len(members)),
        }
