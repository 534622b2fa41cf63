"""The work on one batch of sources: plan, download, reduce and analyse, then write.

A run goes through the catalog in batches. For each batch the driver:

1. **plans** it with one query per table (which sources are done, which raw
   data and light curves exist);
2. **downloads** what is missing (I/O, on threads; an observatory may first
   query its archive for the whole batch in :meth:`prepare_download`), reusing
   intact files already on disk;
3. **reduces and analyses** (CPU, in worker processes), reusing light curves
   whose files are intact;
4. **writes** every row of the batch in one transaction, with the batch's
   histogram counts, and commits once.

Files are always written (atomically) before the rows that point at them are
committed, so a kill at any moment leaves either nothing or a complete file
that the next run adopts instead of downloading again. A failure on one source
is recorded on that source and the batch goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import orm

from skyretriever import queries, storage
from skyretriever.analysis.analysis import Analysis, AnalysisResult
from skyretriever.analysis.histogram import SparseCounts, add_sparse
from skyretriever.catalogs.catalog import CROSS_ID_COLUMNS
from skyretriever.errors import (
    DiskFull,
    RunStopped,
    free_megabytes,
    is_disk_full,
    is_infrastructure_error,
)
from skyretriever.healpix import healpix_index
from skyretriever.models import Lightcurve, RawData, RawPhotometry, save_lightcurves
from skyretriever.models.base import plain_value, utcnow
from skyretriever.models.raw import raw_file_identity
from skyretriever.observatories.base import ProjectContext, VirtualObservatory

__all__ = [
    "SourceResult",
    "SourceTask",
    "Worker",
    "plan_batch",
    "write_batch",
]

log = logging.getLogger(__name__)

LIGHTCURVE_VALUE_COLUMNS = ("project", "cfg_hash", "observatory", "filter", "series_number",
                            "series_total", "was_processed", "is_simulated", "num_points",
                            "num_good_points", "time_start", "time_end", "exptime", "mag_mean",
                            "mag_rms", "flux_mean", "flux_rms", "filename", "key", "checksum",
                            "file_size", "file_mtime_ns")
_MAX_ERROR_LENGTH = 2000


def _error_text(step: str, observatory: str | None, error: BaseException) -> str:
    where = f"{step} ({observatory})" if observatory else step
    text = f"{where}: {type(error).__name__}: {error}"
    return text[:_MAX_ERROR_LENGTH]


@dataclass
class SourceTask:
    """One source of a batch: its catalog row and what the database already holds for it."""

    row: dict[str, Any]
    source_id: int | None = None
    status: str | None = None
    counted: bool = False
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    lightcurves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    analyzed: bool = False
    raw_new: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Tables just downloaded or adopted, handed to the CPU stage so it need not read them again.
    raw_frames: dict[str, Any] = field(default_factory=dict)
    #: What the I/O stage fetched (``obs.fetch``), parsed and written by the CPU stage.
    downloads: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    downloaded: int = 0
    skip: bool = False
    #: Whether files are checked by SHA-256 even when their size and time are unchanged.
    full_checks: bool = False
    #: Files found intact under a new modification time: (table, row id, time) to record.
    new_times: list[tuple[str, int, int]] = field(default_factory=list)
    #: Observatories whose raw row of this name predates download hashes (not reused).
    legacy_raw: int = 0

    @property
    def name(self) -> str:
        return self.row["name"]

    def current_raw(self, observatory: str) -> dict[str, Any] | None:
        return self.raw_new.get(observatory) or self.raw.get(observatory)


@dataclass
class SourceResult:
    """What the work on one source produced, as plain values for the driver to write."""

    row: dict[str, Any]
    raw_new: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Whether the source's histogram counts were already added (they are added only once).
    counted: bool = False
    lightcurves_new: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    analysis: AnalysisResult | None = None
    status: str = "new"
    error: str | None = None
    skipped: bool = False
    downloaded: int = 0
    reduced: int = 0
    empty: bool = False
    kept_lightcurves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (observatory, series number) of each light curve, in the order the analysis saw them.
    analysed_keys: list[tuple[str, int]] = field(default_factory=list)
    #: Files found intact under a new modification time: (table, row id, time) to record.
    new_times: list[tuple[str, int, int]] = field(default_factory=list)
    #: The failure came from the machine (permissions, I/O), not from the source: the driver
    #: stops the run after a few of these in a row.
    infrastructure_error: bool = False
    #: Ids of the existing raw rows the source uses, by observatory (new ones are in raw_new).
    raw_ids: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.row["name"]


# -- 1. planning ---------------------------------------------------------------------------
def _choose_raw(candidates: list[dict[str, Any]], obs: VirtualObservatory,
                task: SourceTask) -> dict[str, Any] | None:
    """The raw row of this source's target and download among those of its name, if any.

    Rows of another star of the same name, or of other download parameters, are
    not it; rows made before download hashes were recorded are never reused.
    """
    key = obs.raw_identity(task.row)["target_key"]
    matching = [values for values in candidates if obs.raw_mismatch(values, task.row) is None]
    if not matching:
        task.legacy_raw += any(values.get("download_hash") is None for values in candidates)
        return None
    # The product made for exactly this row first, then the newest.
    return max(matching, key=lambda values: (values["target_key"] == key, values["id"]))


def plan_batch(session: orm.Session, rows: list[dict[str, Any]], context: ProjectContext,
               observatories: list[VirtualObservatory], full_checks: bool = False
               ) -> list[SourceTask]:
    """What exists for each row of a batch: one query per table, not one per source.

    A row's raw data is the row of its name whose target and download match
    (:meth:`VirtualObservatory.raw_mismatch`); ``full_checks`` makes the later
    stages hash every existing file, not only those whose size or modification
    time changed.
    """
    tasks = {row["name"]: SourceTask(row=row, full_checks=full_checks) for row in rows}
    by_name = {obs.name: obs for obs in observatories}
    by_model: dict[type[RawData], list[str]] = {}     # observatories by raw-data table
    for obs in by_name.values():
        by_model.setdefault(obs.raw_class, []).append(obs.name)
    candidates: dict[tuple[str, str], list[dict[str, Any]]] = {}
    names = list(tasks)
    for chunk in queries.chunks(names):
        for source_id, name, status, counted in queries.source_states(session, context, chunk):
            tasks[name].source_id, tasks[name].status = source_id, status
            tasks[name].counted = counted
        for model, observatory_names in by_model.items():
            for values in queries.raw_rows_for(session, chunk, observatory_names, model):
                candidates.setdefault((values["source_name"], values["observatory"]),
                                      []).append(values)
    for (name, observatory), found in candidates.items():
        chosen = _choose_raw(found, by_name[observatory], tasks[name])
        if chosen is not None:
            tasks[name].raw[observatory] = chosen
    by_id = {task.source_id: task for task in tasks.values() if task.source_id is not None}
    for chunk in queries.chunks(list(by_id)):
        for values in queries.processed_lightcurve_states(session, chunk, list(by_name)):
            task = by_id[values["source_id"]]
            task.lightcurves.setdefault(values["observatory"], []).append(values)
        for source_id in queries.analysed_source_ids(session, chunk):
            by_id[source_id].analyzed = True
    return [tasks[row["name"]] for row in rows]


# -- 2. downloading ------------------------------------------------------------------------
def _file_intact(values: dict[str, Any], table: str, task: SourceTask) -> bool:
    """Whether the file of a row (raw data or light curve) is intact; notes a new file time."""
    check = storage.check_file(storage.full_path(values["filename"]), values["checksum"],
                               values["file_size"], values.get("file_mtime_ns"),
                               full=task.full_checks)
    if check.new_mtime_ns is not None and values.get("id") is not None:
        task.new_times.append((table, values["id"], check.new_mtime_ns))
        values["file_mtime_ns"] = check.new_mtime_ns
    return check.intact


def _raw_intact(values: dict[str, Any], obs: VirtualObservatory, task: SourceTask) -> bool:
    if values.get("is_empty"):
        return True
    if not values.get("filename"):
        return False
    return _file_intact(values, obs.raw_class.__tablename__, task)


def _lightcurves_intact(states: list[dict[str, Any]], task: SourceTask) -> bool:
    times: dict[str, int | None] = {}      # file -> its time as now recorded
    for state in states:
        filename = state["filename"]
        if filename not in times:
            if not filename or not _file_intact(state, "lightcurves", task):
                return False
            times[filename] = state.get("file_mtime_ns")
        elif state.get("file_mtime_ns") != times[filename] and state.get("id") is not None:
            # Rows sharing a file found under a new time record it too (read once).
            task.new_times.append(("lightcurves", state["id"], times[filename]))
            state["file_mtime_ns"] = times[filename]
    return True


def _products_intact(obs: VirtualObservatory, task: SourceTask) -> bool:
    """Whether a done source's reduced products of one observatory are all there and intact."""
    raw = task.raw[obs.name]
    own = obs.products_current(raw)         # products that are the observatory's own files
    if own is not None:
        return own
    kept = task.lightcurves.get(obs.name, [])
    return _lightcurves_intact(kept, task) and bool(raw["is_empty"] or kept)


