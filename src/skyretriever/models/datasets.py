"""RawPhotometry (what an archive gave us) and Lightcurve (one reduced series).

Both hold a table (``data``, a pandas DataFrame read from their HDF5 file)
whose columns carry their units in ``data.attrs["units"]`` (:data:`COLUMN_UNITS`,
fluxes in the observatory's unit, :func:`flux_unit`), and turn into the objects
astronomers use: :meth:`Lightcurve.to_lightkurve` (a ``lightkurve.LightCurve``),
``to_table`` (an astropy ``QTable`` with units) and ``to_timeseries`` (an
astropy ``TimeSeries``), with times as astropy ``Time`` in the observatory's
time scale (:func:`time_system`).

The metadata kept with a table in its file is ``file_metadata``: ``metadata``
is SQLAlchemy's registry of tables, a name declarative classes reserve.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
import pandas as pd
import sqlalchemy as sa
from astropy.table import QTable
from astropy.time import Time
from astropy.timeseries import TimeSeries
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skyretriever import drawing, storage
from skyretriever.models.base import Base, FileBacked, plain_value, utcnow
from skyretriever.models.display import (
    describe_columns,
    html_table,
    loaded,
    related,
    rounded,
    shown,
)
from skyretriever.models.raw import (
    RawData,
    cross_ids_disagree,
    raw_file_identity,
    register_data_type,
    target_key,
)

if TYPE_CHECKING:
    from skyretriever.models.source import Source

__all__ = ["COLUMN_UNITS", "RAW_COLUMNS", "SUMMARY_COLUMNS", "Lightcurve", "RawPhotometry",
           "SourceRawData", "TimeSystem", "column_units", "cross_ids_disagree", "flux_unit",
           "lightcurve_summaries", "raw_file_identity", "save_lightcurves", "target_key",
           "time_system"]

#: The columns of a raw-data row that are carried as values (every one but ``created_at``).
RAW_COLUMNS = ("id", "source_name", "observatory", "ra", "dec", "download_hash", "target_key",
               "cross_ids", "is_empty", "num_points", "time_start", "time_end", "filters",
               "altdata", "filename", "key", "checksum", "file_size", "file_mtime_ns")


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# -- units and times -------------------------------------------------------------------------
#: Units of the photometry columns the observatories write, raw and reduced (fluxes apart:
#: :data:`FLUX_COLUMNS` are in the observatory's :func:`flux_unit`). Columns not listed
#: (``filter``, ``quality``, ``qflag``, ``cadenceno``, ``sector``...) have no unit.
COLUMN_UNITS = {
    **dict.fromkeys(("mjd", "bjd", "btjd", "bkjd", "hjd", "time", "timecorr"), "d"),
    **dict.fromkeys(("mag", "mag_err", "magerr", "limitmag"), "mag"),
    "exptime": "s",
    **dict.fromkeys(("ra", "dec"), "deg"),
    **dict.fromkeys(("centroid_col", "centroid_row", "mom_centr1", "mom_centr1_err", "mom_centr2",
                     "mom_centr2_err", "psf_centr1", "psf_centr1_err", "psf_centr2",
                     "psf_centr2_err", "pos_corr1", "pos_corr2"), "pix"),
}
#: Columns in the observatory's flux unit.
FLUX_COLUMNS = ("flux", "flux_err", "sap_flux", "sap_flux_err", "pdcsap_flux", "pdcsap_flux_err",
                "sap_bkg", "sap_bkg_err")
#: The flux of TESS, Kepler and K2 is the mission's (PDCSAP or SAP) flux; the other
#: observatories' is made from AB magnitudes, in microjansky.
_FLUX_UNITS = dict.fromkeys(("tess", "tessffi", "kepler", "k2"), "electron / s")
_AB_FLUX_UNIT = "uJy"


@dataclass(frozen=True)
class TimeSystem:
    """How an observatory's times are kept: which column, from which zero, in which scale.

    Examples
    --------
    >>> time_system("tess")
    TimeSystem(columns=('btjd', 'time'), zero_point=2457000.0, scale='tdb', format='btjd')
    """

    #: Columns holding the time, first found is used (the reduced column, then the raw one).
    columns: tuple[str, ...]
    #: Julian date of time 0 in those columns (2457000 for BTJD: BJD - 2457000).
    zero_point: float
    #: astropy time scale (``tdb`` for barycentric dates, ``utc``).
    scale: str
    #: Format of the ``Time`` in a ``lightkurve.LightCurve`` (``btjd``, ``bkjd``, ``mjd``).
    format: str


_MJD_UTC = TimeSystem(("mjd",), 2400000.5, "utc", "mjd")
# TESS, Kepler and K2 keep barycentric dates (TDB) from the mission's zero (BJDREFI);
# ZTF's mjd (IRSA's, the start of the exposure) and the demo's are UTC.
_TIME_SYSTEMS = {
    "tess": TimeSystem(("btjd", "time"), 2457000.0, "tdb", "btjd"),
    "tessffi": TimeSystem(("btjd", "time"), 2457000.0, "tdb", "btjd"),
    "kepler": TimeSystem(("bkjd", "time"), 2454833.0, "tdb", "bkjd"),
    "k2": TimeSystem(("bkjd", "time"), 2454833.0, "tdb", "bkjd"),
}


def time_system(observatory: str | None) -> TimeSystem:
    """The :class:`TimeSystem` of an observatory's data (MJD in UTC unless it is TESS, Kepler or K2)."""
    return _TIME_SYSTEMS.get((observatory or "").lower(), _MJD_UTC)


