"""RawPhotometry (what an archive gave us) and Lightcurve (one reduced series)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skyretriever import drawing, storage
from skyretriever.models.base import Base, FileBacked, plain_value, utcnow
from skyretriever.models.raw import (
    RawData,
    cross_ids_disagree,
    raw_file_identity,
    register_data_type,
    target_key,
)

if TYPE_CHECKING:
    from skyretriever.models.source import Source

__all__ = ["RAW_COLUMNS", "SUMMARY_COLUMNS", "Lightcurve", "RawPhotometry", "SourceRawData",
           "cross_ids_disagree", "lightcurve_summaries", "raw_file_identity", "save_lightcurves",
           "target_key"]

#: The columns of a raw-data row that are carried as values (every one but ``created_at``).
RAW_COLUMNS = ("id", "source_name", "observatory", "ra", "dec", "download_hash", "target_key",
               "cross_ids", "is_empty", "num_points", "time_start", "time_end", "filters",
               "altdata", "filename", "key", "checksum", "file_size", "file_mtime_ns")


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


@register_data_type
class RawPhotometry(RawData, Base):
    """All the photometry one observatory has for one target, as downloaded.

    One row and one file per (source name, observatory, download parameters,
    target), shared by every project that asks for the same target with the same
    download parameters: the ``download_hash`` of the parameters that change what
    is downloaded (:attr:`VirtualObservatory.download_hash`) and the ``target_key``
    of the target (cross-ids and position, :func:`target_key`). A source reuses a
    row only when :meth:`matches` says it is the same target and download; a name
    reused for another star, or other parameters, make a new row and file. A
    source with no data has ``is_empty=True`` and no file, so it is not asked for
    again.

    Examples
    --------
    >>> raw = RawPhotometry(source_name="star", observatory="demo", ra=10.0, dec=5.0)
    >>> raw.data = pd.DataFrame({"mjd": [60000.0, 60001.0], "mag": [15.0, 15.1]})
    >>> raw.save()                                                  # doctest: +SKIP
    >>> raw.num_points
    2
    """

    data_type = "photometry"
    __tablename__ = "raw_photometry"
    __table_args__ = (sa.UniqueConstraint("source_name", "observatory", "download_hash",
                                          "target_key", name="uq_raw_photometry_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this raw-data row.")
    num_points: Mapped[int] = mapped_column(default=0, doc="Number of epochs in the raw data.")
    time_start: Mapped[float | None] = mapped_column(doc="First epoch (MJD).")
    time_end: Mapped[float | None] = mapped_column(doc="Last epoch (MJD).")
    filters: Mapped[list[Any] | None] = mapped_column(doc="Filters present in the raw data.")

    lightcurves: Mapped[list[Lightcurve]] = relationship(
        back_populates="raw_data",
        passive_deletes=True,
        doc="Light curves reduced from this raw data (in every project).",
    )

    def __init__(self, data: pd.DataFrame | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data is not None:
            self.data = data

    @classmethod
    def from_file(cls, relative: str) -> RawPhotometry | None:
        """The raw data of a raw file, as a new row (not in a session); ``None`` if unreadable.

        Each raw file records its source's name, position, cross-ids and download
        hash (:meth:`save`), so a row that was lost, or never committed after a
        crash, is made again from the file without downloading: summaries,
        SHA-256, size and modification time included, ``data`` loaded.

        Examples
        --------
        >>> raw = RawPhotometry(source_name="star", observatory="demo", ra=10.0, dec=5.0,
        ...                     data=pd.DataFrame({"mjd": [60000.0, 60001.0]}))
        >>> raw.save()
        >>> again = RawPhotometry.from_file(raw.filename)
        >>> again.source_name, again.num_points, again.checksum == raw.checksum
        ('star', 2, True)
        """
        try:
            keys = storage.read_table_keys(relative)
            if len(keys) != 1:
                return None
            frame, metadata = storage.read_table(relative, keys[0])
            path = storage.full_path(relative)
            raw = cls(
                data=frame,
                source_name=metadata["source_name"],
                observatory=metadata["observatory"],
                ra=float(metadata["ra"]),
                dec=float(metadata["dec"]),
                download_hash=metadata.get("download_hash"),
                target_key=metadata.get("target_key") or "",
                cross_ids=metadata.get("cross_ids") or {},
                altdata=metadata.get("altdata") or {},
            )
            raw.compute_summaries()
            raw.is_empty = False
            raw.filename, raw.key = relative, keys[0]
            status = path.stat()
            raw.checksum, raw.file_size = storage.file_sha256(path), status.st_size
            raw.file_mtime_ns = status.st_mtime_ns
        except (storage.StorageError, KeyError, TypeError, ValueError):
            return None
        return raw

    def column_values(self) -> dict[str, Any]:
        """The row's :data:`RAW_COLUMNS` but ``id``, as plain Python values (for SQL, or a new row).

        Examples
        --------
        >>> raw = RawPhotometry(source_name="star", observatory="demo", ra=10.0, dec=5.0)
        >>> values = raw.column_values()
        >>> values["source_name"], values["filters"], values["altdata"]
        ('star', [], {})
        """
        values = {c: plain_value(getattr(self, c)) for c in RAW_COLUMNS if c != "id"}
        values["filters"] = list(self.filters or [])
        values["altdata"] = self.altdata or {}
        return values

    def compute_summaries(self) -> None:
        """Fill ``num_points``, ``time_start``, ``time_end`` and ``filters`` from ``data``."""
        frame = self._data
        if frame is None or len(frame) == 0:
            self.num_points, self.time_start, self.time_end = 0, None, None
            self.filters = []
            return
        self.num_points = int(len(frame))
        if "mjd" in frame:
            times = frame["mjd"].to_numpy(dtype=float)
            self.time_start = _finite_or_none(np.nanmin(times))
            self.time_end = _finite_or_none(np.nanmax(times))
        if "filter" in frame:
            self.filters = sorted({str(value) for value in frame["filter"].unique()})

    def save(self) -> None:
        """Write ``data`` to this source's raw file atomically and record its checksum.

        An empty table marks the row ``is_empty`` and writes no file.
        """
        self.compute_summaries()
        if self._data is None or len(self._data) == 0:
            self.is_empty = True
            self.filename = self.key = self.checksum = self.file_size = self.file_mtime_ns = None
            return
        self.is_empty = False
        if self.target_key is None or self.target_key == "":
            self.target_key = target_key(self.cross_ids, self.ra, self.dec)
        relative = storage.raw_filename(self.observatory, self.source_name, self.ra,
                                        self.identity, self.data_type)
        self.key = storage.sanitize_name(self.source_name)
        metadata = {
            "source_name": self.source_name,
            "observatory": self.observatory,
            "ra": self.ra,
            "dec": self.dec,
            "download_hash": self.download_hash,
            "target_key": self.target_key,
            "cross_ids": self.cross_ids or {},
            "altdata": self.altdata or {},
        }
        info = storage.write_tables(relative, {self.key: (self._data, metadata)})
        self.filename, self.checksum, self.file_size = info.filename, info.checksum, info.file_size
        self.file_mtime_ns = info.mtime_ns

    def plot(self, **kwargs: Any):
        """Plot the raw data (magnitudes, or flux for TESS, Kepler and K2) against time.

        Keyword arguments (``ax``, ``filename``) go to
        :func:`skyretriever.plots.plot_raw_photometry`; returns the Figure.

        Examples
        --------
        >>> fig = raw.plot(filename="raw.png")                          # doctest: +SKIP
        """
        return drawing.draw("raw_photometry", self, **kwargs)


class SourceRawData(Base):
    """Which raw product a source (of one project and configuration) uses, per observatory.

    Written with the source's batch; a source's raw data is found through this
    link, never by its name (names are not unique across catalogs).
    """

    __tablename__ = "source_raw_data"

    source_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True,
        doc="The source.",
    )
    observatory: Mapped[str] = mapped_column(
        sa.String(20), primary_key=True, doc="Observatory name in lower case."
    )
    raw_id: Mapped[int] = mapped_column(
        sa.ForeignKey("raw_photometry.id", ondelete="CASCADE"), index=True,
        doc="The raw data this source uses for that observatory.",
    )


SUMMARY_COLUMNS = ("mjd", "qflag", "exptime", "mag", "flux")


def lightcurve_summaries(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Summary columns of a light curve from its column arrays (``mjd`` required).

    Examples
    --------
    >>> lightcurve_summaries({"mjd": np.array([1.0, 2.0]), "mag": np.array([15.0, 15.2])})["mag_mean"]
    15.1
    """
    times = np.asarray(arrays["mjd"], dtype=float)
    n = len(times)
    good = ~np.asarray(arrays["qflag"], dtype=bool) if "qflag" in arrays else np.ones(n, bool)
    finite_times = times[np.isfinite(times)]
    values: dict[str, Any] = {
        "num_points": n,
        "num_good_points": int(good.sum()),
        "time_start": float(finite_times.min()) if len(finite_times) else None,
        "time_end": float(finite_times.max()) if len(finite_times) else None,
    }
    if "exptime" in arrays:
        exptime = np.asarray(arrays["exptime"], dtype=float)
        exptime = exptime[np.isfinite(exptime)]
        values["exptime"] = float(np.median(exptime)) if len(exptime) else None
    for column in ("mag", "flux"):
        if column not in arrays:
            continue
        selected = np.asarray(arrays[column], dtype=float)[good]
        selected = selected[np.isfinite(selected)]
        if len(selected):
            values[f"{column}_mean"] = float(selected.mean())
            values[f"{column}_rms"] = float(selected.std())
    return values