def download_source(task: SourceTask, observatories: list[VirtualObservatory],
                    reduce: bool = True) -> SourceTask:
    """Get every observatory's raw data for one source (I/O stage, on a thread).

    Intact raw files are kept; a complete file on disk without a row (left by
    a run that was killed before committing) is adopted; a file that no longer
    matches its row is downloaded again; anything else is
    downloaded into memory, for the CPU stage to write. A source already done
    whose every file is intact is marked ``skip`` and goes no further.
    """
    intact = {obs.name: obs.name in task.raw and _raw_intact(task.raw[obs.name], obs, task)
              for obs in observatories}
    for obs in observatories:
        if intact[obs.name]:
            _fetch_additions(task, obs)
    if task.status == "done" and all(intact.values()) and not task.downloads and not task.errors:
        if not reduce or all(_products_intact(obs, task) for obs in observatories):
            task.skip = True
            return task
    for obs in observatories:
        existing = task.raw.get(obs.name)
        if intact[obs.name]:
            continue
        try:
            identity = obs.raw_identity(task.row)
            relative = storage.raw_filename(
                obs.name, task.name, task.row["ra"],
                raw_file_identity(identity["download_hash"], identity["target_key"]),
                data_type=obs.data_type)
            # Only a file without a row is adopted: one that no longer matches its row is
            # damaged; and only one recorded for this target and download.
            on_disk = storage.raw_file_on_disk(relative) if existing is None else None
            adopted = obs.raw_class.from_file(on_disk) if on_disk is not None else None
            values = None if adopted is None else adopted.column_values()
            if values is not None and obs.raw_mismatch(values, task.row) is None:
                task.raw_new[obs.name], task.raw_frames[obs.name] = values, adopted.data
                continue
            task.downloads[obs.name] = obs.fetch(task.row)
            task.downloaded += 1
        except Exception as error:  # one source's failure must not stop the run
            log.debug("download failed for %s (%s)", task.name, obs.name, exc_info=True)
            task.errors.append(_error_text("download", obs.name, error))
    return task