def flux_unit(observatory: str | None) -> str:
    """The unit of an observatory's flux columns: ``electron / s`` (TESS, Kepler, K2) or ``uJy``.

    Examples
    --------
    >>> flux_unit("tess"), flux_unit("ztf")
    ('electron / s', 'uJy')
    """
    return _FLUX_UNITS.get((observatory or "").lower(), _AB_FLUX_UNIT)


class ColumnUnits(Mapping[str, str]):
    """The units of a table's columns: read-only, and shared rather than copied.

    pandas deep-copies a frame's ``attrs`` into every frame derived from it (a
    column, a slice, an arithmetic result); a plain dict there made the analysis
    of every light curve copy it thousands of times. This mapping cannot change,
    so a copy is the mapping itself.
    """

    __slots__ = ("_units",)

    def __init__(self, units: Mapping[str, str]) -> None:
        self._units = dict(units)

    def __getitem__(self, column: str) -> str:
        return self._units[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._units)

    def __len__(self) -> int:
        return len(self._units)

    def __copy__(self) -> ColumnUnits:
        return self

    def __deepcopy__(self, memo: dict) -> ColumnUnits:
        return self

    def __reduce__(self):
        return ColumnUnits, (self._units,)

    def __repr__(self) -> str:
        return repr(self._units)


def column_units(columns: Iterable[str], observatory: str | None) -> ColumnUnits:
    """The unit of each of ``columns`` that has one, as astropy unit strings.

    Examples
    --------
    >>> column_units(["mjd", "flux", "mag", "filter"], "tess")
    {'mjd': 'd', 'flux': 'electron / s', 'mag': 'mag'}
    """
    flux = flux_unit(observatory)
    units = {}
    for column in columns:
        if column in FLUX_COLUMNS:
            units[column] = flux
        elif column in COLUMN_UNITS:
            units[column] = COLUMN_UNITS[column]
    return ColumnUnits(units)


def _plain_column(values: np.ndarray) -> np.ndarray:
    """Text columns (pandas' object arrays) as numpy strings, for astropy tables."""
    if values.dtype == object:
        return np.array([str(value) for value in values], dtype=str)
    return values


