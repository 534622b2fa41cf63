"""The query layer: every statement the pipeline, project, command line, report, plots and checker send.

"Where is the database touched?" has one answer for the layers above the
domain: here. Each function is one named read or write (in the manner of the
data butler's registry) and takes the session, or for a batch write the
:class:`BatchConnection`, of its caller: sessions, transactions and commits
stay with the caller (:mod:`skyretriever.database` makes them). The models
keep their columns, relationships and small helpers.

A project's rows are those of its name and configuration hash, given as a
:class:`~skyretriever.observatories.base.ProjectContext` (only ``name`` and
``cfg_hash`` are read). Functions over raw data take the raw-data model
(``obs.raw_class``; :class:`~skyretriever.models.RawPhotometry` by default),
so every data type shares them.

The write of a batch (:func:`skyretriever.pipeline.write_batch`) is one
function per table, called in order on one :class:`BatchConnection`: Core
statements on the session's connection, so each table's rows go as multi-row
INSERTs, and upserts are the dialect's ``ON CONFLICT`` on SQLite and
PostgreSQL alike.

Examples
--------
>>> from skyretriever import database, queries
>>> from skyretriever.observatories.base import ProjectContext
>>> url = database.configure("sqlite:///:memory:")
>>> database.upgrade()
>>> with database.Session() as session:
...     queries.source_counts(session, ProjectContext("demo", "", "DEMO"))
{}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

from skyretriever.healpix import angular_distance
from skyretriever.models import (
    Detection,
    FFIFile,
    HistogramBatch,
    Lightcurve,
    Properties,
    RawCutouts,
    RawData,
    RawImages,
    RawImageSector,
    RawPhotometry,
    Source,
    SourceRawData,
)
from skyretriever.models.datasets import RAW_COLUMNS
from skyretriever.models.raw import data_types, raw_data_class
from skyretriever.observatories.base import ProjectContext, raw_identity_filter

__all__ = [
    "counterpart_lightcurves",
    "done_source_rows",
    "event_cutouts",
    "replace_finder_detections",
    "source_cutouts",
    "source_ids_by_name",
    "LIGHTCURVE_STATE_COLUMNS",
    "RAW_IDENTITY",
    "BatchConnection",
    "activity_span",
    "analysed_source_ids",
    "by_id",
    "chunks",
    "ffi_file_rows",
    "record_ffi_file",
    "raw_images_without_sectors",
    "replace_image_sectors",
    "source_raw_images",
    "sources_with_cutouts",
    "delete_analysis",
    "delete_lightcurves_in_file",
    "delete_raw_row",
    "delete_results",
    "delete_row",
    "detection_counts",
    "detection_table",
    "done_sources",
    "failed_sources",
    "failed_sources_after",
    "has_results",
    "histogram_batch_ids",
    "histogram_batches",
    "insert_detections",
    "insert_histogram_batch",
    "insert_properties",
    "insert_sources",
    "lightcurve_count",
    "lightcurve_file_rows",
    "lightcurve_filenames",
    "lock_sources",
    "mark_for_redo",
    "processed_lightcurve_states",
    "project_analysed_source_ids",
    "project_differing_in_case",
    "properties_count",
    "raw_columns",
    "raw_counts",
    "raw_file_rows",
    "raw_filenames",
    "raw_link_source_ids",
    "raw_rows_for",
    "record_file_times",
    "replace_lightcurves",
    "rows_of_another_configuration",
    "save_raw_row",
    "source_counts",
    "source_ids_named",
    "source_lightcurves",
    "source_named",
    "source_states",
    "source_table",
    "sources_after",
    "sources_using_raw",
    "similar_source_names",
    "top_detections",
    "update_source_statuses",
    "upsert_raw_links",
    "upsert_raw_rows",
]

#: The unique key of a raw product.
RAW_IDENTITY = ("source_name", "observatory", "download_hash", "target_key")
#: What the planning of a batch reads of each processed light curve.
LIGHTCURVE_STATE_COLUMNS = ("id", "source_id", "raw_id", "observatory", "series_number",
                            "filter", "filename", "key", "checksum", "file_size", "file_mtime_ns",
                            "exptime", "mag_mean", "num_points", "num_good_points", "time_start",
                            "time_end", "series_total")
#: Rows per ``IN (...)`` list when reading by names or ids.
CHUNK_SIZE = 500


def chunks(items: Sequence[Any], size: int = CHUNK_SIZE) -> Iterable[Sequence[Any]]:
    """``items`` in consecutive pieces of at most ``size`` (for ``IN`` lists of bounded length).

    Examples
    --------
    >>> [list(c) for c in chunks([1, 2, 3, 4, 5], size=2)]
    [[1, 2], [3, 4], [5]]
    """
    for start in range(0, len(items), size):
        yield items[start : start + size]


def raw_columns(model: type[RawData] = RawPhotometry) -> tuple[str, ...]:
    """The columns of a raw-data model carried as values: every one but ``created_at``.

    :data:`~skyretriever.models.datasets.RAW_COLUMNS` first, in their order, then
    any other column a data type adds.

    Examples
    --------
    >>> raw_columns()[:4]
    ('id', 'source_name', 'observatory', 'ra')
    """
    table = model.__table__.c
    extra = [c.key for c in model.__table__.columns
             if c.key not in RAW_COLUMNS and c.key != "created_at"]
    return (*(c for c in RAW_COLUMNS if c in table), *extra)


def _mine(context: ProjectContext) -> tuple:
    """The conditions selecting a project's sources."""
    return Source.project == context.name, Source.cfg_hash == context.cfg_hash


