"""TransitFinder: periodic box-shaped dips by box least squares, on stitched light curves.

The light curves of one source that share a filter (the sectors of TESS, the
quarters of Kepler) are searched together. Each segment (stretch between gaps
longer than ``segment_gap``) is divided by its own trend first, a robust
running mean or a robust spline (``detrend``), so sectors with different flux
levels stitch cleanly; points far above the trend (flares) are left out.

The search (:meth:`TransitFinder.search`) runs
:class:`astropy.timeseries.BoxLeastSquares` on data binned to ``bin_minutes``
over a period grid made for the data:

- periods from ``min_period`` to the span over ``min_transits - 1``, spaced
  evenly in log period so that over the whole span the phase drifts by at
  most ``1 / oversample`` of the shortest duration between trial periods (a
  grid uniform in frequency would waste most of its trials on long periods;
  the best peak is searched again on a grid ten times finer);
- durations from ``min_duration`` to ``max_duration`` in steps of
  ``duration_ratio``, each only where it is at most ``max_duty_cycle`` of the
  period (an eight-hour transit of a half-day orbit is not a planet);
- a grid that would cost more than ``max_evaluations`` (long spans) is made
  coarser to fit; light curves sampled more sparsely than ``max_cadence``
  are not searched.

The ``num_candidates`` highest peaks are then measured on the unbinned data:
depth, number of transits with data, and an S/N whose error allows for
correlated noise on the transit's time scale (the scatter of the data binned
to the duration, after Pont, Zucker & Queloz 2006). The best is refined on a
finer grid around its period, and reported with its signal detection
efficiency (SDE: how far its peak stands above the periodogram's mean, in
standard deviations, once the periodogram's slowly changing floor is taken
off). A single deep event gives a high S/N at many periods but no peak that
stands out, so the SDE threshold turns it away. A candidate is a detection when its S/N, SDE and number
of transits pass the thresholds; the best candidate of the source goes to the
Properties row whether it passes or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from skyretriever.analysis.finder import Finder, FinderParameters, FinderResult, good_epochs
from skyretriever.analysis.series import (
    bin_series,
    binned_scatter,
    detrend,
    point_to_point_scatter,
    robust_std,
)
from skyretriever.parameters import parameter

__all__ = [
    "StitchedSearch",
    "TransitCandidate",
    "TransitFinder",
    "TransitFinderParameters",
    "duration_grid",
    "period_grid",
]

HOURS = 1.0 / 24.0
#: Parts of the period range searched with their own set of durations.
_PERIOD_CHUNKS = 4


class TransitFinderParameters(FinderParameters):
    """Parameters of the transit search (box least squares over stitched light curves)."""

    snr_threshold: float = parameter(
        7.0, "Transit S/N (depth over its correlated-noise error) a detection must reach.", gt=0
    )
    min_points: int = parameter(100, "Fewest good epochs a source needs to be searched.", ge=3)
    sde_threshold: float = parameter(
        6.0, "Signal detection efficiency (peak height in periodogram standard deviations) "
        "a detection must reach.", ge=0,
    )
    min_transits: int = parameter(
        3, "Fewest transits with data in a detection; the longest period searched is "
        "the span over (min_transits - 1).", ge=2,
    )
    max_cadence: float = parameter(
        60.0, "Leave out light curves sampled more sparsely than this (median minutes between "
        "epochs): a transit needs several points to be seen.", gt=0,
    )
    min_period: float = parameter(0.3, "Shortest period searched (days).", gt=0)
    max_period: float = parameter(30.0, "Longest period searched (days), if the span allows.", gt=0)
    min_duration: float = parameter(1.0, "Shortest transit duration tried (hours).", gt=0)
    max_duration: float = parameter(8.0, "Longest transit duration tried (hours).", gt=0)
    duration_ratio: float = parameter(
        1.35, "Ratio of successive trial durations (S/N lost to a mismatch is at most ~8%).", gt=1
    )
    max_duty_cycle: float = parameter(
        0.15, "Longest duration tried at a period, as a fraction of the period.", gt=0, le=0.5
    )
    oversample: int = parameter(
        2, "Trial periods per shortest duration of phase drift over the span (the refinement "
        "around the best peaks makes up for a coarse grid: 3 costs a third more and "
        "recovered no more transits in 400 trials).", ge=1,
    )
    phase_oversample: int = parameter(5, "Trial phases per shortest duration.", ge=1)
    max_evaluations: float = parameter(
        2e8, "Most box evaluations (periods x phases x durations, plus points x periods) in "
        "one search, about 2 s on one core; beyond it the period grid is made coarser.", gt=0,
    )
    num_candidates: int = parameter(
        5, "Highest periodogram peaks measured before the best is chosen.", ge=1
    )
    detrend: Literal["window", "spline", "none"] = parameter(
        "window", "Trend removed from each segment: robust running mean (window), robust "
        "spline, or none (median only).",
    )
    detrend_window: float = parameter(
        1.0, "Width of the running mean, or spacing of the spline knots (days); keep it "
        "at least three times the longest duration.", gt=0,
    )
    segment_gap: float = parameter(
        0.5, "Gaps longer than this (days) start a new segment, detrended on its own.", gt=0
    )
    bin_minutes: float = parameter(
        10.0, "Bin the data to this time step for the period search (0: every point).", ge=0
    )
    clip_sigma: float = parameter(
        4.0, "Leave out points this many robust standard deviations above the trend (flares).",
        gt=0,
    )


def _running_median(values: np.ndarray, size: int) -> np.ndarray:
    """Running median over ``size`` neighbours (the periodogram's slowly changing floor)."""
    from scipy.ndimage import median_filter

    return median_filter(values, size=max(3, size | 1), mode="nearest")


def period_grid(span: float, min_period: float, max_period: float, min_duration: float,
                oversample: float = 2) -> np.ndarray:
    """Trial periods, evenly spaced in log period for a phase drift of ``min_duration / oversample``.

    Between neighbouring trial periods a transit drifts over the whole ``span``
    by at most ``min_duration / oversample``; in log period that is a constant
    step of ``min_duration / (oversample * span)``.

    Examples
    --------
    >>> grid = period_grid(span=27.0, min_period=0.5, max_period=13.5, min_duration=1 / 24)
    >>> len(grid), round(float(grid[0]), 3), round(float(grid[-1]), 3)
    (4273, 0.5, 13.5)
    >>> drift = 27.0 * np.diff(np.log(grid)).max()      # days over the span
    >>> bool(drift <= 1 / 24 / 2 * 1.0001)
    True
    """
    if not max_period > min_period:
        return np.array([], dtype=float)
    step = min_duration / (oversample * span)
    count = int(np.ceil(np.log(max_period / min_period) / step)) + 1
    return np.exp(np.linspace(np.log(min_period), np.log(max_period), max(count, 2)))


def duration_grid(min_duration: float, max_duration: float, ratio: float) -> np.ndarray:
    """Trial durations from ``min_duration`` to ``max_duration``, successive ones ``ratio`` apart at most.

    Examples
    --------
    >>> duration_grid(1.0, 8.0, 1.35).round(2).tolist()
    [1.0, 1.35, 1.81, 2.44, 3.28, 4.42, 5.94, 8.0]
    """
    if max_duration <= min_duration:
        return np.array([min_duration], dtype=float)
    count = int(np.ceil(np.log(max_duration / min_duration) / np.log(ratio))) + 1
    return np.geomspace(min_duration, max_duration, count)


@dataclass
class TransitCandidate:
    """A periodic dip measured on the data: what a transit detection reports."""

    period: float
    epoch: float
    duration: float
    depth: float
    depth_err: float
    snr: float
    snr_white: float
    sde: float
    num_transits: int
    num_points: int
    time_start: float
    time_end: float

    @property
    def duty_cycle(self) -> float:
        """The duration as a fraction of the period."""
        return self.duration / self.period

    def passes(self, pars: TransitFinderParameters) -> bool:
        """True when the candidate's S/N, SDE and number of transits reach the thresholds."""
        return (self.snr >= pars.snr_threshold and self.sde >= pars.sde_threshold
                and self.num_transits >= pars.min_transits)

    def properties(self) -> dict[str, Any]:
        """Values for the ``transit_*`` columns of Properties."""
        return {
            "transit_period": self.period,
            "transit_epoch": self.epoch,
            "transit_duration": self.duration,
            "transit_depth": self.depth,
            "transit_snr": self.snr,
            "transit_sde": self.sde,
        }


@dataclass
class StitchedSearch:
    """The stitched, detrended light curve of one filter and the best candidate found in it.

    ``indices`` are the positions of its light curves in the list searched;
    ``times`` and ``flux`` the good epochs, sorted, flux relative to the trend;
    ``candidate`` is ``None`` when the search found nothing to measure.
    """

    indices: list[int]
    band: str
    times: np.ndarray
    flux: np.ndarray
    candidate: TransitCandidate | None


@dataclass
class _Series:
    """One source's stitched, detrended light curve of one filter (good points, sorted)."""

    times: np.ndarray
    flux: np.ndarray
    errors: np.ndarray
    cadence: float

    @property
    def span(self) -> float:
        return float(self.times[-1] - self.times[0])


class TransitFinder(Finder):
    """Box least squares transit search on a source's stitched, detrended light curves.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> t = np.arange(0.0, 27.0, 2 / 1440)                      # one sector, 2-min cadence
    >>> flux = 1 + 1e-3 * rng.standard_normal(len(t))
    >>> flux[np.abs((t - 1.3 + 1.55) % 3.1 - 1.55) < 0.05] -= 1e-3    # P = 3.1 d, 2.4 h
    >>> candidate = TransitFinder().search(t, flux)
    >>> round(candidate.period, 3), round(candidate.epoch, 2), candidate.num_transits
    (3.1, 1.3, 9)
    >>> bool(candidate.snr > 20 and candidate.passes(TransitFinder().pars))
    True
    """

    name: ClassVar[str] = "transit"
    Parameters = TransitFinderParameters

    def recovers(self, event_type: str) -> bool:
        return event_type == "transit"

    # -- the finder interface --------------------------------------------------------------
    def find_source(self, frames: Sequence[pd.DataFrame]) -> FinderResult:
        """Search the light curves of each filter stitched together.

        Detections name every light curve of their filter in ``lightcurve_index``
        (a list when there are several); ``properties`` holds the best candidate
        of all filters, whether or not it passed the thresholds.
        """
        result = FinderResult(scores=[None] * len(frames))
        groups: dict[str, list[int]] = {}
        for index, frame in enumerate(frames):
            band = str(frame["filter"].iloc[0]) if "filter" in frame and len(frame) else ""
            groups.setdefault(band, []).append(index)
        best: TransitCandidate | None = None
        for indices in groups.values():
            series = self._stitch([frames[i] for i in indices])
            candidate = self._search_series(series) if series is not None else None
            if series is not None:
                result.searched.append(StitchedSearch(list(indices), band, series.times,
                                                      series.flux, candidate))
            if candidate is None:
                continue
            if best is None or candidate.snr > best.snr:
                best = candidate
            if candidate.passes(self.pars):
                detection = self._detection(candidate)
                detection["lightcurve_index"] = indices[0] if len(indices) == 1 else list(indices)
                result.detections.append(detection)
        if best is not None:
            result.properties = best.properties()
        return result

    def find(self, frame: pd.DataFrame) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Transit detections in one light curve (no epoch scores: all NaN)."""
        detections = self.find_source([frame]).detections
        for detection in detections:
            detection.pop("lightcurve_index", None)
        return detections, np.full(len(frame), np.nan)

    def search(self, times: np.ndarray, flux: np.ndarray, flux_err: np.ndarray | None = None
               ) -> TransitCandidate | None:
        """The best transit candidate in one light curve given as arrays, passing or not.

        ``times`` in days; ``flux`` in any unit (each segment is detrended);
        ``None`` when there is too little data to search.
        """
        flux_err = np.full(len(flux), np.nan) if flux_err is None else flux_err
        frame = pd.DataFrame({"mjd": times, "flux": flux, "flux_err": flux_err})
        series = self._stitch([frame])
        return self._search_series(series) if series is not None else None

    # -- preparing the data ----------------------------------------------------------------
    def _stitch(self, frames: Sequence[pd.DataFrame]) -> _Series | None:
        """Good epochs of the tables, each detrended, flares clipped, sorted by time."""
        pars = self.pars
        pieces = []
        for frame in frames:
            good = good_epochs(frame) & (frame["flux"].to_numpy(dtype=float) > 0)
            t = frame["mjd"].to_numpy(dtype=float)[good]
            f = frame["flux"].to_numpy(dtype=float)[good]
            e = (frame["flux_err"].to_numpy(dtype=float)[good] if "flux_err" in frame
                 else np.full(len(f), np.nan))
            order = np.argsort(t, kind="stable")
            t, f, e = t[order], f[order], e[order]
            if len(t) < 3 or np.median(np.diff(t)) * 1440 > pars.max_cadence:
                continue
            relative = detrend(t, f, pars.detrend, pars.detrend_window, pars.segment_gap)
            pieces.append((t, relative, e * relative / f))
        if not pieces:
            return None
        t, flux, e = (np.concatenate(arrays) for arrays in zip(*pieces))
        order = np.argsort(t, kind="stable")
        t, flux, e = t[order], flux[order], e[order]
        scatter = robust_std(flux)
        if np.isfinite(scatter) and scatter > 0:
            keep = flux < np.median(flux) + pars.clip_sigma * scatter
            t, flux, e = t[keep], flux[keep], e[keep]
        if len(t) < pars.min_points:
            return None
        white = point_to_point_scatter(flux)
        usable = np.isfinite(e) & (e > 0)
        if not usable.all():
            e = np.where(usable, e, white if white > 0 else 1.0)
        cadence = float(np.median(np.diff(t))) if len(t) > 1 else float("nan")
        if not (cadence > 0 and t[-1] > t[0]):
            return None
        return _Series(t, flux, e, cadence)

    # -- searching -------------------------------------------------------------------------
    def _search_series(self, series: _Series) -> TransitCandidate | None:
        from astropy.timeseries import BoxLeastSquares

        pars = self.pars
        times, flux, errors = series.times, series.flux, series.errors
        width = pars.bin_minutes / 1440.0
        if width > 1.5 * series.cadence:
            times, flux, errors = bin_series(times, flux, errors, width)
        plan = self._plan(series.span, len(times))
        if not plan:
            return None
        periods = np.concatenate([chunk for chunk, _ in plan])
        model = BoxLeastSquares(times, flux, errors)
        power, epochs, durations = (np.full(len(periods), np.nan) for _ in range(3))
        first = 0
        for chunk, allowed in plan:
            found = model.power(chunk, allowed, oversample=pars.phase_oversample)
            where = slice(first, first + len(chunk))
            power[where], epochs[where], durations[where] = (
                found.power, found.transit_time, found.duration)
            first += len(chunk)
        searched = np.isfinite(power)
        if not searched.any():
            return None
        # sqrt(2 * log likelihood) is the white-noise S/N of each period's best box
        strength = np.sqrt(2.0 * np.clip(power, 0, None))
        strength[searched] -= _running_median(strength[searched], len(periods) // 50)
        mean, spread = np.mean(strength[searched]), np.std(strength[searched])
        best: TransitCandidate | None = None
        for index in self._peaks(periods, strength):
            candidate = self._measure(series, periods[index], epochs[index], durations[index])
            if candidate is not None and (best is None or candidate.snr > best.snr):
                best, best_index = candidate, index
        if best is None:
            return None
        log_step = float(np.log(periods[1] / periods[0])) if len(periods) > 1 else 1e-3
        best = self._refine(series, best, log_step) or best
        # At short periods the duty-cycle limit can leave the true duration out of the
        # coarse search, and twice the period (every other transit, a full box) then
        # scores higher; a transit truly at half the period measures better there. The
        # signal's significance (SDE) stays that of the periodogram peak that found it.
        if best.period / 2 >= pars.min_period:
            half = self._refine(series, replace(best, period=best.period / 2), log_step)
            if half is not None and half.snr > best.snr:
                best = half
        best.sde = float((strength[best_index] - mean) / spread) if spread > 0 else 0.0
        return best

    def _plan(self, span: float, num_points: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The period grid in parts, each with the durations tried there.

        The cost of a search is about ``num_points`` per period plus, per
        period and duration, one box per phase step; when the grid would cost
        more than ``max_evaluations`` it is made coarser to fit.
        """
        pars = self.pars
        max_period = min(pars.max_period, span / (pars.min_transits - 1))
        durations = duration_grid(pars.min_duration, pars.max_duration, pars.duration_ratio) * HOURS
        oversample = float(pars.oversample)
        for _ in range(2):
            periods = period_grid(span, pars.min_period, max_period, durations[0], oversample)
            if len(periods) == 0:
                return []
            plan, cost = [], 0.0
            for chunk in np.array_split(periods, min(_PERIOD_CHUNKS, len(periods))):
                allowed = durations[durations <= max(pars.max_duty_cycle * chunk[0], durations[0])]
                allowed = allowed[allowed < chunk[0]]
                if len(allowed) == 0:
                    continue
                plan.append((chunk, allowed))
                phase_step = allowed[0] / pars.phase_oversample
                cost += len(chunk) * num_points + len(allowed) * float(np.sum(chunk)) / phase_step
            if cost <= pars.max_evaluations:
                break
            oversample *= pars.max_evaluations / cost
        return plan

    def _peaks(self, periods: np.ndarray, strength: np.ndarray) -> list[int]:
        """Indices of the highest periodogram peaks, no two within 1% in period."""
        order = np.argsort(np.where(np.isfinite(strength), strength, -np.inf))[::-1]
        chosen: list[int] = []
        for index in order:
            if not np.isfinite(strength[index]):
                break
            if all(abs(periods[index] / periods[other] - 1) > 0.01 for other in chosen):
                chosen.append(int(index))
                if len(chosen) == self.pars.num_candidates:
                    break
        return chosen

    def _refine(self, series: _Series, candidate: TransitCandidate, log_step: float
                ) -> TransitCandidate | None:
        """Search again on the unbinned data, close around the candidate and more finely."""
        from astropy.timeseries import BoxLeastSquares

        # A coarse peak can sit several steps off the true period, where a box of another
        # duration still covers most of every transit; a fine search over +-10 steps and
        # durations two coarse steps either side finds the true one. The durations keep the
        # coarse search's limit (``max_duty_cycle``): beyond it a spotted star's smooth
        # modulation fits a box of most of the orbit (7.9 h at 0.43 d, 76% of it).
        periods = candidate.period * np.exp(log_step * np.linspace(-10.0, 10.0, 201))
        longest = max(self.pars.max_duty_cycle * periods[0], self.pars.min_duration * HOURS)
        durations = min(candidate.duration, longest) * np.geomspace(
            self.pars.duration_ratio ** -2, self.pars.duration_ratio ** 2, 13)
        durations = durations[(durations <= longest) & (durations < periods[0])]
        if len(durations) == 0:
            return None
        found = BoxLeastSquares(series.times, series.flux, series.errors).power(
            periods, durations, oversample=4 * self.pars.phase_oversample
        )
        index = int(np.argmax(found.power))
        return self._measure(series, float(found.period[index]),
                             float(found.transit_time[index]), float(found.duration[index]))

    def _measure(self, series: _Series, period: float, epoch: float, duration: float
                 ) -> TransitCandidate | None:
        """Depth, transits with data and S/N of a box at (period, epoch, duration).

        The depth error of each transit is the white scatter over the square
        root of its points plus the correlated scatter on the duration's time
        scale (the scatter of out-of-transit data binned to the duration, less
        its white part); the transits combine as independent measurements.
        """
        times, flux, errors = series.times, series.flux, series.errors
        phase = (times - epoch + 0.5 * period) % period - 0.5 * period
        inside = np.abs(phase) < 0.5 * duration
        if inside.sum() < 3 or (~inside).sum() < 10:
            return None
        weights = 1.0 / errors**2
        level_out = np.average(flux[~inside], weights=weights[~inside])
        level_in = np.average(flux[inside], weights=weights[inside])
        depth = float(level_out - level_in)
        number = np.round((times[inside] - epoch) / period).astype(np.int64)
        transits, per_transit = np.unique(number, return_counts=True)
        expected = duration / series.cadence
        with_data = per_transit >= max(1.0, 0.5 * expected)
        white = robust_std(flux[~inside])
        if not white > 0:
            return None
        binned, per_bin = binned_scatter(times[~inside], flux[~inside], duration)
        red_variance = 0.0
        if np.isfinite(binned) and per_bin > 0:
            red_variance = max(0.0, binned**2 - white**2 / per_bin)
        variance = white**2 / per_transit + red_variance
        depth_err = float(1.0 / np.sqrt(np.sum(1.0 / variance)))
        first = epoch + period * np.ceil((times[0] - 0.5 * duration - epoch) / period)
        last = epoch + period * np.floor((times[-1] + 0.5 * duration - epoch) / period)
        return TransitCandidate(
            period=float(period),
            epoch=float(first),
            duration=float(duration),
            depth=depth,
            depth_err=depth_err,
            snr=depth / depth_err,
            snr_white=float(depth / white * np.sqrt(inside.sum())),
            sde=0.0,
            num_transits=int(with_data.sum()),
            num_points=int(inside.sum()),
            time_start=float(first - 0.5 * duration),
            time_end=float(last + 0.5 * duration),
        )

    def _detection(self, candidate: TransitCandidate) -> dict[str, Any]:
        values = asdict(candidate)
        return {
            "finder": self.name,
            "snr": candidate.snr,
            "score": candidate.snr,
            "sign": -1,
            "time_start": candidate.time_start,
            "time_end": candidate.time_end,
            "time_peak": candidate.epoch,
            "num_points": candidate.num_points,
            "period": candidate.period,
            "epoch": candidate.epoch,
            "duration": candidate.duration,
            "depth": candidate.depth,
            "sde": candidate.sde,
            "extra": {key: values[key] for key in ("depth_err", "snr_white", "num_transits")},
        }