class PhotometryTable:
    """What raw photometry and light curves share: units on ``data`` and astropy tables of it.

    Mixed into :class:`RawPhotometry` and :class:`Lightcurve` (after
    :class:`~skyretriever.models.base.FileBacked`'s loading): ``data.attrs["units"]``
    names the unit of every column that has one, set whenever the table is
    loaded or assigned.
    """

    observatory: Any

    @property
    def data(self) -> pd.DataFrame:
        """The table as a pandas DataFrame, loaded (and checksum-checked) from disk on first access.

        ``data.attrs["units"]`` holds the unit of each column that has one
        (``{"mjd": "d", "flux": "electron / s", ...}``); :meth:`to_table` makes
        them astropy units.
        """
        frame = FileBacked.data.fget(self)
        if "units" not in frame.attrs:
            frame.attrs["units"] = column_units(frame.columns, self.observatory)
        return frame

    @data.setter
    def data(self, frame: pd.DataFrame) -> None:
        if frame is not None:
            # a frame made from another table (raw data's) may carry that table's units
            frame.attrs["units"] = column_units(frame.columns, self.observatory)
        self._data = frame

    def load(self) -> pd.DataFrame:
        """Read the data from disk (checking the file), label its units, keep it on the object."""
        frame = super().load()
        frame.attrs["units"] = column_units(frame.columns, self.observatory)
        return frame

    def times(self) -> Time:
        """The epochs as an astropy ``Time`` in the observatory's scale, shown as MJD.

        Made from the mission's own column where there is one (``btjd``,
        ``bkjd``: full precision, TDB), else from ``mjd`` (UTC for ZTF and the
        demo observatory). See :func:`time_system`.

        Examples
        --------
        >>> lc.times().scale, lc.times().format                         # doctest: +SKIP
        ('tdb', 'mjd')
        """
        system = time_system(self.observatory)
        frame = self.data
        column = next((c for c in system.columns if c in frame), None)
        zero_point = system.zero_point
        if column is None:  # no mission time column: the MJD in the same scale
            column, zero_point = "mjd", _MJD_UTC.zero_point
        values = frame[column].to_numpy(dtype=float)
        time = Time(np.full(len(values), zero_point), values, format="jd", scale=system.scale)
        time.format = "mjd"
        return time

    def table_meta(self) -> dict[str, Any]:
        """What describes the table (observatory, source, units...): the ``meta`` of its tables."""
        metadata = self.file_metadata
        return {"LABEL": metadata.get("source_name"), "OBSERVATORY": self.observatory,
                "FLUX_UNIT": flux_unit(self.observatory),
                "TIMESYS": time_system(self.observatory).scale.upper(),
                "FILE_METADATA": dict(metadata)}

    def to_table(self) -> QTable:
        """The data as an astropy ``QTable``: a ``time`` column (``Time``), then every column with its unit.

        Examples
        --------
        >>> table = lc.to_table()                                       # doctest: +SKIP
        >>> table["flux"].unit, table["time"].scale                     # doctest: +SKIP
        (Unit("electron / s"), 'tdb')
        """
        frame = self.data
        units = frame.attrs.get("units") or column_units(frame.columns, self.observatory)
        table = QTable(meta=self.table_meta())
        table["time"] = self.times()
        system = time_system(self.observatory)
        for column in frame.columns:
            name = str(column)
            if name == "time":  # the archive's own time column (raw TESS: BTJD), named for it
                name = system.format if system.format not in frame else "archive_time"
            values = _plain_column(frame[column].to_numpy())
            table[name] = values * u.Unit(units[column]) if column in units else values
        return table

    def to_timeseries(self) -> TimeSeries:
        """The data as an astropy ``TimeSeries`` (the columns of :meth:`to_table`, indexed by time).

        Examples
        --------
        >>> series = lc.to_timeseries()                                 # doctest: +SKIP
        >>> series.time.scale, series["mag"].unit                       # doctest: +SKIP
        ('utc', Unit("mag"))
        """
        table = self.to_table()
        time = table["time"]
        table.remove_column("time")
        return TimeSeries(data=table, time=time, meta=table.meta)


