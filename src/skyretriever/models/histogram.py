"""Histograms of what was scanned and found, along magnitude, cadence, filter and score.

The histograms are data, like the tables: :class:`Histogram` (the counts, a
netCDF file) and :class:`HistogramBatch` (the counts one batch added, a row)
live here; :mod:`skyretriever.analysis` fills them.

Counts are additive: workers produce sparse counts per source, a batch's
counts are committed to the database with its rows (:class:`HistogramBatch`),
and the netCDF file ``histograms_<name>.nc`` is the sum of the batches it
lists. ``a + b`` adds two histograms; :func:`update_histogram_file` folds the
batches a file does not yet hold into it, so nothing is counted twice and a
crash between a commit and a file write loses nothing.

Variables (dimensions):

- ``lightcurves`` (mag, cadence, filter): light curves scanned;
- ``points`` (mag, cadence, filter): good epochs scanned;
- ``scores`` (mag, cadence, filter, score): good epochs by their score;
- ``detections`` (mag, cadence, filter, score): real detections by their score
  (times their sign: dips and transits count at negative scores);
- ``injected`` (event, mag, cadence, filter, score): injected events by kind
  (transit, flare, dip) and expected S/N;
- ``recovered`` (event, mag, cadence, filter, score): the injected events that
  a finder recovered, on the same axes, so that :func:`recovery_efficiency`
  is their ratio.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from skyretriever import drawing
from skyretriever.models.base import Base, utcnow
from skyretriever.parameters import Parameters, parameter
from skyretriever.storage import atomic_write

__all__ = [
    "EVENTS",
    "Histogram",
    "HistogramBatch",
    "HistogramFileError",
    "HistogramParameters",
    "SparseCounts",
    "add_sparse",
    "recovery_efficiency",
    "update_histogram_file",
]

SparseCounts = dict[str, dict[int, int]]

OTHER_FILTER = "other"
#: Kinds of injected event, the ``event`` axis of ``injected`` and ``recovered``.
EVENTS = ("transit", "flare", "dip")


class HistogramFileError(ValueError):
    """A histogram file cannot be read (damaged, truncated, or not a histogram)."""


class HistogramParameters(Parameters):
    """Bins of the histograms (changing them starts new histograms)."""

    mag_range: list[float] = parameter([10.0, 22.0], "Magnitude range of the mag axis.",
                                       min_length=2, max_length=2)
    mag_step: float = parameter(0.5, "Width of a magnitude bin.", gt=0)
    cadence_edges: list[float] = parameter(
        [0.0, 25.0, 60.0, 150.0, 700.0, 2000.0, 1e6],
        "Edges of the cadence (exposure time) bins in seconds.",
        min_length=2,
    )
    filters: list[str] = parameter(
        ["g", "r", "i", "TESS", "Kepler", "K2"],
        "Filters with their own bin; others are counted under 'other'.",
    )
    score_range: list[float] = parameter([-20.0, 40.0], "Range of the score axis.",
                                         min_length=2, max_length=2)
    score_step: float = parameter(0.5, "Width of a score bin.", gt=0)


VARIABLES = {
    "lightcurves": ("mag", "cadence", "filter"),
    "points": ("mag", "cadence", "filter"),
    "scores": ("mag", "cadence", "filter", "score"),
    "detections": ("mag", "cadence", "filter", "score"),
    "injected": ("event", "mag", "cadence", "filter", "score"),
    "recovered": ("event", "mag", "cadence", "filter", "score"),
}


def add_sparse(total: SparseCounts, more: Mapping[str, Mapping[int, int]]) -> SparseCounts:
    """Add sparse counts into ``total`` (in place) and return it."""
    for variable, cells in more.items():
        target = total.setdefault(variable, {})
        for index, count in cells.items():
            index = int(index)
            target[index] = target.get(index, 0) + int(count)
    return total


class Histogram:
    """Counts on fixed bins, kept as dense arrays, saved as netCDF.

    Examples
    --------
    >>> hist = Histogram()
    >>> counts = hist.count_lightcurve(mag=15.2, exptime=30.0, filter="g",
    ...                                 scores=np.array([0.1, -0.4, 6.0]))
    >>> hist.add(counts)
    >>> int(hist.total("points")), int(hist.total("lightcurves"))
    (3, 1)
    >>> int((hist + hist).total("scores"))
    6
    """

    def __init__(self, pars: HistogramParameters | None = None, name: str = "analysis",
                 **kwargs: Any) -> None:
        self.pars = pars if pars is not None else HistogramParameters.build(
            kwargs, where="analysis.histogram"
        )
        self.name = name
        pars = self.pars
        low, high = sorted(pars.mag_range)
        self.mag_edges = np.arange(low, high + pars.mag_step / 2, pars.mag_step)
        self.cadence_edges = np.asarray(sorted(pars.cadence_edges), dtype=float)
        self.filters = [*pars.filters, OTHER_FILTER]
        low, high = sorted(pars.score_range)
        self.score_edges = np.arange(low, high + pars.score_step / 2, pars.score_step)
        self.sizes = {
            "mag": len(self.mag_edges) - 1,
            "cadence": len(self.cadence_edges) - 1,
            "filter": len(self.filters),
            "score": len(self.score_edges) - 1,
            "event": len(EVENTS),
        }
        self.counts = {
            variable: np.zeros([self.sizes[dim] for dim in dims], dtype=np.int64)
            for variable, dims in VARIABLES.items()
        }
        self.batch_ids: set[int] = set()

    # -- binning ---------------------------------------------------------------------------
    @staticmethod
    def _bin(edges: np.ndarray, values: Any) -> np.ndarray:
        """Bin index of each value; values outside the range go to the first or last bin."""
        index = np.searchsorted(edges, np.asarray(values, dtype=float), side="right") - 1
        return np.clip(index, 0, len(edges) - 2)

    def _cell(self, mag: float, exptime: float, filter: str | None) -> tuple[int, int, int]:
        mag = mag if mag is not None and np.isfinite(mag) else self.mag_edges[-1]
        exptime = exptime if exptime is not None and np.isfinite(exptime) else 0.0
        name = str(filter) if filter is not None else OTHER_FILTER
        filter_index = self.filters.index(name) if name in self.filters else len(self.filters) - 1
        return int(self._bin(self.mag_edges, mag)), int(self._bin(self.cadence_edges, exptime)), filter_index

    def count_lightcurve(self, mag: float | None, exptime: float | None, filter: str | None,
                         scores: np.ndarray, detection_scores: Iterable[float] = (),
                         points: int | None = None) -> SparseCounts:
        """Sparse counts for one scanned light curve.

        ``scores`` are the scores of its epochs (NaN are skipped); ``points``
        the good epochs scanned, by default as many as there are scores (a
        search that scores no epochs, such as the transit search, still scans them).
        """
        scores = np.asarray(scores, dtype=float)
        scores = scores[np.isfinite(scores)]
        points = len(scores) if points is None else int(points)
        m, c, f = self._cell(mag, exptime, filter)
        base = np.ravel_multi_index((m, c, f), self.counts["points"].shape)
        counts: SparseCounts = {"lightcurves": {int(base): 1}}
        if points:
            counts["points"] = {int(base): points}
        if len(scores):
            counts["scores"] = self._score_cells(m, c, f, scores)
        detection_scores = np.asarray(list(detection_scores), dtype=float)
        if len(detection_scores):
            counts["detections"] = self._score_cells(m, c, f, detection_scores)
        return counts

    def count_injection(self, event: str, mag: float | None, exptime: float | None,
                        filter: str | None, snr: float, recovered: bool) -> SparseCounts:
        """Sparse counts for one injected event: ``injected``, and ``recovered`` if it was.

        ``snr`` is the event's expected S/N, the score axis of both variables.

        Examples
        --------
        >>> hist = Histogram()
        >>> hist.add(hist.count_injection("transit", 12.0, 120.0, "TESS", snr=8.0, recovered=True))
        >>> hist.add(hist.count_injection("transit", 12.0, 120.0, "TESS", snr=8.1, recovered=False))
        >>> hist.total("injected"), hist.total("recovered")
        (2, 1)
        """
        if event not in EVENTS:
            raise ValueError(f"unknown event kind {event!r}; the histogram has {', '.join(EVENTS)}")
        m, c, f = self._cell(mag, exptime, filter)
        cells = self._score_cells(m, c, f, np.array([snr], dtype=float),
                                  prefix=(EVENTS.index(event),), variable="injected")
        counts: SparseCounts = {"injected": cells}
        if recovered:
            counts["recovered"] = dict(cells)
        return counts

    def _score_cells(self, m: int, c: int, f: int, values: np.ndarray, prefix: tuple[int, ...] = (),
                     variable: str = "scores") -> dict[int, int]:
        bins = self._bin(self.score_edges, values)
        shape = self.counts[variable].shape
        fixed = (*prefix, m, c, f)
        flat = np.ravel_multi_index(tuple(np.full_like(bins, i) for i in fixed) + (bins,), shape)
        unique, number = np.unique(flat, return_counts=True)
        return {int(i): int(n) for i, n in zip(unique, number)}

    # -- arithmetic ------------------------------------------------------------------------
    def add(self, sparse: Mapping[str, Mapping[int, int]]) -> None:
        """Add sparse counts (from :meth:`count_lightcurve` or a batch) to this histogram."""
        for variable, cells in sparse.items():
            if not cells:
                continue
            target = self.counts[variable].reshape(-1)
            index = np.fromiter((int(i) for i in cells), dtype=np.int64, count=len(cells))
            values = np.fromiter((int(v) for v in cells.values()), dtype=np.int64, count=len(cells))
            np.add.at(target, index, values)

    def _check_compatible(self, other: Histogram) -> None:
        if self.pars.to_dict() != other.pars.to_dict():
            raise ValueError("cannot add histograms with different bins")

    def __add__(self, other: Histogram) -> Histogram:
        self._check_compatible(other)
        result = Histogram(self.pars, self.name)
        for variable in self.counts:
            result.counts[variable] = self.counts[variable] + other.counts[variable]
        overlap = self.batch_ids & other.batch_ids
        if overlap:
            raise ValueError(f"both histograms already hold batches {sorted(overlap)[:5]}")
        result.batch_ids = self.batch_ids | other.batch_ids
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.pars.to_dict() == other.pars.to_dict() and all(
            np.array_equal(self.counts[v], other.counts[v]) for v in self.counts
        )

    __hash__ = None

    def total(self, variable: str) -> int:
        """Sum of all counts of one variable."""
        return int(self.counts[variable].sum())

    def efficiency(self, along: str = "score", event: str | None = None, **where: Any):
        """Recovery efficiency along one axis; see :func:`recovery_efficiency`."""
        return recovery_efficiency(self, along, event, **where)

    # -- files -----------------------------------------------------------------------------
    def to_xarray(self):
        """The counts as an ``xarray.Dataset`` with bin centres (and edges) as coordinates."""
        import xarray as xr

        coords = {
            "mag": 0.5 * (self.mag_edges[:-1] + self.mag_edges[1:]),
            "cadence": 0.5 * (self.cadence_edges[:-1] + self.cadence_edges[1:]),
            "filter": np.array(self.filters, dtype=object),
            "event": np.array(EVENTS, dtype=object),
            "score": 0.5 * (self.score_edges[:-1] + self.score_edges[1:]),
            "mag_edges": self.mag_edges,
            "cadence_edges": self.cadence_edges,
            "score_edges": self.score_edges,
            "batch_id": np.array(sorted(self.batch_ids), dtype=np.int64),
        }
        data = {variable: (VARIABLES[variable], counts) for variable, counts in self.counts.items()}
        dataset = xr.Dataset(data, coords=coords)
        dataset.attrs["name"] = self.name
        dataset.attrs["parameters"] = self.pars.model_dump_json()
        return dataset

    def save(self, path: str | os.PathLike) -> None:
        """Write the netCDF file atomically (temporary name, then rename).

        Raises :class:`~skyretriever.errors.DiskFull` when there is no room for it
        (the temporary file is removed, the old file stays).
        """
        path = Path(path)
        # netCDF says only "NetCDF: HDF error" when the disk is full: atomic_write looks at the
        # free space there before it removes the temporary file
        with atomic_write(path, disk_full_at=path.parent) as temporary:
            self.to_xarray().to_netcdf(temporary, engine="netcdf4")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Histogram:
        """Read a histogram written by :meth:`save`.

        Raises
        ------
        HistogramFileError
            If the file is damaged or is not a histogram (its counts can be rebuilt
            from the committed batches: :meth:`skyretriever.Project.update_histograms`).
        """
        try:
            return cls._load(path)
        except FileNotFoundError:
            raise
        except Exception as error:  # netCDF, HDF5, JSON and pydantic all fail their own way
            raise HistogramFileError(f"histogram file {str(path)!r} is unreadable: "
                                     f"{type(error).__name__}: {error}"[:500]) from None

    @classmethod
    def _load(cls, path: str | os.PathLike) -> Histogram:
        import xarray as xr

        with xr.open_dataset(path, engine="netcdf4") as dataset:
            dataset.load()
            pars = HistogramParameters.model_validate_json(dataset.attrs["parameters"])
            histogram = cls(pars, dataset.attrs.get("name", "analysis"))
            for variable in histogram.counts:
                # files written before injections existed have no injected or recovered
                # counts: those batches injected nothing, so zeros are their true counts
                if variable in dataset:
                    histogram.counts[variable] = dataset[variable].to_numpy().astype(np.int64)
            histogram.batch_ids = {int(i) for i in dataset["batch_id"].to_numpy()}
        return histogram

    def plot(self, **kwargs: Any):
        """Plot the counts and the recovery efficiency along one dimension.

        Keyword arguments (``along``, ``filename``) go to
        :func:`skyretriever.plots.plot_histogram`; returns the Figure.

        Examples
        --------
        >>> fig = Histogram().plot(along="score")                       # doctest: +SKIP
        """
        return drawing.draw("histogram", self, **kwargs)


def _wilson_interval(successes: np.ndarray, trials: np.ndarray, z: float = 1.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial fraction (``z`` standard deviations; NaN with no trials)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = successes / trials
        denominator = 1 + z**2 / trials
        centre = (fraction + z**2 / (2 * trials)) / denominator
        half = z * np.sqrt(fraction * (1 - fraction) / trials + z**2 / (4 * trials**2)) / denominator
    return centre - half, centre + half


def recovery_efficiency(histogram: Histogram, along: str = "score", event: str | None = None,
                        **where: Any):
    """Recovered over injected events along one axis, summed over the others.

    Parameters
    ----------
    histogram
        A histogram holding ``injected`` and ``recovered`` counts.
    along
        The axis to keep: ``score`` (expected S/N), ``mag``, ``cadence``, ``filter`` or ``event``.
    event
        Only this kind of event (``transit``, ``flare``, ``dip``); default all.
    **where
        Further selections by coordinate, such as ``filter="TESS"`` or
        ``mag=slice(10, 14)`` (bin centres).

    Returns
    -------
    xarray.Dataset
        ``injected``, ``recovered``, ``efficiency`` (NaN where nothing was
        injected) and its one-sigma Wilson interval ``efficiency_low`` and
        ``efficiency_high``, along ``along``.

    Examples
    --------
    >>> hist = Histogram()
    >>> for snr, found in [(4.2, False), (4.4, True), (12.1, True), (12.3, True)]:
    ...     hist.add(hist.count_injection("flare", 15.0, 30.0, "g", snr, found))
    >>> table = recovery_efficiency(hist, "score", event="flare")
    >>> table["efficiency"].sel(score=[4.25, 12.25]).values.tolist()
    [0.5, 1.0]
    """
    dataset = histogram.to_xarray()
    counts = dataset[["injected", "recovered"]]
    if event is not None:
        if event not in EVENTS:
            raise ValueError(f"unknown event kind {event!r}; use one of {', '.join(EVENTS)}")
        counts = counts.sel(event=event)
    for axis, selection in where.items():
        if axis not in counts.dims:
            raise ValueError(f"cannot select on {axis!r}; axes are {', '.join(map(str, counts.dims))}")
        counts = counts.sel({axis: selection})
    if along not in counts.dims:
        raise ValueError(f"cannot keep axis {along!r}; axes are {', '.join(map(str, counts.dims))}")
    counts = counts.sum([axis for axis in counts.dims if axis != along])
    injected = counts["injected"].astype(float)
    recovered = counts["recovered"].astype(float)
    low, high = _wilson_interval(recovered.values, injected.values)
    result = counts.assign(efficiency=recovered / injected.where(injected > 0))
    result["efficiency_low"] = (along, low)
    result["efficiency_high"] = (along, high)
    return result


def update_histogram_file(path: str | os.PathLike, pars: HistogramParameters, name: str,
                          batches: Iterable[tuple[int, Mapping[str, Any]]]) -> Histogram:
    """Fold the given (batch id, sparse counts) pairs that the file does not hold yet into it."""
    path = Path(path)
    histogram = Histogram.load(path) if path.exists() else Histogram(pars, name)
    if histogram.pars.to_dict() != pars.to_dict():
        raise ValueError(f"histogram file {str(path)!r} has other bins than the configuration")
    changed = False
    for batch_id, counts in batches:
        if batch_id in histogram.batch_ids:
            continue
        histogram.add(counts)
        histogram.batch_ids.add(int(batch_id))
        changed = True
    if changed or not path.exists():
        histogram.save(path)
    return histogram


class HistogramBatch(Base):
    """Counts added to a project's histograms by one batch, committed with its rows.

    The netCDF histogram files are the sum of these rows; each file records
    which batches it holds, so a batch is never counted twice and a crash
    between the commit and the file write loses nothing.
    """

    __tablename__ = "histogram_batches"
    __table_args__ = (sa.Index(None, "project", "cfg_hash", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this batch.")
    project: Mapped[str] = mapped_column(doc="Project whose histograms the counts belong to.")
    cfg_hash: Mapped[str] = mapped_column(sa.String(64), doc="Config hash of the project.")
    name: Mapped[str] = mapped_column(doc="Name of the histogram (its file is histograms_<name>.nc).")
    num_sources: Mapped[int] = mapped_column(doc="Number of sources whose counts are in the batch.")
    counts: Mapped[dict[str, Any]] = mapped_column(
        doc="Sparse counts: {variable: [[flat index, count], ...]} over the histogram's bins."
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the batch was committed.")
