"""VirtualObservatory: download one source's photometry and reduce it to light curves.

A subclass names the observatory (``name``), declares its parameters, and
implements :meth:`VirtualObservatory.download_from_observatory` (what the
archive has for one catalog row, as a table and provenance) and, where the
archive's columns differ from the standard ones, :meth:`standardize`.
Archives that answer many sources in one query override
:meth:`prepare_download`, which the pipeline calls once per batch of rows
before the per-source downloads. A subclass lists in ``download_parameters``
the parameters that change what is downloaded: their hash
(:attr:`VirtualObservatory.download_hash`), with the target's cross-ids and
position, decides which raw data a source may reuse
(:meth:`VirtualObservatory.raw_mismatch`).

The standard reduced columns are ``mjd, flux, flux_err, mag, mag_err, filter,
quality, qflag, exptime``; observatories may add more (BJD times, centroids).
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from skyretriever import storage
from skyretriever.catalogs.catalog import CROSS_ID_COLUMNS
from skyretriever.database import SmartSession
from skyretriever.models.datasets import (
    SUMMARY_COLUMNS,
    Lightcurve,
    RawPhotometry,
    lightcurve_summaries,
    target_key,
)
from skyretriever.models.raw import RawData, raw_data_class
from skyretriever.parameters import ParameterError, Parameters, parameter, unknown_key_message

__all__ = [
    "OBSERVATORIES",
    "ObservatoryParameters",
    "ProjectContext",
    "ReducerParameters",
    "VirtualObservatory",
    "observatory_class",
    "raw_identity_filter",
    "register_observatory",
]

log = logging.getLogger(__name__)

STANDARD_LIGHTCURVE_COLUMNS = (
    "mjd", "flux", "flux_err", "mag", "mag_err", "filter", "quality", "qflag", "exptime",
)
AB_ZEROPOINT_MICROJANSKY = 23.9


class ReducerParameters(Parameters):
    """How raw photometry is split into light curves."""

    gap: float = parameter(
        40.0, "Split a series where consecutive epochs are further apart than this (days).", gt=0
    )
    min_points: int = parameter(1, "Drop series with fewer epochs than this.", ge=1)


class ObservatoryParameters(Parameters):
    """Parameters every observatory has."""

    reducer: ReducerParameters = parameter(
        default_factory=ReducerParameters, doc="How raw photometry is split into light curves."
    )
    quality_bitmask: int | str = parameter(
        "default",
        "Quality bits that set qflag: a named preset (none, default, hard, hardest) or an integer.",
    )
    download_batch_size: int = parameter(
        200, "Sources per batch query to the archive.", critical=False, ge=1
    )
    download_workers: int = parameter(
        4, "Downloads in flight at once for this observatory (be polite to archives).",
        critical=False, ge=1,
    )
    same_target_radius: float = parameter(
        2.0, "Largest distance (arcsec) between a source's catalog position and the position "
        "raw data was downloaded for, for that raw data to be reused for the source (with the "
        "same name, download parameters and no disagreeing cross-id).", critical=False, gt=0,
    )


@dataclass(frozen=True)
class ProjectContext:
    """What an observatory needs to know of the project it works for."""

    name: str
    cfg_hash: str
    folder: str

    @classmethod
    def standalone(cls) -> ProjectContext:
        return cls(name="standalone", cfg_hash="", folder="STANDALONE")


OBSERVATORIES: dict[str, type[VirtualObservatory]] = {}


def register_observatory(cls: type[VirtualObservatory]) -> type[VirtualObservatory]:
    """Class decorator: make an observatory available by its (case-insensitive) name."""
    OBSERVATORIES[cls.name.lower()] = cls
    return cls


def observatory_class(name: str) -> type[VirtualObservatory]:
    """The observatory class for a name such as ``'TESS'`` or ``'demo'`` (any case)."""
    _import_builtin_observatories()
    try:
        return OBSERVATORIES[name.lower()]
    except KeyError:
        raise ParameterError(
            "obs_names: " + unknown_key_message(name, OBSERVATORIES, "observatory")
        ) from None


def _import_builtin_observatories() -> None:
    import importlib

    for module in ("demo", "tess", "k2", "kepler", "ztf", "tessffi", "aia"):
        try:
            importlib.import_module(f"skyretriever.observatories.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"skyretriever.observatories.{module}":
                raise


#: Rows from which reduction gathers each light curve's columns (see ``lightcurves_from_frame``):
#: the demo's 400-row tables reduce in 2.2 ms by slices, 3.9 by gathering; a 40,000-row TESS
#: table in about 7 ms by gathering, 10 by slices.
_GATHER_ROWS = 5_000


def _gathered(column: pd.Series, rows: np.ndarray) -> Any:
    """The values of ``column`` at positions ``rows``, a new array of the column's own dtype."""
    if isinstance(column.dtype, np.dtype):
        return column.to_numpy()[rows]
    return column.array.take(rows)