def _fetch_additions(task: SourceTask, obs: VirtualObservatory) -> None:
    """Fetch what the archive added to an intact raw product (new TESS sectors...), merged
    with it, for the CPU stage to write in its place (:meth:`VirtualObservatory.fetch_additions`)."""
    try:
        merged = obs.fetch_additions(task.row, task.raw[obs.name])
    except Exception as error:  # the product stays as it is; the next run asks again
        log.debug("looking for additions failed for %s (%s)", task.name, obs.name, exc_info=True)
        task.errors.append(_error_text("download", obs.name, error))
        return
    if merged is not None:
        task.downloads[obs.name] = merged
        task.downloaded += 1


# -- 3. reducing and analysing -------------------------------------------------------------
def _lightcurve_values(lc: Lightcurve) -> dict[str, Any]:
    return {c: plain_value(getattr(lc, c)) for c in LIGHTCURVE_VALUE_COLUMNS}


def _lightcurve_from_state(state: dict[str, Any], context: ProjectContext) -> Lightcurve:
    lc = Lightcurve(
        **{c: state[c] for c in ("observatory", "filter", "series_number", "series_total",
                                 "filename", "key", "checksum", "file_size", "file_mtime_ns",
                                 "exptime",
                                 "mag_mean", "num_points", "num_good_points", "time_start",
                                 "time_end")},
        project=context.name, cfg_hash=context.cfg_hash,
    )
    return lc


