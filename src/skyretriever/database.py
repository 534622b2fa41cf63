"""Engine and sessions from one URL; schema creation and migrations.

One URL decides everything: the ``database.url`` parameter if a project set
one, else ``$SKYRETRIEVER_DB_URL``, else a SQLite file under the data root,
so a first run needs no server. PostgreSQL (through psycopg2) is the
production database. Nothing is created at import: the engine is made on first
use, once per process, and the schema is made or migrated by :func:`upgrade`
(``skyretriever db upgrade``).

Examples
--------
>>> import sqlalchemy as sa
>>> from skyretriever.database import Session, configure
>>> from skyretriever.models import Source
>>> url = configure("sqlite:///:memory:")
>>> upgrade()
>>> with Session() as session:
...     session.scalar(sa.select(sa.func.count(Source.id)))
0
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.engine import URL, Engine, make_url

from skyretriever import storage
from skyretriever.errors import DiskFull, RunStopped, free_megabytes, is_disk_full

__all__ = [
    "DatabaseError",
    "Session",
    "SmartSession",
    "check_still_there",
    "check_writable",
    "sqlite_path",
    "stop_for",
    "configure",
    "get_engine",
    "get_url",
    "normalize_url",
    "redact_url",
    "upgrade",
]

log = logging.getLogger(__name__)

ENV_URL = "SKYRETRIEVER_DB_URL"
DEFAULT_SQLITE_NAME = "skyretriever.db"
MIGRATIONS = Path(__file__).parent / "migrations"

_lock = threading.Lock()
_state: dict[str, Any] = {"url": None, "engine": None, "pid": None, "factory": None,
                         "sqlite_file": None}


class DatabaseError(RuntimeError):
    """The database URL is wrong, the server cannot be reached, or the schema is not usable."""


_URL_EXAMPLES = "'sqlite:////path/to/file.db' or 'postgresql://user@host:5432/dbname'"


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; ``postgresql://`` means the psycopg2 driver.

    Raises
    ------
    DatabaseError
        If the URL cannot be parsed, names an unsupported database, or a
        driver that does not exist or is not installed (the message shows the
        URL without its password).

    Examples
    --------
    >>> normalize_url("postgresql://me@db/sky").drivername
    'postgresql+psycopg2'
    >>> normalize_url("postgresql+psycogp2://me:secret@db/sky")
    Traceback (most recent call last):
    ...
    skyretriever.database.DatabaseError: unknown driver 'psycogp2' for postgresql in the database URL 'postgresql+psycogp2://me:***@db/sky'; write 'postgresql://...' (psycopg2) or 'sqlite:///...'
    """
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        text = str(url)
        reason = ("it has no scheme (such as sqlite:// or postgresql://)" if "://" not in text
                  else "it is not of the form scheme://user@host:port/database")
        raise DatabaseError(
            f"cannot parse the database URL {redact_url(url)!r}: {reason}; expected for "
            f"example {_URL_EXAMPLES}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"unsupported database {backend!r} in URL {redact_url(parsed)!r}; "
            f"skyretriever works with SQLite and PostgreSQL ({_URL_EXAMPLES})"
        )
    driver = parsed.get_driver_name()
    try:
        dialect = parsed.get_dialect()
    except (sa.exc.NoSuchModuleError, ValueError):
        raise DatabaseError(
            f"unknown driver {driver!r} for {backend} in the database URL "
            f"{redact_url(parsed)!r}; write 'postgresql://...' (psycopg2) or 'sqlite:///...'"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise DatabaseError(
            f"the driver {driver!r} of the database URL {redact_url(parsed)!r} is not installed "
            f"({error}); install it, or write 'postgresql://...' to use psycopg2 (installed "
            "with skyretriever)"
        ) from None
    return parsed


def redact_url(url: str | URL | None) -> str:
    """The URL with any password replaced by ``***``, safe to print or log."""
    if url is None:
        return "None"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL may still hold a secret: show only its scheme
        text = str(url)
        return text.split("://", 1)[0] + "://***" if "://" in text else "***"


def _default_url() -> URL:
    path = storage.data_root() / DEFAULT_SQLITE_NAME
    return URL.create("sqlite", database=str(path))


def configure(url: str | URL | None = None) -> URL:
    """Choose the database for this process (``None``: environment, then default SQLite).

    An engine already made for another URL is disposed. Returns the URL in use.
    """
    from_environment = url is None and bool(os.environ.get(ENV_URL))
    if from_environment:
        url = os.environ[ENV_URL]
    try:
        parsed = normalize_url(url) if url is not None else None
    except DatabaseError as error:
        if from_environment:
            raise DatabaseError(f"${ENV_URL}: {error}") from None
        raise
    with _lock:
        if _state["engine"] is not None and parsed != _state["url"]:
            _dispose_locked()
        _state["url"] = parsed
    return get_url()


def get_url() -> URL:
    """The URL in use (the default SQLite file under the data root if none was configured)."""
    url = _state["url"]
    if url is None:
        env = os.environ.get(ENV_URL)
        try:
            url = normalize_url(env) if env else _default_url()
        except DatabaseError as error:
            raise DatabaseError(f"${ENV_URL}: {error}") from None
    return url


def _dispose_locked() -> None:
    engine = _state["engine"]
    if engine is not None:
        # In a forked child, the parent's connections must not be closed from here.
        engine.dispose(close=_state["pid"] == os.getpid())
    _state.update(engine=None, pid=None, factory=None)


def _register_numpy_adapters() -> None:
    import psycopg2.extensions as extensions

    def adapt_number(value: np.generic) -> Any:
        return extensions.AsIs(repr(value.item()) if np.isfinite(value) else "'NaN'")

    for kind in (np.float16, np.float32, np.float64):
        extensions.register_adapter(kind, adapt_number)
    for kind in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        extensions.register_adapter(kind, lambda value: extensions.AsIs(int(value)))
    extensions.register_adapter(np.bool_, lambda value: extensions.AsIs(bool(value)))


def _register_numpy_adapters_sqlite() -> None:
    # sqlite3 would store numpy integers as 8-byte blobs.
    import sqlite3

    for kind in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        sqlite3.register_adapter(kind, int)
    for kind in (np.float16, np.float32, np.float64):
        sqlite3.register_adapter(kind, float)
    sqlite3.register_adapter(np.bool_, bool)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _make_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        _register_numpy_adapters_sqlite()
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"connect_args": {"timeout": 60}}
        if not url.database or url.database == ":memory:":
            options["poolclass"] = sa.pool.StaticPool
            options["connect_args"]["check_same_thread"] = False
        engine = sa.create_engine(url, **options)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    _register_numpy_adapters()
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "application_name": "skyretriever"},
    )