def by_id(session: orm.Session, model: type, row_id: int) -> Any:
    """The row of ``model`` with this id, or ``None`` (from the session when already loaded)."""
    return session.get(model, row_id)


# -- planning a batch (pipeline.plan_batch) ------------------------------------------------
def source_states(session: orm.Session, context: ProjectContext, names: Sequence[str]
                  ) -> list[tuple[int, str, str, bool]]:
    """``(id, name, status, counted)`` of the project's sources among ``names``."""
    return list(session.execute(
        sa.select(Source.id, Source.name, Source.status, Source.counted).where(
            Source.project == context.name,
            Source.cfg_hash == context.cfg_hash,
            Source.name.in_(names),
        )
    ))


def raw_rows_for(session: orm.Session, names: Sequence[str], observatories: Sequence[str],
                 model: type[RawData] = RawPhotometry) -> list[dict[str, Any]]:
    """The values (:func:`raw_columns`) of every raw row of these source names and observatories.

    Rows of every project and target of those names: the caller chooses among them.
    """
    columns = [getattr(model, c) for c in raw_columns(model)]
    return [dict(values) for values in session.execute(
        sa.select(*columns).where(
            model.source_name.in_(names), model.observatory.in_(list(observatories))
        )
    ).mappings()]


def processed_lightcurve_states(session: orm.Session, source_ids: Sequence[int],
                                observatories: Sequence[str]) -> list[dict[str, Any]]:
    """The :data:`LIGHTCURVE_STATE_COLUMNS` of the processed, real light curves of these sources.

    In order of source, observatory and series number.
    """
    columns = [getattr(Lightcurve, c) for c in LIGHTCURVE_STATE_COLUMNS]
    return [dict(values) for values in session.execute(
        sa.select(*columns)
        .where(
            Lightcurve.source_id.in_(source_ids),
            Lightcurve.observatory.in_(observatories),
            Lightcurve.was_processed.is_(True),
            Lightcurve.is_simulated.is_(False),
        )
        .order_by(Lightcurve.source_id, Lightcurve.observatory, Lightcurve.series_number)
    ).mappings()]


def analysed_source_ids(session: orm.Session, source_ids: Sequence[int]) -> list[int]:
    """Those of ``source_ids`` that have properties (were analysed)."""
    return list(session.scalars(
        sa.select(Properties.source_id).where(Properties.source_id.in_(source_ids))
    ))