class Worker:
    """The CPU stage, built once per worker process from the project's objects."""

    def __init__(self, context: ProjectContext, observatories: list[VirtualObservatory],
                 analysis: Analysis | None, data_root: str) -> None:
        self.context = context
        self.observatories = observatories
        self.analysis = analysis
        self.data_root = data_root
        #: What the analysis is given: a project's observatories share one data type.
        self.data_type = observatories[0].data_type if observatories else "photometry"
        #: The driver's HDF5 compression, carried to workers that did not inherit its
        #: environment (those of a Dask cluster started elsewhere).
        self.compression = storage.current_compression()

    def setup(self) -> None:
        """Point this process at the project's data root and the driver's compression (run
        in each worker process)."""
        storage.configure(self.data_root)
        storage.set_compression(self.compression)

    def _stop_on(self, error: Exception) -> None:
        """Raise what must stop the run (a full disk...) instead of failing one source."""
        if isinstance(error, RunStopped):
            raise error
        if is_disk_full(error):
            raise DiskFull(self.data_root, free_megabytes(self.data_root)) from error

    def _save_downloads(self, task: SourceTask) -> tuple[list[str], bool]:
        """Write the raw data the I/O stage downloaded; returns the errors, and whether one
        of them came from the machine (permissions, I/O) rather than from the data."""
        errors, infrastructure = [], False
        observatories = {obs.name: obs for obs in self.observatories}
        for name, fetched in task.downloads.items():
            try:
                raw = observatories[name].raw_from_download(fetched, task.row)
                raw.save()
                task.raw_new[name], task.raw_frames[name] = raw.column_values(), raw.data
            except Exception as error:  # one source's failure must not stop the run
                self._stop_on(error)
                log.debug("reading or saving raw data failed for %s (%s)", task.name, name,
                          exc_info=True)
                errors.append(_error_text("download", name, error))
                infrastructure |= is_infrastructure_error(error)
        task.downloads = {}
        return errors, infrastructure

    def process(self, task: SourceTask, reduce: bool = True, analyze: bool = True) -> SourceResult:
        """Reduce (where needed) and analyse one source; failures become the result's error."""
        result = SourceResult(row=task.row, raw_new=task.raw_new, downloaded=task.downloaded,
                              counted=task.counted, new_times=task.new_times,
                              raw_ids={obs: values["id"] for obs, values in task.raw.items()
                                       if values.get("id") is not None})
        if task.skip:
            result.skipped, result.status = True, "done"
            return result
        saving_errors, result.infrastructure_error = self._save_downloads(task)
        errors = list(task.errors) + saving_errors
        lightcurves: list[Lightcurve] = []
        changed = False
        for obs in self.observatories:
            raw_values = task.current_raw(obs.name)
            if raw_values is None or not reduce:
                continue
            try:
                kept = task.lightcurves.get(obs.name, [])
                if raw_values["is_empty"]:
                    if kept:
                        result.lightcurves_new[obs.name] = []
                        changed = True
                    continue
                if (obs.name not in task.raw_new and kept
                        and all(state["raw_id"] == raw_values.get("id") for state in kept)
                        and _lightcurves_intact(kept, task)):
                    result.kept_lightcurves[obs.name] = kept
                    for state in kept:
                        lightcurves.append(_lightcurve_from_state(state, self.context))
                        result.analysed_keys.append((obs.name, state["series_number"]))
                    continue
                raw = obs.raw_class(**{k: v for k, v in raw_values.items() if k != "id"})
                if obs.name in task.raw_frames:
                    raw.data = task.raw_frames[obs.name]
                else:
                    raw.load()
                reduced = obs.reduce(raw)
                if not all(isinstance(product, Lightcurve) for product in reduced):
                    # Products that are not light curves (AIA images...) are files the
                    # observatory wrote itself; the analysis gets them, the light-curve
                    # table does not. (FFI cutouts reduce to light curves, kept as such.)
                    result.reduced += len(reduced)
                    lightcurves += reduced
                    changed = True
                    continue
                save_lightcurves(reduced)
                result.lightcurves_new[obs.name] = [_lightcurve_values(lc) for lc in reduced]
                result.reduced += len(reduced)
                lightcurves += reduced
                result.analysed_keys += [(obs.name, lc.series_number) for lc in reduced]
                changed = True
            except Exception as error:  # one source's failure must not stop the run
                self._stop_on(error)
                log.debug("reduction failed for %s (%s)", task.name, obs.name, exc_info=True)
                errors.append(_error_text("reduce", obs.name, error))
                result.infrastructure_error |= is_infrastructure_error(error)
        if errors:
            result.status, result.error = "failed", "; ".join(errors)[:_MAX_ERROR_LENGTH]
            return result
        result.empty = all(
            (task.current_raw(obs.name) or {}).get("is_empty") for obs in self.observatories
        )
        if not (reduce and analyze and self.analysis is not None):
            # Partial work (download or reduce only) never marks a source done.
            result.status = "done" if task.status == "done" and not changed else "new"
            return result
        if changed or not task.analyzed:
            try:
                result.analysis = self.analysis.analyze(self.data_type, lightcurves, task.row)
            except Exception as error:  # one source's failure must not stop the run
                self._stop_on(error)
                log.debug("analysis failed for %s", task.name, exc_info=True)
                result.status, result.error = "failed", _error_text("analysis", None, error)
                return result
        result.status = "done"
        return result