def get_engine() -> Engine:
    """The engine of this process, made on first use (a new one after a fork)."""
    with _lock:
        if _state["engine"] is None or _state["pid"] != os.getpid():
            if _state["engine"] is not None:
                _dispose_locked()
            engine = _make_engine(get_url())
            _state.update(
                engine=engine,
                pid=os.getpid(),
                factory=orm.sessionmaker(bind=engine, expire_on_commit=False),
            )
        return _state["engine"]


def Session() -> orm.Session:
    """A new ORM session on the configured database; use it as a context manager.

    Examples
    --------
    >>> with Session() as session:                                   # doctest: +SKIP
    ...     session.scalars(sa.select(Source).limit(5)).all()
    """
    get_engine()
    return _state["factory"]()


class _NoSession:
    """Stands in for a session where nothing must be read or written."""

    def __getattr__(self, name: str) -> Any:
        def nothing(*_args: Any, **_kwargs: Any) -> None:
            return None

        return nothing

    def __bool__(self) -> bool:
        return False


@contextlib.contextmanager
def SmartSession(session: orm.Session | None | bool = None) -> Iterator[Any]:
    """Use the given session, or open (and close) a new one, or none at all.

    ``SmartSession(session)`` passes ``session`` through untouched (the caller
    commits and closes it); ``SmartSession(None)`` opens a session and closes it
    afterwards; ``SmartSession(False)`` gives a no-op session whose methods do
    nothing and return ``None``, for code paths that must not touch the database.

    Examples
    --------
    >>> with SmartSession() as session:                               # doctest: +SKIP
    ...     session.scalar(sa.select(sa.func.count(Source.id)))
    """
    if session is False:
        yield _NoSession()
    elif session is None or session is True:
        with Session() as new_session:
            yield new_session
    else:
        yield session