class VirtualObservatory(abc.ABC):
    """Base of every observatory: download, standardise and reduce one source at a time.

    Parameters
    ----------
    pars
        Parameters object, or ``None`` to build one from ``kwargs``.
    context
        The project the products belong to (set by :class:`~skyretriever.Project`).
    **kwargs
        Parameter values.
    """

    name: ClassVar[str] = ""
    Parameters: ClassVar[type[ObservatoryParameters]] = ObservatoryParameters
    QUALITY_PRESETS: ClassVar[dict[str, int]] = {
        "none": 0, "default": 0xFFFFFFFF, "hard": 0xFFFFFFFF, "hardest": 0xFFFFFFFF,
    }
    #: Columns (besides gaps in time) along which raw data is split into series.
    split_columns: ClassVar[tuple[str, ...]] = ("filter",)
    #: Parameters that change what is downloaded (hashed into :attr:`download_hash`);
    #: how the archive is reached (URLs, retries, workers) and how raw data is reduced
    #: do not count.
    download_parameters: ClassVar[tuple[str, ...]] = ()
    #: The kind of raw data this observatory downloads: picks the raw-data table
    #: (:func:`skyretriever.models.raw_data_class`) and the analysis step
    #: (``Analysis.analyze_<data_type>``).
    data_type: ClassVar[str] = "photometry"

    def __init__(self, pars: ObservatoryParameters | None = None,
                 context: ProjectContext | None = None, **kwargs: Any) -> None:
        if pars is None:
            pars = self.Parameters.build(kwargs, where=f"observatories.{self.name}")
        elif kwargs:
            pars = self.Parameters.build(pars.model_dump(), kwargs, where=f"observatories.{self.name}")
        self.pars = pars
        self._context = context or ProjectContext.standalone()
        self.project = None
        self.quality_mask  # noqa: B018 - validate the mask now, not in the middle of a run

    @property
    def context(self) -> ProjectContext:
        """The project the products belong to (its name, config hash and folder)."""
        return self.project.context if self.project is not None else self._context

    @context.setter
    def context(self, value: ProjectContext) -> None:
        self._context = value

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes get a copy without the project (and its database state),
        # holding the project's context as it is now.
        state = dict(self.__dict__)
        state["_context"] = self.context
        state["project"] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(project={self.context.name!r})"

    @property
    def quality_mask(self) -> int:
        """The quality bits that set ``qflag``, resolved from a preset name or an integer."""
        value = self.pars.quality_bitmask
        if isinstance(value, int):
            if value < 0:
                raise ParameterError(f"observatories.{self.name}.quality_bitmask must be >= 0")
            return value
        if value not in self.QUALITY_PRESETS:
            raise ParameterError(
                f"observatories.{self.name}.quality_bitmask: "
                + unknown_key_message(value, self.QUALITY_PRESETS, "preset")
            )
        return self.QUALITY_PRESETS[value]

    # -- raw data identity -----------------------------------------------------------------
    def download_settings(self) -> dict[str, Any]:
        """The values of :attr:`download_parameters`, as JSON-able values."""
        values = self.pars.model_dump(mode="json")
        return {name: values[name] for name in self.download_parameters}

    @property
    def download_hash(self) -> str:
        """Short hex SHA-256 of the observatory and its download parameters (canonical JSON).

        Raw data downloaded with another hash is never reused for this observatory.

        Examples
        --------
        >>> from skyretriever.observatories.demo import VirtualDemoObs
        >>> VirtualDemoObs(filters=["g"]).download_hash != VirtualDemoObs().download_hash
        True
        >>> VirtualDemoObs(wait_time=1).download_hash == VirtualDemoObs().download_hash
        True
        """
        # Asked for every source of a run: computed again only when a parameter changed.
        key = repr([getattr(self.pars, name) for name in self.download_parameters])
        cached = self.__dict__.get("_download_hash")
        if cached is not None and cached[0] == key:
            return cached[1]
        text = json.dumps({"observatory": self.name, "parameters": self.download_settings()},
                          sort_keys=True, separators=(",", ":"))
        value = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.__dict__["_download_hash"] = (key, value)
        return value

    @staticmethod
    def cross_ids(cat_row: dict[str, Any]) -> dict[str, Any]:
        """The catalog row's cross-ids that are set (``tic_id``, ``gaia_id``...)."""
        found = {}
        for column in CROSS_ID_COLUMNS:
            value = cat_row.get(column)
            if value is None or (isinstance(value, float) and not np.isfinite(value)):
                continue
            if isinstance(value, (np.integer, np.floating)):
                value = value.item()
            found[column] = int(value) if isinstance(value, float) and value.is_integer() else value
        return found

    def raw_identity(self, cat_row: dict[str, Any]) -> dict[str, Any]:
        """The identity columns of this observatory's raw data of one catalog row."""
        ra, dec = float(cat_row["ra"]), float(cat_row["dec"])
        cross_ids = self.cross_ids(cat_row)
        return {"download_hash": self.download_hash, "cross_ids": cross_ids,
                "target_key": target_key(cross_ids, ra, dec)}

    def raw_mismatch(self, values: dict[str, Any], cat_row: dict[str, Any]) -> str | None:
        """Why raw data (row or file values) is not this catalog row's target and download.

        ``None`` when it may be reused: the same name, observatory and download
        hash, a position within ``same_target_radius`` and no cross-id that disagrees.
        """
        if values.get("source_name") != cat_row["name"]:
            return f"another source name ({values.get('source_name')!r})"
        if values.get("observatory") != self.name:
            return f"another observatory ({values.get('observatory')!r})"
        return RawData.matches(values, self.download_hash, float(cat_row["ra"]),
                                     float(cat_row["dec"]), self.cross_ids(cat_row),
                                     self.pars.same_target_radius)

    # -- downloading -----------------------------------------------------------------------
    def begin_run(self) -> None:  # noqa: B027
        """Called once as a run starts: forget what the archive may have changed since the
        last run (a listing kept in memory...). The default does nothing."""

    def prepare_download(self, cat_rows: list[dict[str, Any]]) -> None:  # noqa: B027
        """Called once per batch of rows before their downloads; batch archive queries go here.

        The default does nothing.
        """

    @abc.abstractmethod
    def download_from_observatory(self, cat_row: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        """Everything the archive has for one catalog row: a table (empty if nothing) and provenance."""

    def fetch(self, cat_row: dict[str, Any]) -> Any:
        """The I/O half of a download, run on a download thread; its result must pickle.

        The default calls :meth:`download_from_observatory`. Observatories whose
        archives send files that take CPU to read (FITS) override this to only
        fetch the files, and :meth:`parse` to read them in a worker process, so
        download threads never hold the interpreter with parsing.
        """
        return self.download_from_observatory(cat_row)

    def parse(self, fetched: Any) -> tuple[pd.DataFrame, dict]:
        """The CPU half of a download, run in a worker process: ``fetch``'s result to (table, provenance)."""
        return fetched

    def source_files(self, fetched: Any, altdata: dict[str, Any]
                     ) -> tuple[str, list[tuple[str, bytes]], dict[str, Any]] | None:
        """The archive's files :meth:`parse` read the table from, to keep as the raw data.

        ``None`` (the default) keeps the table. An observatory whose archive sends
        files worth keeping as they came (MAST's FITS light curves: storing them costs
        a copy of their bytes, storing the table costs converting and compressing
        every column) returns ``(reader, files, options)`` for
        :meth:`~skyretriever.models.RawPhotometry.keep_source_files`.
        """
        return None

    def raw_from_download(self, fetched: Any, cat_row: dict[str, Any]) -> RawData:
        """The (unsaved) raw-data object of a :meth:`fetch` result, read by :meth:`parse`
        (its summaries are filled when it is saved)."""
        frame, altdata = self.parse(fetched)
        if frame is None:
            frame = pd.DataFrame()
        raw = self.raw_class(
            data=frame,
            source_name=str(cat_row["name"]),
            observatory=self.name,
            ra=float(cat_row["ra"]),
            dec=float(cat_row["dec"]),
            altdata=altdata or {},
            is_empty=len(frame) == 0,
            **self.raw_identity(cat_row),
        )
        if len(frame):
            kept = self.source_files(fetched, altdata or {})
            if kept is not None:
                raw.keep_source_files(*kept)
        return raw

    @property
    def raw_class(self) -> type[RawData]:
        """The raw-data table of this observatory's :attr:`data_type`."""
        return raw_data_class(self.data_type)

    def download(self, cat_row: dict[str, Any]) -> RawData:
        """Download one source into an (unsaved) raw-data object of this data type."""
        raw = self.raw_from_download(self.fetch(cat_row), cat_row)
        raw.compute_summaries()
        return raw

    # -- reducing --------------------------------------------------------------------------
    def standardize(self, frame: pd.DataFrame, altdata: dict[str, Any]) -> pd.DataFrame:
        """Raw table to standard columns; fills ``mag`` from ``flux`` (AB, microjansky) or back.

        Observatories whose archives use other columns override this.
        """
        result = frame.copy()
        if "mag" not in result and "flux" in result:
            flux = result["flux"].to_numpy(dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                result["mag"] = AB_ZEROPOINT_MICROJANSKY - 2.5 * np.log10(flux)
                result["mag_err"] = 2.5 / np.log(10) * result["flux_err"].to_numpy(float) / flux
        if "flux" not in result and "mag" in result:
            mag = result["mag"].to_numpy(dtype=float)
            result["flux"] = 10 ** (-0.4 * (mag - AB_ZEROPOINT_MICROJANSKY))
            if "mag_err" in result:
                result["flux_err"] = result["flux"] * result["mag_err"].to_numpy(float) * np.log(10) / 2.5
        if "quality" not in result:
            result["quality"] = np.zeros(len(result), dtype=np.int64)
        if "filter" not in result:
            result["filter"] = self.name
        return result

    def fetch_additions(self, cat_row: dict[str, Any], raw_values: dict[str, Any]) -> Any | None:
        """What the archive now has that an intact raw product (``raw_values``) lacks, fetched
        and merged with what it holds, as :meth:`fetch` returns it; ``None`` when nothing.

        Asked by the pipeline's I/O stage for every source whose raw data exist,
        before it is skipped; what it returns is written in place of the product
        (atomically, the same file name and row) and the source is reduced and
        analysed again. The default: raw data are complete once downloaded
        (photometry is never topped up).
        """
        return None

    def products_current(self, raw_values: dict[str, Any]) -> bool | None:
        """Whether the reduced products of a raw row are made and current, for an observatory
        whose products are files it writes itself (not light curves).

        ``None`` (the default) means its products are light curves, which the
        pipeline checks against their rows. A source whose raw data is intact and
        whose products are current is skipped by a later run: nothing is reduced,
        analysed or written again.
        """
        return None

    def reduce(self, raw: RawPhotometry, data_type: str = "photometry",
               source: Any = None) -> list[Lightcurve]:
        """Reduce raw data to light curves: standard columns, ``qflag``, split and numbered.

        The raw table is split by ``split_columns`` (the filter, by default) and
        wherever consecutive epochs are more than ``reducer.gap`` days apart; the
        pieces are numbered 1 to N by start time. The raw data is not changed.

        Returns
        -------
        list of Lightcurve
            Unsaved light curves with ``filename`` and ``key`` set; save them
            together with :func:`~skyretriever.models.save_lightcurves`.

        Examples
        --------
        >>> from skyretriever.observatories.demo import VirtualDemoObs
        >>> obs = VirtualDemoObs(empty_fraction=0)
        >>> raw = obs.download({"name": "star", "ra": 10.0, "dec": 5.0, "mag": 15.0})
        >>> [lc.filter for lc in obs.reduce(raw)][:2]
        ['g', 'r']
        """
        if data_type != self.data_type:
            raise ValueError(f"{self.name} reduces {self.data_type}, not {data_type!r}")
        if raw.is_empty or raw.data is None or len(raw.data) == 0:
            return []
        return self.lightcurves_from_frame(self.standardize(raw.data, raw.altdata or {}), raw)

    def lightcurves_from_frame(self, frame: pd.DataFrame, raw: RawData) -> list[Lightcurve]:
        """Light curves of a table of standard columns made from ``raw``: ``qflag``, split, numbered.

        What :meth:`reduce` does after :meth:`standardize`; observatories of other
        data types (image cutouts) call it on the photometry they make.
        """
        # Each light curve gets its own units: none are deep-copied into every slice meanwhile.
        frame.attrs = {}
        quality = frame["quality"].to_numpy(dtype=np.int64)
        frame["qflag"] = (quality & self.quality_mask) != 0
        order, bounds = self._split(frame)
        total = len(bounds)
        folder = self.context.folder
        filename = storage.reduced_filename(folder, self.name, raw.source_name, raw.ra,
                                            self.data_type)
        # A large table's columns are gathered in series order once (a copy: no light curve
        # shares memory with the raw data) and each light curve takes its rows of them, left
        # as columns (pandas would copy them again into one block). A small table is
        # reordered once and sliced, where pandas' cost per column is less.
        large = len(order) >= _GATHER_ROWS
        ordered = frame if large else frame.take(order)
        columns = {name: _gathered(frame[name], order) if large else ordered[name].to_numpy()
                   for name in frame.columns
                   if large or name in SUMMARY_COLUMNS or name == "filter"}
        filters = np.asarray(columns["filter"]) if "filter" in columns else None
        lightcurves = []
        for number, (start, stop) in enumerate(bounds, start=1):
            if large:
                data = pd.DataFrame({name: values[start:stop] for name, values in columns.items()},
                                    copy=False)
            else:
                data = ordered.iloc[start:stop].reset_index(drop=True)
            summaries = lightcurve_summaries({c: columns[c][start:stop] for c in SUMMARY_COLUMNS
                                              if c in columns})
            band = None
            if filters is not None and (filters[start:stop] == filters[start]).all():
                band = str(filters[start])
            lc = Lightcurve(
                observatory=self.name,
                filter=band,
                series_number=number,
                series_total=total,
                was_processed=True,
                is_simulated=False,
                project=self.context.name,
                cfg_hash=self.context.cfg_hash,
                filename=filename,
                key=storage.reduction_key(raw.source_name, number, total),
                **summaries,
            )
            lc.data = data
            lc._metadata = {
                "source_name": raw.source_name,
                "observatory": self.name,
                "project": self.context.name,
                "cfg_hash": self.context.cfg_hash,
                "series_number": number,
                "series_total": total,
                "filter": lc.filter,
                "raw_checksum": raw.checksum,
            }
            lightcurves.append(lc)
        for lc in lightcurves:
            lc.siblings = lightcurves
        return lightcurves

    def _split(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Order the epochs for splitting and find the series in them.

        Returns the rows of the epochs with a finite time, ordered by
        ``split_columns`` then time, and the ``(start, stop)`` places in that
        order of each series (split by those columns and by time gaps), numbered
        by start time.
        """
        times = frame["mjd"].to_numpy(dtype=float)
        codes = np.zeros(len(frame), dtype=np.int64)
        for column in (c for c in self.split_columns if c in frame):
            column_codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
            codes = codes * max(len(uniques), 1) + column_codes
        valid = np.flatnonzero(np.isfinite(times))
        order = valid[np.lexsort((times[valid], codes[valid]))]
        ordered_times, ordered_codes = times[order], codes[order]
        breaks = np.flatnonzero(
            (np.diff(ordered_codes) != 0) | (np.diff(ordered_times) > self.pars.reducer.gap)
        ) + 1
        bounds = [(int(a), int(b)) for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(order)])
                  if b - a >= self.pars.reducer.min_points]
        # Number the series by start time (codes break ties, so the order is deterministic).
        bounds.sort(key=lambda ab: (ordered_times[ab[0]], ordered_codes[ab[0]]))
        return order, bounds

    # -- whole sources ---------------------------------------------------------------------
    def fetch_source(self, cat_row: dict[str, Any], save: bool = True, reduce: bool = True):
        """Download (and reduce) one catalog row.

        With ``save=True`` this goes through the project's pipeline: files are
        written, rows committed, and data already on disk is reused. With
        ``save=False`` nothing is written and ``(raw, lightcurves)`` is returned.
        """
        if not save:
            raw = self.download(cat_row)
            return raw, (self.reduce(raw) if reduce else [])
        project = self._require_project("fetch_source")
        return project.run(rows=[cat_row], obs_names=[self.name], analyze=False, reduce=reduce)

    def fetch_all_sources(self, start: int = 0, stop: int | None = None, save: bool = True,
                          reduce: bool = True):
        """Download (and reduce) catalog rows ``start`` to ``stop`` of the project's catalog.

        With ``save=True`` returns the run summary; with ``save=False`` a list of
        ``(raw, lightcurves)`` pairs kept in memory.
        """
        project = self._require_project("fetch_all_sources")
        if not save:
            rows = project.catalog.get_rows(start, stop)
            return [self.fetch_source(row, save=False, reduce=reduce) for row in rows]
        return project.run(start=start, stop=stop, obs_names=[self.name], analyze=False,
                           reduce=reduce)

    def _require_project(self, what: str):
        if self.project is None:
            raise RuntimeError(
                f"{type(self).__name__}.{what} with save=True needs a project: use "
                "Project(...).observatories[name], or pass save=False"
            )
        return self.project

    def populate_sources(self, session=None) -> int:
        """Make raw-data rows for raw files on disk that have none; returns how many.

        The files are those :func:`skyretriever.storage.raw_files` finds (named as
        raw files of this observatory, never reached through a symbolic link), as
        ``skyretriever check --repair`` re-links them.

        Each raw file records its source's name, position, cross-ids and download
        hash, so rows lost (or never committed after a crash) are rebuilt without
        downloading again; a row of the same identity is brought up to date.
        """
        model = self.raw_class
        files = storage.raw_files(self.name, data_type=self.data_type)
        if not files:
            return 0
        made = 0
        with SmartSession(session) as session:
            known = set(session.scalars(
                sa.select(model.filename).where(model.observatory == self.name)
            ))
            for relative in files:
                if relative in known:
                    continue
                raw = model.from_file(relative)
                if raw is None or raw.observatory != self.name:
                    log.warning("skipping unreadable raw file %s", storage.data_root() / relative)
                    continue
                values = raw.column_values()
                exists = session.scalar(sa.select(model.id).where(
                    *raw_identity_filter(values, model)))
                if exists is not None:
                    row = session.get(model, exists)
                    row.update_from(values)
                else:
                    session.add(model(**values))
                made += 1
            session.commit()
        return made


def raw_identity_filter(values: dict[str, Any], model: type[RawData] = RawPhotometry) -> tuple:
    """SQL conditions selecting the raw row of the identity in ``values`` (its unique key)."""
    download_hash = values.get("download_hash")
    return (
        model.source_name == values["source_name"],
        model.observatory == values["observatory"],
        model.download_hash.is_(None) if download_hash is None
        else model.download_hash == download_hash,
        model.target_key == (values.get("target_key") or ""),
    )