# -- writing a batch (pipeline.write_batch), one function per table ------------------------
def _same_keys(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row every key any row has (None where missing).

    An executemany INSERT is compiled from the first row's keys; a key missing
    there would silently be dropped from all the others.
    """
    keys = {key for row in rows for key in row}
    return [row if len(row) == len(keys) else {key: row.get(key) for key in keys} for row in rows]


class BatchConnection:
    """The session's connection for the write of one batch, counting the statements sent.

    Core statements, not the ORM: executemany sends each table's rows as
    multi-row INSERTs (the ORM bulk path would split them by which values are
    None). The caller commits the session.
    """

    def __init__(self, session: orm.Session) -> None:
        self.dialect = session.get_bind().dialect.name
        self.connection = session.connection()
        #: Statements sent so far.
        self.statements = 0

    @property
    def insert(self):
        """The dialect's ``insert`` (it has ``on_conflict_do_nothing`` and ``..._do_update``)."""
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    def execute(self, statement: Any, parameters: list[dict[str, Any]] | None = None
                ) -> sa.CursorResult:
        """Send one statement (executemany with ``parameters``, every row given every key)."""
        self.statements += 1
        if parameters is None:
            return self.connection.execute(statement)
        return self.connection.execute(statement, _same_keys(parameters))


def record_file_times(batch: BatchConnection, new_times: Sequence[tuple[str, int, int]],
                      tables: Sequence[sa.Table]) -> None:
    """Store the new modification times ``(table name, row id, time)`` of files found intact.

    One UPDATE per table of ``tables`` that has any, so the next run need not
    read those files again.
    """
    for table in tables:
        rows = [{"row_id": row_id, "mtime": mtime}
                for name, row_id, mtime in new_times if name == table.name]
        if rows:
            batch.execute(table.update().where(table.c.id == sa.bindparam("row_id"))
                          .values(file_mtime_ns=sa.bindparam("mtime")), rows)


def insert_sources(batch: BatchConnection, rows: list[dict[str, Any]]) -> None:
    """Insert the sources not there yet (a source already there is left as it is)."""
    batch.execute(
        batch.insert(Source.__table__).on_conflict_do_nothing(
            index_elements=["name", "project", "cfg_hash"]),
        rows,
    )


def lock_sources(batch: BatchConnection, context: ProjectContext, names: Sequence[str]
                 ) -> list[tuple[int, str, bool]]:
    """``(id, name, counted)`` of the project's sources of these names, locked on PostgreSQL.

    They are locked in id order, so concurrent runs never deadlock: a run working
    on the same sources at the same time waits here, then replaces our rows.
    """
    query = sa.select(Source.id, Source.name, Source.counted).where(
        Source.project == context.name, Source.cfg_hash == context.cfg_hash, Source.name.in_(names)
    )
    if batch.dialect == "postgresql":
        query = query.order_by(Source.id).with_for_update()
    return list(batch.execute(query))


def upsert_raw_rows(batch: BatchConnection, rows: list[dict[str, Any]],
                    model: type[RawData] = RawPhotometry) -> dict[tuple, int]:
    """Insert or update raw rows by their identity; the ids of the identities of their names.

    A row of the same :data:`RAW_IDENTITY` is brought up to these values. Returns
    the id of every raw row (with a download hash) of the rows' source names, by
    identity tuple.
    """
    statement = batch.insert(model.__table__)
    updates = {c: statement.excluded[c] for c in raw_columns(model) if c not in
               ("id", *RAW_IDENTITY)}
    columns = set(model.__table__.columns.keys()) - {"id"}
    batch.execute(statement.on_conflict_do_update(
        index_elements=list(RAW_IDENTITY), set_=updates
    ), [{k: v for k, v in values.items() if k in columns} for values in rows])
    names = sorted({values["source_name"] for values in rows})
    identity_ids: dict[tuple, int] = {}
    for raw_id, *identity in batch.execute(
        sa.select(model.id, *(getattr(model, c) for c in RAW_IDENTITY))
        .where(model.source_name.in_(names), model.download_hash.is_not(None))
    ):
        identity_ids[tuple(identity)] = raw_id
    # Raw images carry their file's groups (RawImages.column_values): they replace the old ones.
    groups = {identity_ids[tuple(values[c] for c in RAW_IDENTITY)]: values["sector_rows"]
              for values in rows if "sector_rows" in values}
    if groups:
        replace_image_sectors(batch, groups)
    return identity_ids


def upsert_raw_links(batch: BatchConnection, links: list[dict[str, Any]]) -> None:
    """Point each ``(source_id, observatory)`` at the raw row it uses (``raw_id``)."""
    statement = batch.insert(SourceRawData.__table__)
    batch.execute(statement.on_conflict_do_update(
        index_elements=["source_id", "observatory"],
        set_={"raw_id": statement.excluded.raw_id}), links)


def replace_lightcurves(batch: BatchConnection, reduced: Mapping[str, list[int]],
                        rows: list[dict[str, Any]]) -> dict[tuple[int, str, int], int]:
    """Replace the processed light curves of the sources reduced again, by observatory.

    ``reduced`` maps an observatory to the ids of the sources whose light curves
    of it are replaced by ``rows`` (simulated ones are kept). Returns the id of
    each processed light curve of the sources of ``rows``, by ``(source id,
    observatory, series number)``.
    """
    for observatory, ids in reduced.items():
        batch.execute(sa.delete(Lightcurve).where(
            Lightcurve.source_id.in_(ids), Lightcurve.observatory == observatory,
            Lightcurve.was_processed.is_(True), Lightcurve.is_simulated.is_(False),
        ))
    lightcurve_ids: dict[tuple[int, str, int], int] = {}
    if not rows:
        return lightcurve_ids
    batch.execute(Lightcurve.__table__.insert(), rows)
    new_ids = sorted({values["source_id"] for values in rows})
    for lc_id, source_id, observatory, number in batch.execute(
        sa.select(Lightcurve.id, Lightcurve.source_id, Lightcurve.observatory,
                  Lightcurve.series_number).where(
            Lightcurve.source_id.in_(new_ids), Lightcurve.was_processed.is_(True),
            Lightcurve.is_simulated.is_(False),
        )
    ):
        lightcurve_ids[(source_id, observatory, number)] = lc_id
    return lightcurve_ids


def delete_analysis(batch: BatchConnection, source_ids: list[int]) -> None:
    """Delete the detections and properties of these sources (their analysis no longer holds)."""
    batch.execute(sa.delete(Detection).where(Detection.source_id.in_(source_ids)))
    batch.execute(sa.delete(Properties).where(Properties.source_id.in_(source_ids)))


def insert_properties(batch: BatchConnection, rows: list[dict[str, Any]]) -> None:
    """Insert properties rows (one per analysed source)."""
    batch.execute(Properties.__table__.insert(), rows)


def insert_detections(batch: BatchConnection, rows: list[dict[str, Any]]) -> None:
    """Insert detection rows."""
    batch.execute(Detection.__table__.insert(), rows)


def insert_histogram_batch(batch: BatchConnection, context: ProjectContext, name: str,
                           num_sources: int, counts: dict[str, dict[str, int]]) -> int:
    """Store one batch's histogram counts (``{variable: {cell: count}}``); returns its id."""
    return batch.execute(HistogramBatch.__table__.insert().returning(HistogramBatch.id).values(
        project=context.name, cfg_hash=context.cfg_hash, name=name, num_sources=num_sources,
        counts=counts,
    )).scalar_one()


def update_source_statuses(batch: BatchConnection, rows: list[dict[str, Any]]) -> None:
    """Set each source's status, error, counted flag and modification time.

    Each row has ``source_id``, ``new_status``, ``new_error``, ``new_counted``
    and ``modified``.
    """
    table = Source.__table__
    batch.execute(
        table.update().where(table.c.id == sa.bindparam("source_id")).values(
            status=sa.bindparam("new_status"), error=sa.bindparam("new_error"),
            counted=sa.bindparam("new_counted"), modified_at=sa.bindparam("modified"),
        ),
        rows,
    )


# -- a project's results (project) ---------------------------------------------------------
def project_differing_in_case(session: orm.Session, name: str) -> str | None:
    """The name of a project in the database that differs from ``name`` only in case, if any."""
    return session.scalar(sa.select(Source.project).where(
        sa.func.lower(Source.project) == name.lower(), Source.project != name).limit(1))


def has_results(session: orm.Session, context: ProjectContext) -> bool:
    """Whether the project has any source row."""
    return session.scalar(sa.select(Source.id).where(*_mine(context)).limit(1)) is not None


def delete_results(session: orm.Session, context: ProjectContext) -> set[str]:
    """Delete the project's rows (raw data, shared, is kept); returns its light curves' files.

    Detections, properties and light curves of its sources, its histogram
    batches, then its sources. The caller commits.
    """
    mine = _mine(context)
    ids = sa.select(Source.id).where(*mine).scalar_subquery()
    filenames = set(session.scalars(sa.select(Lightcurve.filename).where(
        Lightcurve.source_id.in_(ids), Lightcurve.filename.is_not(None))))
    for model in (Detection, Properties, Lightcurve):
        session.execute(sa.delete(model).where(model.source_id.in_(ids)))
    session.execute(sa.delete(HistogramBatch).where(
        HistogramBatch.project == context.name,
        HistogramBatch.cfg_hash == context.cfg_hash))
    session.execute(sa.delete(Source).where(*mine))
    return filenames


def _histograms_of(context: ProjectContext, name: str) -> tuple:
    return (HistogramBatch.project == context.name,
            HistogramBatch.cfg_hash == context.cfg_hash, HistogramBatch.name == name)


def histogram_batch_ids(session: orm.Session, context: ProjectContext, name: str) -> list[int]:
    """The ids of the project's committed histogram batches of histogram ``name``."""
    return list(session.scalars(sa.select(HistogramBatch.id).where(
        *_histograms_of(context, name))).all())


def histogram_batches(session: orm.Session, context: ProjectContext, name: str,
                      ids: Sequence[int], chunk: int = 1000) -> list[tuple[int, dict]]:
    """``(id, counts)`` of the project's histogram batches among ``ids`` (read ``chunk`` at a time)."""
    batches = []
    for piece in chunks(ids, chunk):
        batches += session.execute(
            sa.select(HistogramBatch.id, HistogramBatch.counts).where(
                *_histograms_of(context, name), HistogramBatch.id.in_(piece))
        ).all()
    return batches


def source_counts(session: orm.Session, context: ProjectContext) -> dict[str, int]:
    """The number of the project's sources by status (statuses with none left out)."""
    return dict(session.execute(
        sa.select(Source.status, sa.func.count()).where(*_mine(context)).group_by(Source.status)
    ).all())


def raw_counts(session: orm.Session, context: ProjectContext, observatory: str,
               model: type[RawData] = RawPhotometry) -> dict[bool, int]:
    """The number of the project's sources' raw rows of an observatory, by ``is_empty``.

    Each source's own raw data, through its link (names are not unique).
    """
    rows = session.execute(
        sa.select(model.is_empty, sa.func.count())
        .join(SourceRawData, sa.and_(SourceRawData.raw_id == model.id,
                                     SourceRawData.observatory == model.observatory))
        .join(Source, Source.id == SourceRawData.source_id)
        .where(*_mine(context), SourceRawData.observatory == observatory)
        .group_by(model.is_empty)
    ).all()
    return {bool(empty): n for empty, n in rows}


def lightcurve_count(session: orm.Session, context: ProjectContext, observatory: str) -> int:
    """The number of the project's light curves of an observatory."""
    return session.scalar(
        sa.select(sa.func.count(Lightcurve.id)).join(Source).where(
            *_mine(context), Lightcurve.observatory == observatory
        )
    )


def properties_count(session: orm.Session, context: ProjectContext) -> int:
    """The number of the project's properties rows (analysed sources)."""
    return session.scalar(
        sa.select(sa.func.count(Properties.id)).join(Source).where(*_mine(context))
    )


def detection_counts(session: orm.Session, context: ProjectContext) -> dict[bool, int]:
    """The number of the project's detections by ``is_simulated``."""
    return dict(session.execute(
        sa.select(Detection.is_simulated, sa.func.count()).join(Source).where(*_mine(context))
        .group_by(Detection.is_simulated)
    ).all())


def failed_sources(session: orm.Session, context: ProjectContext, limit: int
                   ) -> list[tuple[str, str | None]]:
    """``(name, error)`` of the first ``limit`` failed sources, in catalog order."""
    return [(name, error) for name, error in session.execute(
        sa.select(Source.name, Source.error).where(*_mine(context), Source.status == "failed")
        .order_by(Source.cat_index).limit(limit)
    ).all()]


# -- the query commands (cli) --------------------------------------------------------------
def source_table(session: orm.Session, context: ProjectContext, columns: Sequence[Any],
                 condition: sa.ColumnElement[bool] | None = None, limit: int | None = None
                 ) -> list[dict[str, Any]]:
    """Rows of ``columns`` (of Source and Properties) of the project's sources, as dictionaries.

    In catalog order; only those meeting ``condition``; at most ``limit``.
    """
    query = (sa.select(*columns)
             .select_from(Source)
             .outerjoin(Properties, Properties.source_id == Source.id)
             .where(*_mine(context))
             .order_by(Source.cat_index, Source.name, Source.id))
    if condition is not None:
        query = query.where(condition)
    if limit is not None:
        query = query.limit(limit)
    return [dict(row._mapping) for row in session.execute(query)]


def detection_table(session: orm.Session, context: ProjectContext, columns: Sequence[Any],
                    min_snr: float | None = None, simulated: bool | None = None,
                    condition: sa.ColumnElement[bool] | None = None, limit: int | None = None
                    ) -> list[dict[str, Any]]:
    """Rows of ``columns`` (of Detection and Source) of the project's detections, as dictionaries.

    Best S/N first; only those of S/N at least ``min_snr``, simulated or real
    as ``simulated`` says (both when None) and meeting ``condition``; at most
    ``limit``.
    """
    query = (sa.select(*columns)
             .select_from(Detection)
             .join(Source, Source.id == Detection.source_id)
             .where(Detection.project == context.name, Detection.cfg_hash == context.cfg_hash)
             .order_by(Detection.snr.desc(), Detection.id))
    if min_snr is not None:
        query = query.where(Detection.snr >= min_snr)
    if simulated is not None:
        query = query.where(Detection.is_simulated.is_(simulated))
    if condition is not None:
        query = query.where(condition)
    if limit is not None:
        query = query.limit(limit)
    return [dict(row._mapping) for row in session.execute(query)]


def source_named(session: orm.Session, context: ProjectContext, name: str) -> Source | None:
    """The project's source of this name, or ``None``."""
    return session.scalars(sa.select(Source).where(*_mine(context), Source.name == name)).first()


def similar_source_names(session: orm.Session, context: ProjectContext, name: str,
                         limit: int = 5) -> list[str]:
    """The first ``limit`` names of the project's sources that contain ``name`` (any case)."""
    return list(session.scalars(
        sa.select(Source.name).where(
            *_mine(context), sa.func.lower(Source.name).contains(name.lower(), autoescape=True))
        .order_by(Source.name).limit(limit)
    ).all())


# -- the report ----------------------------------------------------------------------------
def sources_after(session: orm.Session, context: ProjectContext, last_id: int, limit: int
                  ) -> list[Source]:
    """The project's next ``limit`` sources of id above ``last_id``, their relations loaded."""
    return list(session.scalars(
        sa.select(Source).where(*_mine(context), Source.id > last_id)
        .order_by(Source.id).limit(limit)
        .options(orm.selectinload(Source.properties),
                 orm.selectinload(Source.lightcurves),
                 orm.selectinload(Source.detections),
                 orm.selectinload(Source.raw_photometry))
    ).all())


def activity_span(session: orm.Session, context: ProjectContext
                  ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """When the project's first source was made and its last one modified."""
    first, last = session.execute(
        sa.select(sa.func.min(Source.created_at), sa.func.max(Source.modified_at))
        .where(*_mine(context))
    ).one()
    return first, last


def top_detections(session: orm.Session, context: ProjectContext, top: int) -> list[Detection]:
    """The project's ``top`` real detections by S/N, with their source and light curve loaded."""
    return list(session.scalars(
        sa.select(Detection).join(Source)
        .where(*_mine(context), ~Detection.is_simulated)
        .order_by(Detection.snr.desc(), Detection.id).limit(top)
        .options(orm.joinedload(Detection.source), orm.joinedload(Detection.lightcurve))
    ).all())


def failed_sources_after(session: orm.Session, context: ProjectContext, last_id: int,
                         limit: int) -> list[tuple[int, int | None, str, str | None]]:
    """``(id, cat_index, name, error)`` of the next ``limit`` failed sources of id above ``last_id``."""
    return list(session.execute(
        sa.select(Source.id, Source.cat_index, Source.name, Source.error)
        .where(*_mine(context), Source.status == "failed", Source.id > last_id)
        .order_by(Source.id).limit(limit)
    ).all())


# -- the plots -----------------------------------------------------------------------------
def source_lightcurves(session: orm.Session, source_id: int) -> list[Lightcurve]:
    """Every light curve of a source, by observatory and series number."""
    return list(session.scalars(
        sa.select(Lightcurve).where(Lightcurve.source_id == source_id)
        .order_by(Lightcurve.observatory, Lightcurve.series_number)))


# -- the checker ---------------------------------------------------------------------------
def raw_file_rows(session: orm.Session, observatories: Sequence[str],
                  model: type[RawData] = RawPhotometry
                  ) -> list[tuple[int, str, str, str | None, str | None, int | None]]:
    """``(id, source_name, observatory, filename, checksum, file_size)`` of the raw rows with data."""
    return list(session.execute(sa.select(
        model.id, model.source_name, model.observatory,
        model.filename, model.checksum, model.file_size,
    ).where(model.observatory.in_(observatories),
            model.is_empty.is_(False))).all())


def sources_using_raw(session: orm.Session, raw_id: int,
                      model: type[RawData] = RawPhotometry) -> list[int]:
    """The ids of the sources (of any project) linked to a raw row (of ``model``'s table)."""
    return list(session.scalars(sa.select(SourceRawData.source_id).join(
        model, sa.and_(model.id == SourceRawData.raw_id,
                       model.observatory == SourceRawData.observatory)).where(
        model.id == raw_id)))


def delete_raw_row(session: orm.Session, raw_id: int,
                   model: type[RawData] = RawPhotometry) -> None:
    """Delete one raw row, with the links to it and the light curves reduced from it.

    Raw ids are those of each data type's table, so links and light curves are
    matched by id and observatory (no foreign key can span the raw tables).
    """
    observatory = session.scalar(sa.select(model.observatory).where(model.id == raw_id))
    if observatory is not None:
        session.execute(sa.delete(SourceRawData).where(
            SourceRawData.raw_id == raw_id, SourceRawData.observatory == observatory))
        session.execute(sa.delete(Lightcurve).where(
            Lightcurve.raw_id == raw_id, Lightcurve.observatory == observatory))
    session.execute(sa.delete(model).where(model.id == raw_id))


def lightcurve_file_rows(session: orm.Session, context: ProjectContext
                         ) -> list[tuple[int, int, str | None, str | None, int | None, str]]:
    """``(id, source_id, filename, checksum, file_size, source name)`` of the project's light curves."""
    return list(session.execute(
        sa.select(Lightcurve.id, Lightcurve.source_id, Lightcurve.filename,
                  Lightcurve.checksum, Lightcurve.file_size, Source.name)
        .join(Source).where(*_mine(context))
    ).all())


def delete_lightcurves_in_file(session: orm.Session, source_id: int, filename: str | None) -> None:
    """Delete a source's light curves stored in ``filename`` (those without a file when None)."""
    session.execute(sa.delete(Lightcurve).where(
        Lightcurve.source_id == source_id,
        Lightcurve.filename == filename if filename else Lightcurve.filename.is_(None)))


def raw_filenames(session: orm.Session, model: type[RawData] = RawPhotometry) -> set[str]:
    """The files raw rows of any project point at."""
    return set(session.scalars(sa.select(model.filename).where(model.filename.is_not(None))))


def lightcurve_filenames(session: orm.Session) -> set[str]:
    """The files light curves of any project point at."""
    return set(session.scalars(sa.select(Lightcurve.filename).where(
        Lightcurve.filename.is_not(None))))


def save_raw_row(session: orm.Session, values: dict[str, Any],
                 model: type[RawData] = RawPhotometry) -> None:
    """Add a raw row of these values, or bring the row of the same identity up to them (flushed)."""
    existing = session.scalar(sa.select(model).where(*raw_identity_filter(values, model)))
    if existing is None:
        session.add(model(**values))
    else:
        existing.update_from(values)
    session.flush()


def source_ids_named(session: orm.Session, context: ProjectContext, name: str) -> list[int]:
    """The ids of the project's sources of this name."""
    return list(session.scalars(sa.select(Source.id).where(*_mine(context), Source.name == name)))


def rows_of_another_configuration(session: orm.Session, context: ProjectContext, model: type
                                  ) -> list[tuple[int, int]]:
    """``(id, source_id)`` of rows of ``model`` whose project or hash differ from their source's."""
    return list(session.execute(sa.select(model.id, model.source_id).join(Source).where(
        *_mine(context),
        sa.or_(model.cfg_hash != Source.cfg_hash, model.project != Source.project)
    )).all())


def delete_row(session: orm.Session, model: type, row_id: int) -> None:
    """Delete the row of ``model`` with this id."""
    session.execute(sa.delete(model).where(model.id == row_id))


def done_sources(session: orm.Session, context: ProjectContext) -> list[tuple[int, str]]:
    """``(id, name)`` of the project's sources marked done."""
    return list(session.execute(sa.select(Source.id, Source.name).where(
        *_mine(context), Source.status == "done")).all())


def project_analysed_source_ids(session: orm.Session, context: ProjectContext) -> set[int]:
    """The ids of the project's sources that have properties."""
    return set(session.scalars(sa.select(Properties.source_id).join(Source).where(
        *_mine(context))))


def raw_link_source_ids(session: orm.Session, context: ProjectContext,
                        observatories: Sequence[str]) -> list[int]:
    """The source id of each link of the project's sources to raw data of these observatories.

    Only links to a raw row that exists count (a link points into the raw table of its
    observatory's data type, with no foreign key to remove it with the row).
    """
    exists = sa.or_(*(sa.exists().where(model.id == SourceRawData.raw_id,
                                        model.observatory == SourceRawData.observatory)
                      for model in map(raw_data_class, data_types())))
    return list(session.scalars(
        sa.select(SourceRawData.source_id).join(Source).where(
            *_mine(context), SourceRawData.observatory.in_(observatories), exists)))


def mark_for_redo(session: orm.Session, source_ids: list[int], reason: str) -> None:
    """Delete these sources' detections and properties and set them ``new`` with ``reason``."""
    session.execute(sa.delete(Detection).where(Detection.source_id.in_(source_ids)))
    session.execute(sa.delete(Properties).where(Properties.source_id.in_(source_ids)))
    session.execute(sa.update(Source).where(Source.id.in_(source_ids)).values(
        status="new", error=reason))


# -- images (bulk FFIs) ----------------------------------------------------------------------
FFI_FILE_COLUMNS = ("sector", "camera", "ccd", "key", "filename", "checksum", "file_size",
                    "route")


def ffi_file_rows(session: orm.Session, sector: int, camera: int, ccd: int
                  ) -> dict[str, dict[str, Any]]:
    """The recorded FFIs of a sector, camera and CCD, by bucket key."""
    rows = session.execute(sa.select(*(getattr(FFIFile, c) for c in FFI_FILE_COLUMNS)).where(
        FFIFile.sector == sector, FFIFile.camera == camera, FFIFile.ccd == ccd)).mappings()
    return {row["key"]: dict(row) for row in rows}


def record_ffi_file(session: orm.Session, values: dict[str, Any]) -> None:
    """Record one downloaded FFI (or bring its row up to these values), flushed."""
    existing = session.scalar(sa.select(FFIFile).where(FFIFile.key == values["key"]))
    if existing is None:
        session.add(FFIFile(**values))
    else:
        for key, value in values.items():
            setattr(existing, key, value)
    session.flush()


def source_raw_images(session: orm.Session, source_id: int) -> list[RawImages]:
    """The raw images (with data) a source uses, one per image observatory."""
    return list(session.scalars(sa.select(RawImages).join(
        SourceRawData, sa.and_(SourceRawData.raw_id == RawImages.id,
                               SourceRawData.observatory == RawImages.observatory)).where(
        SourceRawData.source_id == source_id, RawImages.is_empty.is_(False))
        .order_by(RawImages.observatory)))


# -- the transit classifier ----------------------------------------------------------------
def training_lightcurves(session: orm.Session, context: ProjectContext
                         ) -> dict[str, list[Lightcurve]]:
    """The light curves of the project's analysed sources, by source name (``skyretriever train``).

    Every configuration of the project counts (a model is trained before the
    configuration that uses it exists); a name analysed under several takes
    the newest source row's light curves.
    """
    newest = (sa.select(Source.name, sa.func.max(Source.id).label("id"))
              .where(Source.project == context.name, Source.status == "done")
              .group_by(Source.name).subquery())
    rows = session.execute(
        sa.select(newest.c.name, Lightcurve).join(Lightcurve, Lightcurve.source_id == newest.c.id)
        .order_by(newest.c.name, Lightcurve.observatory, Lightcurve.series_number))
    found: dict[str, list[Lightcurve]] = {}
    for name, lightcurve in rows:
        found.setdefault(name, []).append(lightcurve)
    return found


# -- solar events: AIA cutouts and Zooniverse ----------------------------------------------
def event_cutouts(session: orm.Session, context: ProjectContext, observatory: str = "aia"
                  ) -> list[tuple[Source, RawCutouts]]:
    """The project's done sources with their (non-empty) raw cutouts, in start-time order."""
    return list(session.execute(
        sa.select(Source, RawCutouts)
        .join(SourceRawData, SourceRawData.source_id == Source.id)
        .join(RawCutouts, sa.and_(RawCutouts.id == SourceRawData.raw_id,
                                  RawCutouts.observatory == SourceRawData.observatory))
        .where(*_mine(context), SourceRawData.observatory == observatory,
               Source.status == "done", RawCutouts.is_empty.is_(False))
        .order_by(Source.start_time, Source.name)).tuples().all())


def source_ids_by_name(session: orm.Session, context: ProjectContext,
                       names: Sequence[str]) -> dict[str, int]:
    """The ids of the project's sources of these names."""
    return dict(session.execute(sa.select(Source.name, Source.id).where(
        *_mine(context), Source.name.in_(list(names)))).tuples().all())


def replace_finder_detections(session: orm.Session, context: ProjectContext, finder: str,
                              source_ids: Sequence[int], subject_keys: Sequence[str],
                              rows: list[dict[str, Any]]) -> None:
    """Replace ``finder``'s detections of these sources' subjects by ``rows`` (one transaction
    is the caller's); a detection's subject is ``extra['subject_key']``."""
    keys = set(subject_keys)
    old = session.scalars(sa.select(Detection).where(
        Detection.project == context.name, Detection.cfg_hash == context.cfg_hash,
        Detection.finder == finder, Detection.source_id.in_(list(source_ids)))).all()
    for detection in old:
        if (detection.extra or {}).get("subject_key") in keys:
            session.delete(detection)
    session.flush()
    if rows:
        session.execute(Detection.__table__.insert(), rows)


def source_cutouts(session: orm.Session, source_id: int, observatory: str = "aia"
                   ) -> RawCutouts | None:
    """The raw cutouts a source uses (through its link), or None."""
    return session.scalars(
        sa.select(RawCutouts).join(SourceRawData, sa.and_(
            SourceRawData.raw_id == RawCutouts.id,
            SourceRawData.observatory == RawCutouts.observatory))
        .where(SourceRawData.source_id == source_id,
               SourceRawData.observatory == observatory)).first()


def done_source_rows(session: orm.Session, context: ProjectContext) -> list[Source]:
    """The project's done sources (whole rows), by name."""
    return list(session.scalars(sa.select(Source).where(
        *_mine(context), Source.status == "done").order_by(Source.name)))


# -- images: the same star's light curves in another project (issue 18) ---------------------------
def counterpart_lightcurves(session: orm.Session, source: Source, observatory: str,
                            radius_arcsec: float = 2.0) -> list[Lightcurve]:
    """The ``observatory`` light curves of the same star in another project: a source of the
    same name within ``radius_arcsec`` (the first such source that has some), by series.

    A project analyses one data type, so a star's TESS 2-minute light curves (``tess``,
    photometry) and its FFI light curves (``tessffi``, images) live in two projects.
    """
    rows = session.execute(
        sa.select(Source.id, Source.ra, Source.dec).join(
            Lightcurve, Lightcurve.source_id == Source.id).where(
            Source.name == source.name, Source.id != source.id,
            Lightcurve.observatory == observatory, Lightcurve.is_simulated.is_(False))
        .distinct().order_by(Source.id)).all()
    for source_id, ra, dec in rows:
        if angular_distance(source.ra, source.dec, ra, dec) * 3600.0 <= radius_arcsec:
            return list(session.scalars(sa.select(Lightcurve).where(
                Lightcurve.source_id == source_id, Lightcurve.observatory == observatory,
                Lightcurve.is_simulated.is_(False)).order_by(Lightcurve.series_number)))
    return []


# -- images: the groups of raw-images files, one row per sector (issue 18) -------------------------
def replace_image_sectors(batch: BatchConnection, groups: Mapping[int, list[dict[str, Any]]]
                          ) -> None:
    """Make the ``raw_image_sectors`` rows of raw-images rows these values (``{raw id: rows}``,
    each row :meth:`RawImageSector.column_values`), replacing those they had."""
    ids = sorted(groups)
    for chunk in chunks(ids):
        batch.execute(sa.delete(RawImageSector).where(RawImageSector.raw_images_id.in_(chunk)))
    rows = [{**values, "raw_images_id": raw_id} for raw_id in ids for values in groups[raw_id]]
    if rows:
        batch.execute(RawImageSector.__table__.insert(), rows)


def sources_with_cutouts(session: orm.Session, context: ProjectContext, sector: int,
                         observatory: str = "tessffi", camera: int | None = None,
                         ccd: int | None = None) -> list[tuple[Source, RawImageSector]]:
    """The project's sources whose raw images hold a cutout of ``sector`` (for ZTF: of that
    field), with the group that holds it, by source name (then group).

    Examples
    --------
    >>> for source, group in sources_with_cutouts(session, project.context, 14):  # doctest: +SKIP
    ...     print(source.name, group.camera, group.ccd, group.num_frames)
    """
    conditions = [*_mine(context), RawImageSector.sector == int(sector),
                  RawImages.observatory == observatory]
    if camera is not None:
        conditions.append(RawImageSector.camera == int(camera))
    if ccd is not None:
        conditions.append(RawImageSector.ccd == int(ccd))
    return [tuple(pair) for pair in session.execute(
        sa.select(Source, RawImageSector)
        .join(SourceRawData, SourceRawData.source_id == Source.id)
        .join(RawImages, sa.and_(RawImages.id == SourceRawData.raw_id,
                                 RawImages.observatory == SourceRawData.observatory))
        .join(RawImageSector, RawImageSector.raw_images_id == RawImages.id)
        .where(*conditions).order_by(Source.name, RawImageSector.key)).all()]


def raw_images_without_sectors(session: orm.Session, observatories: Sequence[str]
                               ) -> list[tuple[int, str, str]]:
    """``(id, source_name, filename)`` of the raw-images rows with a file but no
    ``raw_image_sectors`` row (written before that table existed)."""
    return list(session.execute(sa.select(
        RawImages.id, RawImages.source_name, RawImages.filename).where(
        RawImages.observatory.in_(observatories), RawImages.is_empty.is_(False),
        RawImages.filename.is_not(None),
        ~sa.exists().where(RawImageSector.raw_images_id == RawImages.id))
        .order_by(RawImages.id)).all())