# -- 4. writing ----------------------------------------------------------------------------
def _utc_time(text: str) -> dt.datetime:
    """An ISO 8601 time as naive UTC (as the database stores times)."""
    time = dt.datetime.fromisoformat(text)
    return time.astimezone(dt.UTC).replace(tzinfo=None) if time.tzinfo else time


def _source_values(row: dict[str, Any], context: ProjectContext) -> dict[str, Any]:
    values = {
        "name": row["name"],
        "project": context.name,
        "cfg_hash": context.cfg_hash,
        "cat_index": row.get("cat_index"),
        "status": "new",
        "counted": False,
        "cat_extra": row.get("extra") or None,
    }
    for column in ("ra", "dec", "mag", "mag_err", "mag_filter", "pmra", "pmdec", *CROSS_ID_COLUMNS,
                   "hpc_x", "hpc_y"):
        values[column] = plain_value(row.get(column))
    values["frame"] = row.get("frame") or "icrs"
    for column in ("start_time", "end_time"):  # ISO text in catalogs, a time in the database
        value = row.get(column)
        values[column] = _utc_time(value) if isinstance(value, str) and value else None
    return values


@dataclass
class BatchWrite:
    """What one committed batch changed (for the run summary)."""

    histogram_batch_ids: list[int] = field(default_factory=list)
    statements: int = 0