class Lightcurve(FileBacked, Base):
    """One reduced light curve: one filter, one continuous stretch of one observatory.

    Unique per (source, observatory, series number, processed, simulated,
    cfg_hash). The light curves of one source and observatory share one file,
    with keys ``<source>_reduction_XX_of_YY`` ordered by start time; save them
    together with :func:`save_lightcurves`.
    """

    __tablename__ = "lightcurves"
    __table_args__ = (
        sa.UniqueConstraint(
            "source_id",
            "observatory",
            "series_number",
            "was_processed",
            "is_simulated",
            "cfg_hash",
            name="uq_lightcurves_identity",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this light curve.")
    source_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sources.id", ondelete="CASCADE"),
        index=True,
        doc="The source this light curve belongs to.",
    )
    raw_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("raw_photometry.id", ondelete="CASCADE"),
        index=True,
        doc="The raw data this light curve was reduced from.",
    )
    project: Mapped[str] = mapped_column(doc="Project that made this light curve.")
    cfg_hash: Mapped[str] = mapped_column(
        sa.String(64), doc="Config hash of the project (empty when version control is off)."
    )
    observatory: Mapped[str] = mapped_column(sa.String(20), doc="Observatory name in lower case.")
    filter: Mapped[str | None] = mapped_column(doc="Filter (band) of every point in this series.")
    series_number: Mapped[int] = mapped_column(
        doc="Position of this series among the source's series of this observatory (1-based)."
    )
    series_total: Mapped[int] = mapped_column(
        doc="How many series the raw data of this observatory was split into."
    )
    was_processed: Mapped[bool] = mapped_column(
        default=True, doc="True once reduced from raw data (false for raw copies)."
    )
    is_simulated: Mapped[bool] = mapped_column(
        default=False, doc="True when events were injected into this light curve."
    )
    num_points: Mapped[int] = mapped_column(default=0, doc="Number of epochs.")
    num_good_points: Mapped[int] = mapped_column(
        default=0, doc="Number of epochs not flagged by the quality checks (qflag false)."
    )
    time_start: Mapped[float | None] = mapped_column(doc="First epoch (MJD).")
    time_end: Mapped[float | None] = mapped_column(doc="Last epoch (MJD).")
    exptime: Mapped[float | None] = mapped_column(doc="Median exposure time or cadence (seconds).")
    mag_mean: Mapped[float | None] = mapped_column(doc="Mean magnitude of the good epochs.")
    mag_rms: Mapped[float | None] = mapped_column(doc="Standard deviation of the good magnitudes.")
    flux_mean: Mapped[float | None] = mapped_column(doc="Mean flux of the good epochs.")
    flux_rms: Mapped[float | None] = mapped_column(doc="Standard deviation of the good fluxes.")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the row was made (UTC).")

    source: Mapped[Source] = relationship(back_populates="lightcurves", doc="The source.")
    raw_data: Mapped[RawPhotometry | None] = relationship(
        back_populates="lightcurves", doc="The raw data it came from."
    )

    def __init__(self, data: pd.DataFrame | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data is not None:
            self.data = data
            self.compute_summaries()

    def compute_summaries(self) -> None:
        """Fill the summary columns (points, times, cadence, mean and rms) from ``data``."""
        frame = self._data
        if frame is None or len(frame) == 0:
            self.num_points = self.num_good_points = 0
            return
        arrays = {c: frame[c].to_numpy() for c in SUMMARY_COLUMNS if c in frame}
        for name, value in lightcurve_summaries(arrays).items():
            setattr(self, name, value)

    def save(self) -> None:
        """Write this light curve, with the others of its file (``siblings``), atomically."""
        save_lightcurves(getattr(self, "siblings", None) or [self])

    def plot(self, **kwargs: Any):
        """Plot this light curve against time (magnitudes on an inverted axis, or flux).

        Keyword arguments (``ax``, ``filename``) go to
        :func:`skyretriever.plots.plot_lightcurve`; returns the Figure.

        Examples
        --------
        >>> fig = lightcurve.plot(filename="lightcurve.png")            # doctest: +SKIP
        """
        return drawing.draw("lightcurve", self, **kwargs)


def save_lightcurves(lightcurves: Iterable[Lightcurve]) -> None:
    """Write light curves to their reduced files, one file per (source, observatory).

    Each light curve must have ``filename`` and ``key`` set (as
    :meth:`VirtualObservatory.reduce` does); the file's checksum and size are
    written into every row that shares the file.
    """
    groups: dict[str, list[Lightcurve]] = defaultdict(list)
    for lightcurve in lightcurves:
        if not lightcurve.filename or not lightcurve.key:
            raise storage.StorageError(f"{lightcurve!r} has no file name or key to save to")
        groups[lightcurve.filename].append(lightcurve)
    for filename, group in groups.items():
        tables = {lc.key: (lc.data, lc._metadata) for lc in group}
        info = storage.write_tables(filename, tables)
        for lc in group:
            lc.checksum, lc.file_size, lc.file_mtime_ns = info.checksum, info.file_size, info.mtime_ns