def _reason(error: Exception, url: URL) -> str:
    """The first line of what the driver said (never the SQL), without the password."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason_text = reason[0] if reason else type(error).__name__
    password = url.password
    if password:
        reason_text = reason_text.replace(str(password), "***")
    return reason_text


def _connect_error(error: Exception, url: URL) -> DatabaseError:
    if isinstance(error, sa.exc.ProgrammingError):
        hint = "Check that the database user may read and write the database's tables."
    else:
        hint = "Check database.url (or $ENV_URL) and that the server is running and reachable."
    return DatabaseError(
        f"cannot use the database {redact_url(url)}: {_reason(error, url)}. "
        + hint.replace("$ENV_URL", f"${ENV_URL}")
    )


#: What a database action that cannot reach or use the database raises.
_UNUSABLE = (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.InterfaceError)


def _sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser().absolute()


def sqlite_path() -> Path | None:
    """The file of the configured SQLite database (``None`` for PostgreSQL or in memory)."""
    return _sqlite_path(get_url())


def stop_for(error: BaseException) -> RunStopped | None:
    """The one-line stop for a database action that failed for a reason outside the data
    (server gone, rights, a full disk, a read-only file), or ``None`` for other errors.

    The message names the database (password hidden) and the driver's first line,
    never the SQL statement.
    """
    if not isinstance(error, sa.exc.SQLAlchemyError):
        return None
    url = get_url()
    path = _sqlite_path(url)
    # SQLite says "disk I/O error" when it cannot grow its journal files on a full disk
    if is_disk_full(error) or (path is not None and "disk i/o error" in str(error).lower()
                               and free_megabytes(path.parent) < 1):
        place = path.parent if path is not None else redact_url(url)
        return DiskFull(place, free_megabytes(path.parent) if path is not None else 0)
    if isinstance(error, _UNUSABLE) or isinstance(error, sa.exc.DBAPIError) and (
            error.connection_invalidated):
        return RunStopped(f"database {redact_url(url)} failed: {_reason(error, url)}")
    return None


def check_writable(tables: bool = True) -> None:
    """Make sure this process can write the database before a run tries any source.

    A SQLite file must be writable and so must its folder (SQLite writes its
    journal beside it); with ``tables`` (once the schema exists) a write that
    changes nothing is tried in a transaction that is rolled back, which finds
    a read-only database or a user without rights. The SQLite file is then
    remembered, for :func:`check_still_there`.

    Raises
    ------
    RunStopped
        With one line that says what cannot be written and where.
    """
    url = get_url()
    path = _sqlite_path(url)
    if path is not None:
        for place, what in ((path.parent, "folder"), (path, "file")):
            if place.exists() and not os.access(place, os.W_OK):
                raise RunStopped(
                    f"database is read-only: the SQLite {what} {str(place)!r} cannot be "
                    "written (read-only file system, permissions or an immutable flag)"
                )
    if not tables:
        return
    try:
        with get_engine().connect() as connection:
            transaction = connection.begin()
            try:
                # Touch no row, but need the right to write (INSERT and UPDATE) the table.
                connection.execute(sa.text(
                    "INSERT INTO sources (name) SELECT name FROM sources WHERE 1 = 0"))
                connection.execute(sa.text("UPDATE sources SET status = status WHERE 1 = 0"))
            finally:
                transaction.rollback()
    except _UNUSABLE as error:
        raise RunStopped(
            f"database {redact_url(url)} cannot be written: {_reason(error, url)}"
        ) from error
    if path is not None:
        status = path.stat()
        _state["sqlite_file"] = (path, status.st_dev, status.st_ino)


def check_still_there() -> None:
    """Raise :class:`RunStopped` when the SQLite file checked by :func:`check_writable`
    was deleted or replaced since: SQLite would go on writing to the deleted file, and
    every commit would be lost without an error."""
    known = _state["sqlite_file"]
    if known is None or _sqlite_path(get_url()) != known[0]:
        return
    path, device, inode = known
    try:
        status = path.stat()
    except FileNotFoundError:
        raise RunStopped(f"database file {str(path)!r} was deleted during the run; "
                         "batches committed since are lost (run again to redo them)") from None
    if (status.st_dev, status.st_ino) != (device, inode):
        raise RunStopped(f"database file {str(path)!r} was replaced by another file during "
                         "the run; batches committed since went to the old file") from None


@contextlib.contextmanager
def _migration_lock(connection: sa.Connection, url: URL) -> Iterator[None]:
    if url.get_backend_name() == "postgresql":
        key = zlib.crc32(b"skyretriever-schema")
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield
        return
    if not url.database or url.database == ":memory:":
        yield
        return
    with storage.file_lock(url.database):
        yield


@contextlib.contextmanager
def _migrating(url: URL) -> Iterator[sa.Connection]:
    """A connection in one transaction, under the migration lock, for Alembic to migrate with.

    On SQLite, foreign keys are off meanwhile: Alembic changes a constraint by copying
    the table and dropping the old one, and with foreign keys on, that drop would
    delete every row that references it (ON DELETE CASCADE). They are on again after.
    """
    with get_engine().connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        raw = connection.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")      # only takes effect outside a transaction
        try:
            with connection.begin(), _migration_lock(connection, url):
                yield connection
                if sqlite:
                    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if problems:
                        raise DatabaseError(f"migration left {len(problems)} row(s) pointing "
                                            f"at rows that do not exist: {problems[:3]}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def _alembic_config(connection: sa.Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revision() -> str | None:
    """The schema revision of the configured database (``None`` for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    url = get_url()
    try:
        with get_engine().connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except _UNUSABLE as error:
        if isinstance(stop_for(error), DiskFull):
            raise stop_for(error) from None
        raise _connect_error(error, url) from None


def head_revision() -> str:
    """The newest schema revision this version of the code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def upgrade(revision: str = "head") -> None:
    """Create or migrate the schema to ``revision``, and the data root's layout; safe when
    several processes race.

    The files of a data root made before ``raw/`` and ``projects/`` are moved into
    them (:func:`skyretriever.storage.migrate_layout`, idempotent) after the rows'
    file names are rewritten (migration 0005): a kill between the two is finished by
    the next call.

    Raises
    ------
    DatabaseError
        If the database cannot be reached.
    """
    from alembic import command

    url = get_url()
    if revision != "head" or current_revision() != head_revision():
        try:
            with _migrating(url) as connection:
                command.upgrade(_alembic_config(connection), revision)
        except _UNUSABLE as error:
            if isinstance(stop_for(error), DiskFull):
                raise stop_for(error) from None
            raise _connect_error(error, url) from None
    moved = storage.migrate_layout() if revision == "head" else []
    if moved:
        log.info("moved %d file(s) of %s into its raw/ and projects/ folders", len(moved),
                 storage.data_root())