def write_batch(session: orm.Session, results: list[SourceResult], context: ProjectContext,
                histogram_name: str | None,
                raw_classes: Mapping[str, type[RawData]] | None = None) -> BatchWrite:
    """Write every row of a batch in one transaction and commit once.

    Sources are inserted if new (ON CONFLICT DO NOTHING) and locked; raw rows
    are upserted; light curves, properties and detections of the sources that
    were redone replace the old ones; statuses and errors are updated; the
    batch's histogram counts are stored with it. ``raw_classes`` gives each
    observatory's raw-data model (``obs.raw_class``); photometry for any it
    does not name. Each table is written by its function of :mod:`skyretriever.queries`.
    """
    raw_classes = raw_classes or {}
    written = BatchWrite()
    work = [r for r in results if not r.skipped]
    new_times = [entry for r in results for entry in r.new_times]
    if not work and not new_times:
        return written
    batch = queries.BatchConnection(session)
    models = list(dict.fromkeys([*raw_classes.values(), RawPhotometry]))
    # files found intact under a new time (touched, copied): the next run need not read them
    queries.record_file_times(batch, new_times,
                              [*(model.__table__ for model in models), Lightcurve.__table__])
    if work:
        source_ids = _write_sources(batch, work, context)
        raw_ids = _write_raw_data(batch, work, source_ids, raw_classes)
        lightcurve_ids = _write_lightcurves(batch, work, source_ids, raw_ids)
        histogram_batch = _write_analysis(batch, work, context, source_ids, lightcurve_ids,
                                          histogram_name)
        if histogram_batch is not None:
            written.histogram_batch_ids.append(histogram_batch)
        queries.update_source_statuses(batch, [
            {"source_id": source_ids[r.name], "new_status": r.status, "new_error": r.error,
             "new_counted": r.counted, "modified": utcnow()} for r in work])
    written.statements = batch.statements
    session.commit()
    return written


def _write_sources(batch: queries.BatchConnection, work: list[SourceResult],
                   context: ProjectContext) -> dict[str, int]:
    """Insert the batch's new sources and lock them all; their ids by name.

    Each result's ``counted`` becomes the flag as committed now, not as planned.
    """
    sources = [_source_values(r.row, context) for r in work]
    pixels = healpix_index([v["ra"] for v in sources], [v["dec"] for v in sources])
    for values, pixel in zip(sources, pixels):
        values["healpix"] = int(pixel)
    queries.insert_sources(batch, sources)
    source_ids, counted = {}, {}
    for source_id, name, is_counted in queries.lock_sources(batch, context,
                                                            [r.name for r in work]):
        source_ids[name], counted[name] = source_id, is_counted
    for r in work:
        r.counted = counted[r.name]
    return source_ids


def _write_raw_data(batch: queries.BatchConnection, work: list[SourceResult],
                    source_ids: dict[str, int], raw_classes: Mapping[str, type[RawData]]
                    ) -> dict[tuple[str, str], int]:
    """Upsert the new raw rows (shared by projects) and link each source to its raw data.

    Returns the raw row id each source uses, by (source name, observatory).
    """
    by_model: dict[type[RawData], list[dict[str, Any]]] = {}
    for r in work:
        for obs, values in r.raw_new.items():
            by_model.setdefault(raw_classes.get(obs, RawPhotometry), []).append(values)
    identity_ids: dict[tuple, int] = {}
    for model, rows in by_model.items():
        identity_ids.update(queries.upsert_raw_rows(batch, rows, model))
    raw_ids: dict[tuple[str, str], int] = {}
    for r in work:
        for obs, raw_id in r.raw_ids.items():
            raw_ids[(r.name, obs)] = raw_id
        for obs, values in r.raw_new.items():
            raw_ids[(r.name, obs)] = identity_ids[tuple(values[c] for c in queries.RAW_IDENTITY)]
    links = [{"source_id": source_ids[name], "observatory": obs, "raw_id": raw_id}
             for (name, obs), raw_id in raw_ids.items()]
    if links:
        queries.upsert_raw_links(batch, links)
    return raw_ids


