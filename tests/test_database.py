"""Database: URLs, nothing at import, migrations equal the models, keys, cascades, sessions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from skyretriever import database
from skyretriever.database import DatabaseError, Session, SmartSession
from skyretriever.models import (
    Base,
    Detection,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
    SourceRawData,
)


def test_postgresql_urls_use_psycopg2_and_passwords_are_hidden():
    assert database.normalize_url("postgresql://me:secret@db/sky").drivername == "postgresql+psycopg2"
    assert database.normalize_url("postgres://me@db/sky").drivername == "postgresql+psycopg2"
    assert "secret" not in database.redact_url("postgresql://me:secret@db/sky")
    with pytest.raises(DatabaseError, match="cannot parse") as error:
        database.normalize_url("not a url secret")
    assert "secret" not in str(error.value)
    with pytest.raises(DatabaseError, match="unsupported database 'mysql'"):
        database.normalize_url("mysql://me:pw@db/sky")


def test_an_unreachable_database_is_a_clear_error_without_the_password(data_root):
    database.configure("postgresql://postgres:hunter2@127.0.0.1:1/nothing")
    try:
        with pytest.raises(DatabaseError, match="cannot use the database") as error:
            database.upgrade()
        assert "hunter2" not in str(error.value) and "***" in str(error.value)
    finally:
        database.configure("sqlite:///:memory:")


def test_importing_creates_no_engine_connection_or_file(tmp_path):
    code = (
        "import skyretriever, skyretriever.models, skyretriever.database as d\n"
        "from skyretriever import Project\n"
        "assert d._state['engine'] is None\n"
        "import os; assert not os.path.exists('data'), os.listdir('.')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={"PATH": "", "SKYRETRIEVER_DB_URL": "sqlite:///x.db"})
    assert result.stdout.strip() == "ok", result.stderr
    assert not (tmp_path / "x.db").exists()


def test_the_default_database_is_a_sqlite_file_under_the_data_root(data_root, monkeypatch):
    monkeypatch.delenv("SKYRETRIEVER_DB_URL", raising=False)
    database.configure(None)
    try:
        assert database.get_url().database == str(data_root / "skyretriever.db")
        monkeypatch.setenv("SKYRETRIEVER_DB_URL", "sqlite:////tmp/elsewhere.db")
        assert database.configure(None).database == "/tmp/elsewhere.db"
    finally:
        database.configure("sqlite:///:memory:")


def test_migrations_give_exactly_the_models_schema(database_url):
    assert database.current_revision() == database.head_revision()
    with database.get_engine().connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    database.upgrade()                                                 # again: a no-op
    assert database.current_revision() == database.head_revision()


def test_every_column_is_documented():
    for table in Base.metadata.sorted_tables:
        mapper = next(m for m in Base.registry.mappers if m.local_table is table)
        for column in mapper.columns:
            assert mapper.attrs[column.key].doc, f"{table.name}.{column.key} has no doc"


def _source(name="s", **values) -> Source:
    return Source(**{"name": name, "project": "p", "cfg_hash": "", "ra": 1.0, "dec": 2.0, **values})


def test_sources_are_unique_per_name_project_and_config(database_url):
    with Session() as session:
        session.add_all([_source(), _source(cfg_hash="abc"), _source(name="t")])
        session.commit()
        session.add(_source())
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


def test_deleting_a_source_cascades_to_its_products(database_url):
    with Session() as session:
        source = _source()
        raw = RawPhotometry(source_name="s", observatory="demo", ra=1.0, dec=2.0)
        lc = Lightcurve(source=source, raw_data=raw, project="p", cfg_hash="", observatory="demo",
                        series_number=1, series_total=1)
        source.properties = Properties(project="p", cfg_hash="", has_data=True, num_lightcurves=1,
                                       num_points=1, num_good_points=1, num_detections=1)
        session.add_all([source, raw, lc, Detection(source=source, lightcurve=lc, project="p",
                                                    cfg_hash="", finder="peak", snr=9.0,
                                                    score=9.0, num_points=1, sign=1)])
        session.commit()
        session.add(SourceRawData(source_id=source.id, observatory="demo", raw_id=raw.id))
        session.commit()
        assert source.raw_photometry == [raw]                 # through the source's link
        session.execute(sa.delete(Source).where(Source.id == source.id))  # database-level cascade
        session.commit()
        for model in (Lightcurve, Properties, Detection, SourceRawData):
            assert session.scalar(sa.select(sa.func.count()).select_from(model)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(RawPhotometry)) == 1


def test_foreign_keys_are_enforced(database_url):
    with Session() as session:
        session.add(Lightcurve(source_id=12345, project="p", cfg_hash="", observatory="demo",
                               series_number=1, series_total=1))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


def test_numpy_values_are_stored_as_numbers(database_url):
    with Session() as session:
        session.add(_source(mag=np.float64(15.25), tic_id=np.int64(25155310), pmra=np.float32(1.5)))
        session.commit()
    with Session() as session:
        stored = session.scalars(sa.select(Source)).one()
        assert (stored.mag, stored.tic_id, stored.pmra) == (15.25, 25155310, 1.5)


def test_smart_session_passes_opens_or_does_nothing(database_url):
    with Session() as mine, SmartSession(mine) as given:
        assert given is mine
    with SmartSession(None) as opened:
        assert opened.scalar(sa.select(sa.func.count(Source.id))) == 0
    with SmartSession(False) as nothing:
        assert not nothing
        assert nothing.add(_source()) is None and nothing.commit() is None
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Source.id))) == 0