@register_data_type
class RawPhotometry(PhotometryTable, RawData, Base):
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

    ``data`` is the archive's table as downloaded, with units in
    ``data.attrs["units"]``; :meth:`to_table` and :meth:`to_timeseries` make
    astropy objects of it, and ``file_metadata`` is what the file keeps with it
    (name, position, cross-ids, provenance).

    Examples
    --------
    >>> raw = RawPhotometry(source_name="star", observatory="demo", ra=10.0, dec=5.0)
    >>> raw.data = pd.DataFrame({"mjd": [60000.0, 60001.0], "mag": [15.0, 15.1]})
    >>> raw.data.attrs["units"]
    {'mjd': 'd', 'mag': 'mag'}
    >>> raw.save()                                                  # doctest: +SKIP
    """

    data_type = "photometry"
    __tablename__ = "raw_photometry"

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this raw-data row.")
    num_points: Mapped[int] = mapped_column(default=0, doc="Number of epochs in the raw data.")
    time_start: Mapped[float | None] = mapped_column(doc="First epoch (MJD).")
    time_end: Mapped[float | None] = mapped_column(doc="Last epoch (MJD).")
    filters: Mapped[list[Any] | None] = mapped_column(doc="Filters present in the raw data.")

    lightcurves: Mapped[list[Lightcurve]] = relationship(
        primaryjoin="and_(foreign(Lightcurve.raw_id) == RawPhotometry.id, "
                    "Lightcurve.observatory == RawPhotometry.observatory)",
        viewonly=True,
        doc="Light curves reduced from this raw data (in every project).",
    )

    #: The files ``data`` was read from, kept instead of the table (:meth:`keep_source_files`).
    _source_files = None

    def __init__(self, data: pd.DataFrame | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data is not None:
            self.data = data

    def keep_source_files(self, reader: str, files: list[tuple[str, bytes]],
                          options: dict[str, Any]) -> None:
        """Have :meth:`save` keep the archive's files ``data`` was read from, not the table.

        ``reader`` names the function registered with
        :func:`~skyretriever.storage.register_file_reader` that makes ``data`` again
        from ``files`` and ``options`` when the row's data is loaded: the table it
        makes must be the one ``data`` holds.
        """
        self._source_files = (reader, list(files), dict(options))

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
        if self._source_files is not None:
            reader, files, options = self._source_files
            info = storage.write_files_table(relative, self.key, files, reader, options, metadata)
        else:
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
        index=True,
        doc="The raw data this source uses for that observatory: the id of a row of the raw "
            "table of the observatory's data type (raw_photometry, raw_images, raw_cutouts), "
            "so no foreign key; deleting a raw row deletes its links (queries.delete_raw_row).",
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


class Lightcurve(PhotometryTable, FileBacked, Base):
    """One reduced light curve: one filter, one continuous stretch of one observatory.

    Unique per (source, observatory, series number, processed, simulated,
    cfg_hash). The light curves of one source and observatory share one file,
    with keys ``<source>_reduction_XX_of_YY`` ordered by start time; save them
    together with :func:`save_lightcurves`.

    ``data`` holds the epochs (``mjd, flux, flux_err, mag, mag_err, filter,
    quality, qflag, exptime`` and the observatory's own columns), units in
    ``data.attrs["units"]``; ``file_metadata`` is what the file keeps with it
    (source name, observatory, project, series). For other tools:
    :meth:`to_lightkurve`, :meth:`to_table`, :meth:`to_timeseries`.

    Examples
    --------
    >>> lc = source.lightcurves[0]                                      # doctest: +SKIP
    >>> lc                                                              # doctest: +SKIP
    <Lightcurve 12 tess TESS sector 1 (1/2): 1,234 points, MJD 58325.30-58326.29, 120 s>
    >>> lc.to_lightkurve().time.btjd[:2]                                # doctest: +SKIP
    array([1325.2961, 1325.2975])
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
        index=True,
        doc="The raw data this light curve was reduced from (a row of the raw table of the "
            "observatory's data type: raw_photometry, or raw_images for light curves made "
            "from image cutouts).",
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
        primaryjoin="and_(foreign(Lightcurve.raw_id) == RawPhotometry.id, "
                    "Lightcurve.observatory == RawPhotometry.observatory)",
        viewonly=True, doc="The raw photometry it came from (None for light curves made from "
                           "images).",
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

    # -- for other tools -------------------------------------------------------------------
    def table_meta(self) -> dict[str, Any]:
        """What describes this light curve, with lightkurve's keys: the ``meta`` of its tables.

        ``LABEL``/``OBJECT`` (the source's name), ``MISSION``, ``OBSERVATORY``,
        ``FILTER``, ``SECTOR``/``QUARTER``/``CAMPAIGN`` (TESS, Kepler, K2),
        ``EXPTIME`` (seconds), ``FLUX_UNIT``, ``TIMESYS``, the series and
        project, ``RA``/``DEC`` and cross-ids when the source is loaded, and the
        file's metadata (``FILE_METADATA``).
        """
        frame, metadata = self.data, self.file_metadata
        source = related(self, "source")
        name = metadata.get("source_name") or (source.name if source is not None else None)
        meta: dict[str, Any] = {
            "LABEL": name,
            "OBJECT": name,
            "MISSION": _MISSIONS.get(self.observatory, self.observatory),
            "OBSERVATORY": self.observatory,
            "FILTER": self.filter,
            "EXPTIME": self.exptime,
            "FLUX_UNIT": flux_unit(self.observatory),
            "TIMESYS": time_system(self.observatory).scale.upper(),
            "SERIES_NUMBER": self.series_number,
            "SERIES_TOTAL": self.series_total,
            "PROJECT": self.project,
            "CFG_HASH": self.cfg_hash,
        }
        for column in ("sector", "quarter", "campaign"):
            if column in frame and len(frame) and frame[column].nunique() == 1:
                meta[column.upper()] = int(frame[column].iloc[0])
        if source is not None:
            meta["RA"], meta["DEC"] = source.ra, source.dec
            for cross_id, key in (("tic_id", "TICID"), ("kic_id", "KEPLERID"),
                                  ("epic_id", "EPICID"), ("gaia_id", "GAIAID"),
                                  ("ztf_oid", "ZTF_OID")):
                if getattr(source, cross_id) is not None:
                    meta[key] = getattr(source, cross_id)
        meta["FILE_METADATA"] = dict(metadata)
        return meta

    def to_lightkurve(self):
        """This light curve as a ``lightkurve.LightCurve`` (``TessLightCurve``, ``KeplerLightCurve``).

        ``time`` is an astropy ``Time`` in the mission's format and scale (BTJD
        for TESS, BKJD for Kepler and K2, both TDB; MJD in UTC for ZTF and the
        demo); ``flux``/``flux_err`` in the observatory's unit (electron/s, or
        microjansky for fluxes made from AB magnitudes); ``quality`` the
        archive's flags; every other column with its unit (``mag``, ``qflag``,
        ``filter``...); ``meta`` as :meth:`table_meta`.

        Examples
        --------
        >>> curve = lc.to_lightkurve()                                  # doctest: +SKIP
        >>> curve.time.format, curve.time.scale, curve.flux.unit, curve.meta["SECTOR"]  # doctest: +SKIP
        ('btjd', 'tdb', Unit("electron / s"), 1)
        >>> curve.remove_outliers().flatten().plot()                    # doctest: +SKIP
        """
        with warnings.catch_warnings():
            # lightkurve warns on import that an optional part (tpfmodel) is missing
            warnings.simplefilter("ignore", UserWarning)
            import lightkurve
        table = self.to_table()
        time = table["time"]
        table.remove_column("time")
        time.format = time_system(self.observatory).format
        kind = getattr(lightkurve, _LIGHTKURVE_CLASSES.get(self.observatory, "LightCurve"))
        return kind(data=table, time=time, meta=table.meta)

    def _title(self) -> str:
        series = f"{self.series_number}/{self.series_total}" if self.series_total else None
        return " ".join(str(part) for part in ("Lightcurve", self.id, self.observatory,
                                               self.filter, series) if part is not None)

    def __repr__(self) -> str:
        parts = [f"{self.num_points or 0:,} points"]
        start, end = rounded(self.time_start, ".2f"), rounded(self.time_end, ".2f")
        if start is not None and end is not None:
            parts.append(f"MJD {start}-{end}")
        exptime = rounded(self.exptime, ".0f", "s")
        if exptime is not None:
            parts.append(exptime)
        return f"<{self._title()}: {', '.join(parts)}>"

    def _repr_html_(self) -> str:
        source = loaded(self, "source")
        unit = flux_unit(self.observatory)
        return html_table(self._title(), [
            ("source", source.name if source is not None else None),
            ("observatory", self.observatory),
            ("filter", self.filter),
            ("series", f"{self.series_number} of {self.series_total}"),
            ("points (good)", f"{self.num_points or 0:,} ({self.num_good_points or 0:,})"),
            ("time", f"MJD {rounded(self.time_start, '.4f')} to {rounded(self.time_end, '.4f')} "
                     f"({time_system(self.observatory).scale.upper()})"),
            ("exposure", rounded(self.exptime, ".1f", "s")),
            ("mean mag", _mean_and_rms(self.mag_mean, self.mag_rms, ".3f", "mag")),
            ("mean flux", _mean_and_rms(self.flux_mean, self.flux_rms, ".4g", unit)),
            ("project", self.project),
            ("file", f"{self.filename} [{self.key}]" if self.filename else None),
            ("file metadata", "lc.file_metadata (loaded with lc.data)"),
        ])

    def plot(self, **kwargs: Any):
        """Plot this light curve against time (magnitudes on an inverted axis, or flux).

        Keyword arguments (``ax``, ``filename``) go to
        :func:`skyretriever.plots.plot_lightcurve`; returns the Figure.

        Examples
        --------
        >>> fig = lightcurve.plot(filename="lightcurve.png")            # doctest: +SKIP
        """
        return drawing.draw("lightcurve", self, **kwargs)


_MISSIONS = {"tess": "TESS", "tessffi": "TESS", "kepler": "Kepler", "k2": "K2", "ztf": "ZTF"}
_LIGHTKURVE_CLASSES = {"tess": "TessLightCurve", "tessffi": "TessLightCurve", "kepler": "KeplerLightCurve",
                       "k2": "KeplerLightCurve"}


def _mean_and_rms(mean: float | None, rms: float | None, spec: str, unit: str) -> str | None:
    mean_text = rounded(mean, spec)
    if mean_text is None:
        return None
    rms_text = rounded(rms, spec)
    return f"{mean_text} {unit}" + (f", rms {rms_text}" if rms_text is not None else "")


def save_lightcurves(lightcurves: Iterable[Lightcurve]) -> None:
    """Write light curves to their reduced files, one file per (source, observatory), each
    light curve a part of the file's one table (:func:`~skyretriever.storage.write_table_parts`).

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
        info = storage.write_table_parts(filename, tables)
        for lc in group:
            lc.checksum, lc.file_size, lc.file_mtime_ns = info.checksum, info.file_size, info.mtime_ns


# How the report, `skyretriever show` and the reprs label these columns (see models.display).
describe_columns(RawPhotometry, {
    "is_empty": shown("empty"),
    "num_points": shown("epochs"),
    "time_start": shown("start", "MJD", ".4f"),
    "time_end": shown("end", "MJD", ".4f"),
})
describe_columns(Lightcurve, {
    "series_number": shown("series"),
    "is_simulated": shown("simulated"),
    "num_points": shown("epochs"),
    "num_good_points": shown("good epochs"),
    "time_start": shown("start", "MJD", ".4f"),
    "time_end": shown("end", "MJD", ".4f"),
    "exptime": shown("exposure", "s", ".4g"),
    "mag_mean": shown("mean magnitude", "mag", ".3f"),
    "mag_rms": shown("magnitude rms", "mag", ".4f"),
})