def _write_lightcurves(batch: queries.BatchConnection, work: list[SourceResult],
                       source_ids: dict[str, int], raw_ids: dict[tuple[str, str], int]
                       ) -> dict[tuple[str, str, int], int]:
    """Replace the light curves reduced again; the id of every light curve the analysis saw.

    Returns ids by (source name, observatory, series number), of new and kept light curves.
    """
    reduced: dict[str, list[int]] = {}
    for r in work:
        for obs in r.lightcurves_new:
            reduced.setdefault(obs, []).append(source_ids[r.name])
    rows = [
        dict(values, source_id=source_ids[r.name], raw_id=raw_ids.get((r.name, obs)))
        for r in work for obs, lightcurves in r.lightcurves_new.items() for values in lightcurves
    ]
    names_by_id = {source_id: name for name, source_id in source_ids.items()}
    lightcurve_ids = {(names_by_id[source_id], obs, number): lc_id
                      for (source_id, obs, number), lc_id
                      in queries.replace_lightcurves(batch, reduced, rows).items()}
    for r in work:
        for obs, states in r.kept_lightcurves.items():
            for state in states:
                lightcurve_ids[(r.name, obs, state["series_number"])] = state["id"]
    return lightcurve_ids


def _write_analysis(batch: queries.BatchConnection, work: list[SourceResult],
                    context: ProjectContext, source_ids: dict[str, int],
                    lightcurve_ids: dict[tuple[str, str, int], int], histogram_name: str | None
                    ) -> int | None:
    """Replace the properties and detections of the analysed sources; store the histogram counts.

    Light curves made again without analysis lose their old analysis, which no
    longer holds. Returns the id of the histogram batch stored, if any.
    """
    stale = [source_ids[r.name] for r in work if r.lightcurves_new and r.analysis is None]
    if stale:
        queries.delete_analysis(batch, stale)
    analysed = [r for r in work if r.analysis is not None]
    if not analysed:
        return None
    queries.delete_analysis(batch, [source_ids[r.name] for r in analysed])
    queries.insert_properties(batch, [
        {**{k: plain_value(v) for k, v in r.analysis.properties.items()},
         "source_id": source_ids[r.name], "project": context.name,
         "cfg_hash": context.cfg_hash}
        for r in analysed
    ])
    detection_rows = []
    for r in analysed:
        lightcurves = [(r.name, obs, number) for obs, number in r.analysed_keys]
        for detection in r.analysis.detections:
            values = {k: plain_value(v) for k, v in detection.items()
                      if k != "lightcurve_index"}
            index = detection.get("lightcurve_index")
            if index is not None:
                values["lightcurve_id"] = lightcurve_ids.get(lightcurves[index])
            values.update(source_id=source_ids[r.name], project=context.name,
                          cfg_hash=context.cfg_hash)
            detection_rows.append(values)
    if detection_rows:
        queries.insert_detections(batch, detection_rows)
    # A source adds to the histograms once: analysed again (after its files were
    # damaged) it gives the same counts, which are already there.
    uncounted = [r for r in analysed if not r.counted]
    if histogram_name is not None and uncounted:
        counts: SparseCounts = {}
        for r in uncounted:
            add_sparse(counts, r.analysis.histogram)
            r.counted = True
        return queries.insert_histogram_batch(
            batch, context, histogram_name, len(uncounted),
            {v: {str(i): n for i, n in cells.items()} for v, cells in counts.items()})
    return None


def summarize(results: Iterable[SourceResult]) -> Counter:
    """Counts of what a batch did (done, skipped, empty, failed, downloads, reductions)."""
    counts: Counter = Counter()
    for r in results:
        counts["sources"] += 1
        if r.skipped:
            counts["skipped"] += 1
            continue
        counts[r.status] += 1
        counts["downloaded"] += r.downloaded
        counts["reduced"] += r.reduced
        counts["analyzed"] += int(r.analysis is not None)
        counts["empty"] += int(r.empty and r.status == "done")
    return counts
